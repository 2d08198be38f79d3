// Adadelta (Zeiler 2012): torch.optim.Adadelta.
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct AdadeltaOptions {
  double lr = 1.0;
  double rho = 0.9;
  double eps = 1e-6;
  double weight_decay = 0.0;
  bool maximize = false;
};

template <typename T>
struct AdadeltaCoeffs {
  T lr, rho, one_minus_rho, eps, weight_decay;
  T sign;  // -1 to maximize (negating g is exact), else 1
};

// State slots: 0 = square_avg (v), 1 = acc_delta (u).
struct AdadeltaRule {
  static constexpr int kStates = 2;
  static constexpr bool kCountsSteps = true;
  using Options = AdadeltaOptions;
  template <typename T>
  using Coeffs = AdadeltaCoeffs<T>;

  template <typename T>
  GENESIS_HD static AdadeltaCoeffs<T> coeffs(const AdadeltaOptions& o, double, bool) {
    return {T(o.lr), T(o.rho), T(1.0 - o.rho), T(o.eps), T(o.weight_decay), T(o.maximize ? -1.0 : 1.0)};
  }

  // v_t = rho * v_{t-1} + (1 - rho) * g^2
  // d_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g
  // u_t = rho * u_{t-1} + (1 - rho) * d_t^2;   p_t = p_{t-1} - lr * d_t
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const AdadeltaCoeffs<T>& c) {
    g = c.sign * g;
    if (c.weight_decay != T(0)) g = g + c.weight_decay * p;
    const T v = s[0] * c.rho + c.one_minus_rho * g * g;
    s[0] = v;
    const T delta = std::sqrt(s[1] + c.eps) / std::sqrt(v + c.eps) * g;
    s[1] = s[1] * c.rho + c.one_minus_rho * delta * delta;
    p = p + (-c.lr) * delta;
  }
};

template <>
struct RuleSpec<AdadeltaOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const AdadeltaOptions&) { return "Adadelta"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("rho", o.rho);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const AdadeltaOptions&) { return {"square_avg", "acc_delta"}; }
  // Never negative: stored with the unsigned 8-bit map (NOTE: [non-negative states]).
  static std::vector<std::string> nonnegative_states(const AdadeltaOptions&) { return {"square_avg", "acc_delta"}; }
  static void validate(const AdadeltaOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require(0.0 <= o.rho && o.rho <= 1.0, "rho value", o.rho);
    detail::require_non_negative("epsilon value", o.eps);
    detail::require_non_negative("weight_decay value", o.weight_decay);
  }
  template <typename F>
  static void select(const AdadeltaOptions&, F&& f) {
    f(AdadeltaRule{});
  }
};

}  // namespace genesis
