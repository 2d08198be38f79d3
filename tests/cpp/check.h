// A minimal test harness: TEST registers a function, CHECK records a failure with its location.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace check {

struct Case {
  const char* name;
  std::function<void()> fn;
};
std::vector<Case>& registry();
void fail(const char* file, int line, const std::string& what);

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

inline bool close(double a, double b, double rtol, double atol = 0.0) {
  return std::fabs(a - b) <= atol + rtol * std::fabs(b);
}

}  // namespace check

#define TEST(name)                                         \
  static void name();                                      \
  static check::Register name##_registration(#name, name); \
  static void name()

#define CHECK(cond)                                      \
  do {                                                   \
    if (!(cond)) check::fail(__FILE__, __LINE__, #cond); \
  } while (0)

// Passes when `stmt` throws an exception of type `type`.
#define CHECK_THROWS(type, stmt)                                                 \
  do {                                                                           \
    bool thrown_ = false;                                                        \
    try {                                                                        \
      stmt;                                                                      \
    } catch (const type&) {                                                      \
      thrown_ = true;                                                            \
    } catch (...) {                                                              \
    }                                                                            \
    if (!thrown_) check::fail(__FILE__, __LINE__, "expected " #type ": " #stmt); \
  } while (0)
