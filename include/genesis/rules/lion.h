// Lion, EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery of Optimization
// Algorithms", Algorithm 2): the update is the sign of an interpolation of momentum and
// gradient, with decoupled weight decay.
#pragma once

#include "genesis/macros.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct LionOptions {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double weight_decay = 0.0;
  bool maximize = false;
};

template <typename T>
struct LionCoeffs {
  T lr, beta1, one_minus_beta1, beta2, one_minus_beta2;
  T decay;  // 1 - lr * wd
  T sign;   // -1 to maximize (negating g is exact), else 1
};

struct LionRule {
  static constexpr int kStates = 1;
  static constexpr bool kCountsSteps = false;
  using Options = LionOptions;
  template <typename T>
  using Coeffs = LionCoeffs<T>;

  template <typename T>
  GENESIS_HD static LionCoeffs<T> coeffs(const LionOptions& o, double, bool) {
    return {T(o.lr),
            T(o.beta1),
            T(1.0 - o.beta1),
            T(o.beta2),
            T(1.0 - o.beta2),
            T(1.0 - o.lr * o.weight_decay),
            T(o.maximize ? -1.0 : 1.0)};
  }

  // c = beta1 * m + (1 - beta1) * g;  p = p * (1 - lr * wd) - lr * sign(c)
  // m = beta2 * m + (1 - beta2) * g
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const LionCoeffs<T>& c) {
    g = c.sign * g;
    const T interp = c.beta1 * s[0] + c.one_minus_beta1 * g;
    const T direction = interp > T(0) ? T(1) : (interp < T(0) ? T(-1) : T(0));
    p = p * c.decay + (-c.lr) * direction;
    s[0] = c.beta2 * s[0] + c.one_minus_beta2 * g;
  }
};

template <>
struct RuleSpec<LionOptions> {
  static constexpr bool kCountsSteps = false;
  static const char* name(const LionOptions&) { return "Lion"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("betas", o.beta1, o.beta2);
    f("weight_decay", o.weight_decay);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const LionOptions&) { return {"exp_avg"}; }
  static void validate(const LionOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_beta(0, o.beta1);
    detail::require_beta(1, o.beta2);
    detail::require_non_negative("weight_decay value", o.weight_decay);
  }
  template <typename F>
  static void select(const LionOptions&, F&& f) {
    f(LionRule{});
  }
};

}  // namespace genesis
