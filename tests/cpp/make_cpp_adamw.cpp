// Writes the C++ side of the cross-language checkpoint fixtures: the state of a genesis::AdamW
// (the same parameters, options and gradients as tests/cpp/data/make_python_adamw.py) after 3
// steps. Usage: make_cpp_adamw OUTPUT [EXPECTED]; with EXPECTED, exits 1 unless both files are
// identical (ctest runs it so, keeping tests/cpp/data/cpp_adamw.genesis current; the Python
// test tests/test_cpp_checkpoint.py loads that file).
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "adamw_fixture.h"

namespace {
std::vector<char> read_all(const char* path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_cpp_adamw OUTPUT [EXPECTED]\n");
    return 2;
  }
  const AdamwFixture run;
  run.opt.save(argv[1]);
  if (argc > 2 && read_all(argv[1]) != read_all(argv[2])) {
    std::fprintf(stderr, "%s differs from %s: regenerate the fixture\n", argv[1], argv[2]);
    return 1;
  }
  return 0;
}
