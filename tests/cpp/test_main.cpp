// Runs every registered test and prints a summary line ctest and CI can read.
#include <exception>

#include "check.h"

namespace check {

std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

namespace {
int failures_in_case = 0;
}

void fail(const char* file, int line, const std::string& what) {
  ++failures_in_case;
  std::printf("  FAILED %s:%d: %s\n", file, line, what.c_str());
}

}  // namespace check

int main() {
  int passed = 0, failed = 0;
  for (const check::Case& c : check::registry()) {
    check::failures_in_case = 0;
    try {
      c.fn();
    } catch (const std::exception& e) {
      check::fail(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
    }
    const bool ok = check::failures_in_case == 0;
    std::printf("%s %s\n", ok ? "ok    " : "FAILED", c.name);
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
