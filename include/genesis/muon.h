// The options of the C++ API's genesis::Muon (include/genesis/optim.h): torch.optim.Muon's
// hyperparameters with its names, defaults and checks, and its learning-rate adjustment. The
// element-wise stages of its step are the rules of include/genesis/rules/muon.h.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "genesis/dtype.h"
#include "genesis/rules/muon.h"
#include "genesis/rules/spec.h"

namespace genesis {

struct MuonOptions {
  double lr = 1e-3;
  double weight_decay = 0.1;
  double momentum = 0.95;
  bool nesterov = true;
  std::array<double, 3> ns_coefficients = {3.4445, -4.7750, 2.0315};
  double eps = 1e-7;
  int64_t ns_steps = 5;
  // torch's adjust_lr_fn: none (torch's None) or "original" scale lr by sqrt(max(1, rows/cols)),
  // "match_rms_adamw" by 0.2 * sqrt(max(rows, cols)).
  std::optional<std::string> adjust_lr_fn;
  // genesis's ns_dtype (as in Python): the dtype Newton-Schulz computes in, Float32 or Float64.
  // torch computes it in bfloat16; the C++ API has no bfloat16 matrix product (docs/cpp.md#muon).
  DType ns_dtype = DType::Float32;
};

// torch's _adjust_lr: the learning rate of a rows x cols matrix.
inline double muon_adjusted_lr(double lr, const std::optional<std::string>& adjust_lr_fn, int64_t rows, int64_t cols) {
  double ratio = 1.0;
  if (!adjust_lr_fn || *adjust_lr_fn == "original") {
    ratio = std::sqrt(std::max(1.0, double(rows) / double(cols)));
  } else if (*adjust_lr_fn == "match_rms_adamw") {
    ratio = 0.2 * std::sqrt(double(std::max(rows, cols)));
  }
  return lr * ratio;
}

// The options schema (include/genesis/rules/spec.h) for the C++ API's state_dict, in torch's
// param_group order, ns_dtype last as genesis.optim.Muon writes it. No select(): the stages of
// rules/muon.h are what the core runs.
template <>
struct RuleSpec<MuonOptions> {
  static constexpr bool kCountsSteps = false;
  static const char* name(const MuonOptions&) { return "Muon"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("weight_decay", o.weight_decay);
    f("momentum", o.momentum);
    f("nesterov", o.nesterov);
    f("ns_coefficients", o.ns_coefficients);
    f("eps", o.eps);
    f("ns_steps", o.ns_steps);
    f("adjust_lr_fn", o.adjust_lr_fn);
    f("ns_dtype", o.ns_dtype);
  }
  static std::vector<std::string> state_names(const MuonOptions&) { return {"momentum_buffer"}; }
  // torch's constructor checks, in its order and with its messages, then its step checks (torch
  // raises those mid-step; here nothing changes first), then ns_dtype's.
  static void validate(const MuonOptions& o) {
    if (!(0.0 <= o.lr)) throw std::invalid_argument("Learning rate should be >= 0 but is: " + detail::float_repr(o.lr));
    RuleSpec<MuonMomentumOptions>::validate({o.momentum, o.nesterov});
    if (!(0.0 <= o.weight_decay))
      throw std::invalid_argument("weight decay should be >= 0 but is: " + detail::float_repr(o.weight_decay));
    if (o.adjust_lr_fn && *o.adjust_lr_fn != "original" && *o.adjust_lr_fn != "match_rms_adamw")
      throw std::invalid_argument("Adjust learning rate function " + *o.adjust_lr_fn + " is not supported");
    if (o.ns_steps < 0)
      throw std::invalid_argument("ns_steps must be a non-negative integer, got " + std::to_string(o.ns_steps));
    if (o.ns_steps >= 100)
      throw std::invalid_argument("Number of steps must be less than 100 for computational efficiency");
    if (o.ns_dtype != DType::Float32 && o.ns_dtype != DType::Float64)
      throw std::invalid_argument(std::string("Muon: the C++ API runs Newton-Schulz in float32 or float64, not ") +
                                  dtype_name(o.ns_dtype) + " (ns_dtype)");
  }
};

}  // namespace genesis
