// What every element-wise rule header declares besides its math: RuleSpec<Options>, the rule's
// options schema. One specialization per rule, next to its formulas, drives everything that
// used to be written per rule: the Python bindings (options by name), validation, the state
// names (Python state, C++ state_dict), the C++ API class and the CPU/CUDA instantiations.
//
//   template <> struct RuleSpec<FooOptions> {
//     static constexpr bool kCountsSteps = ...;      // keeps state["step"]
//     static const char* name(const FooOptions&);   // torch's class name, for messages
//     template <typename O, typename F> static void fields(O& o, F&& f);
//         // f(key, double&) / f(key, bool&) / f(key, double&, double&) for a pair, with torch's
//         // param_group keys in torch's order
//     static std::vector<std::string> state_names(const FooOptions&);  // per-element arrays, in slot order
//     // optional: per-tensor float32 scalars with their initial values (NOTE: [per-tensor scalars])
//     static std::vector<std::pair<std::string, double>> scalars(const FooOptions&);
//     static void validate(const FooOptions&);      // throws std::invalid_argument
//     template <typename F> static void select(const FooOptions& o, F&& f);  // f(FooRule<...>{})
//   };
#pragma once

#include <charconv>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace genesis {

template <typename Options>
struct RuleSpec;

// One state array of a parameter: its name and shape. Element-wise rules keep arrays of the
// parameter's shape (state_names); a reduction rule may declare others (Adafactor's row and
// column factors) with RuleSpec::state_arrays(options, parameter shape).
struct StateArray {
  std::string name;
  std::vector<int64_t> shape;
};

namespace detail {
// The shortest text that reads back as `value`, written the way Python's repr writes floats
// (so messages match what a Python user typed: 1.0, -0.123456789, nan).
inline std::string float_repr(double value) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
  std::string s(buf, end);
  if (s.find_first_of(".eni") == std::string::npos) s += ".0";
  return s;
}

// The option checks, with torch.optim's messages. `0 <= x` is false for NaN, so every check
// below also rejects NaN.
inline void require(bool ok, const char* what, double value) {
  if (!ok) throw std::invalid_argument(std::string("Invalid ") + what + ": " + float_repr(value));
}
inline void require_non_negative(const char* what, double value) { require(0.0 <= value, what, value); }
inline void require_beta(int index, double value) {
  const std::string what = "beta parameter at index " + std::to_string(index);
  require(0.0 <= value && value < 1.0, what.c_str(), value);
}
}  // namespace detail

// The per-tensor scalars of a rule with these options (names and initial values, in slot
// order after its arrays); none for a rule whose RuleSpec declares no scalars().
template <typename O, typename = void>
struct HasScalars : std::false_type {};
template <typename O>
struct HasScalars<O, std::void_t<decltype(RuleSpec<O>::scalars(std::declval<const O&>()))>> : std::true_type {};
template <typename O>
std::vector<std::pair<std::string, double>> scalar_state(const O& o) {
  if constexpr (HasScalars<O>::value) {
    return RuleSpec<O>::scalars(o);
  } else {
    (void)o;
    return {};
  }
}

// The state arrays of a parameter of this shape, in slot order.
template <typename O, typename = void>
struct HasStateArrays : std::false_type {};
template <typename O>
struct HasStateArrays<O, std::void_t<decltype(RuleSpec<O>::state_arrays(std::declval<const O&>(),
                                                                        std::declval<const std::vector<int64_t>&>()))>>
    : std::true_type {};
template <typename O>
std::vector<StateArray> state_arrays(const O& o, const std::vector<int64_t>& shape) {
  if constexpr (HasStateArrays<O>::value) {
    return RuleSpec<O>::state_arrays(o, shape);
  } else {
    std::vector<StateArray> out;
    for (const std::string& name : RuleSpec<O>::state_names(o)) out.push_back({name, shape});
    return out;
  }
}

}  // namespace genesis
