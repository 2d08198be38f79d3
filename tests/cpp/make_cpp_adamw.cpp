// Writes the C++ side of the cross-language checkpoint fixtures: the state of a genesis::AdamW
// (the same parameters, options and gradients as tests/cpp/data/make_python_adamw.py) after 3
// steps. Usage: make_cpp_adamw OUTPUT [EXPECTED] (fixture_file.h; ctest keeps
// tests/cpp/data/cpp_adamw.genesis current; the Python test tests/test_cpp_checkpoint.py loads
// that file).
#include "adamw_fixture.h"
#include "fixture_file.h"

int main(int argc, char** argv) {
  const AdamwFixture run;
  return write_fixture(run.opt.state_dict(), argc, argv);
}
