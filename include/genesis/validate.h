// Hyperparameter checks shared by the C++ API and the Python optimizers (messages follow
// torch.optim's). Each throws std::invalid_argument naming the value.
#pragma once

#include <charconv>
#include <stdexcept>
#include <string>

#include "genesis/rules/adam.h"
#include "genesis/rules/rmsprop.h"
#include "genesis/rules/sgd.h"

namespace genesis {

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

inline void require(bool ok, const char* what, double value) {
  if (!ok) throw std::invalid_argument(std::string("Invalid ") + what + ": " + float_repr(value));
}
// `0 <= x` is false for NaN, so every check below also rejects NaN.
inline void require_non_negative(const char* what, double value) { require(0.0 <= value, what, value); }
inline void require_beta(int index, double value) {
  const std::string what = "beta parameter at index " + std::to_string(index);
  require(0.0 <= value && value < 1.0, what.c_str(), value);
}
}  // namespace detail

inline void validate(const SgdOptions& o) {
  detail::require_non_negative("learning rate", o.lr);
  detail::require_non_negative("momentum value", o.momentum);
  detail::require_non_negative("dampening value", o.dampening);
  detail::require_non_negative("weight_decay value", o.weight_decay);
  if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0))
    throw std::invalid_argument("Nesterov momentum requires a momentum and zero dampening");
}

inline void validate(const AdamOptions& o) {
  detail::require_non_negative("learning rate", o.lr);
  detail::require_non_negative("epsilon value", o.eps);
  detail::require_beta(0, o.beta1);
  detail::require_beta(1, o.beta2);
  detail::require_non_negative("weight_decay value", o.weight_decay);
}

inline void validate(const RmspropOptions& o) {
  detail::require_non_negative("learning rate", o.lr);
  detail::require_non_negative("epsilon value", o.eps);
  detail::require_non_negative("momentum value", o.momentum);
  detail::require_non_negative("weight_decay value", o.weight_decay);
  detail::require_non_negative("alpha value", o.alpha);
}

}  // namespace genesis
