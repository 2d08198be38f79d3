// Writes the C++ side of the cross-language checkpoint fixtures: the state of a genesis::AdamW
// (the same parameters, options and gradients as tests/cpp/data/make_python_adamw.py) after 3
// steps. Usage: make_cpp_adamw OUTPUT [EXPECTED]; with EXPECTED, exits 1 unless both files are
// identical (ctest runs it so, keeping tests/cpp/data/cpp_adamw.genesis current; the Python
// test tests/test_cpp_checkpoint.py loads that file).
#include <genesis/optim.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

namespace {
std::vector<char> read_all(const char* path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
}  // namespace

int main(int argc, char** argv) {
  using namespace genesis;
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_cpp_adamw OUTPUT [EXPECTED]\n");
    return 2;
  }
  std::vector<float> p0 = {0.0f, 0.25f, 0.5f, 0.75f}, g0 = {0.5f, -1.0f, 2.0f, 0.25f};
  std::vector<float> p1(6, 1.0f), g1(6, -0.5f);
  AdamOptions base = adamw_defaults();
  base.lr = 0.002;
  base.beta1 = 0.8;
  base.beta2 = 0.95;
  base.amsgrad = true;
  AdamOptions first = base, second = base;
  first.lr = 0.01;
  second.weight_decay = 0.0;
  AdamW opt(std::vector<AdamW::Group>{{{{p0.data(), g0.data(), 4, DType::Float32}}, first},
                                     {{{p1.data(), g1.data(), 6, DType::Float32}}, second}});
  for (int step = 0; step < 3; ++step) opt.step();
  opt.save(argv[1]);
  if (argc > 2 && read_all(argv[1]) != read_all(argv[2])) {
    std::fprintf(stderr, "%s differs from %s: regenerate the fixture\n", argv[1], argv[2]);
    return 1;
  }
  return 0;
}
