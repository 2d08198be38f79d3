// Adagrad (Duchi, Hazan & Singer 2011) with learning-rate decay: torch.optim.Adagrad.
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct AdagradOptions {
  double lr = 1e-2;
  double lr_decay = 0.0;
  double weight_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
  bool maximize = false;
};

template <typename T>
struct AdagradCoeffs {
  T clr;  // lr / (1 + (t - 1) * lr_decay)
  T weight_decay, eps;
  T initial;  // initial_accumulator_value
  T first;    // 1 on a fresh accumulator: it starts from `initial`, not from its memory
  T sign;     // -1 to maximize (negating g is exact), else 1
};

struct AdagradRule {
  static constexpr int kStates = 1;
  static constexpr bool kCountsSteps = true;
  using Options = AdagradOptions;
  template <typename T>
  using Coeffs = AdagradCoeffs<T>;

  template <typename T>
  GENESIS_HD static AdagradCoeffs<T> coeffs(const AdagradOptions& o, double step, bool fresh) {
    return {T(o.lr / (1.0 + (step - 1.0) * o.lr_decay)),
            T(o.weight_decay),
            T(o.eps),
            T(o.initial_accumulator_value),
            T(fresh ? 1.0 : 0.0),
            T(o.maximize ? -1.0 : 1.0)};
  }

  // sum_t = sum_{t-1} + g_t^2   (sum_0 = initial_accumulator_value)
  // p_t = p_{t-1} - clr * g_t / (sqrt(sum_t) + eps)
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const AdagradCoeffs<T>& c) {
    g = c.sign * g;
    if (c.weight_decay != T(0)) g = g + c.weight_decay * p;
    const T sum = (c.first != T(0) ? c.initial : s[0]) + g * g;
    s[0] = sum;
    p = p + (-c.clr) * (g / (std::sqrt(sum) + c.eps));
  }
};

template <>
struct RuleSpec<AdagradOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const AdagradOptions&) { return "Adagrad"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("lr_decay", o.lr_decay);
    f("weight_decay", o.weight_decay);
    f("initial_accumulator_value", o.initial_accumulator_value);
    f("eps", o.eps);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const AdagradOptions&) { return {"sum"}; }
  // Never negative: stored with the unsigned 8-bit map (NOTE: [non-negative states]).
  static std::vector<std::string> nonnegative_states(const AdagradOptions&) { return {"sum"}; }
  static void validate(const AdagradOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("lr_decay value", o.lr_decay);
    detail::require_non_negative("weight_decay value", o.weight_decay);
    detail::require_non_negative("initial_accumulator_value value", o.initial_accumulator_value);
    detail::require_non_negative("epsilon value", o.eps);
  }
  template <typename F>
  static void select(const AdagradOptions&, F&& f) {
    f(AdagradRule{});
  }
};

}  // namespace genesis
