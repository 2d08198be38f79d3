// The main of the programs that write the C++ side of a cross-language fixture: usage
// PROGRAM OUTPUT [EXPECTED]; with EXPECTED, exits 1 unless both files are identical (ctest runs
// them so, keeping the committed fixture in tests/cpp/data current).
#pragma once

#include <genesis/checkpoint.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

inline int write_fixture(const genesis::checkpoint::Document& doc, int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUTPUT [EXPECTED]\n", argv[0]);
    return 2;
  }
  genesis::checkpoint::save_file(doc, argv[1]);
  auto read_all = [](const char* path) {
    std::ifstream f(path, std::ios::binary);
    return std::vector<char>{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  };
  if (argc > 2 && read_all(argv[1]) != read_all(argv[2])) {
    std::fprintf(stderr, "%s differs from %s: regenerate the fixture\n", argv[1], argv[2]);
    return 1;
  }
  return 0;
}
