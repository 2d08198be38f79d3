// Adamax, Adam's infinity-norm variant (Kingma & Ba 2015, section 7): torch.optim.Adamax.
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/pow.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct AdamaxOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool maximize = false;
};

template <typename T>
struct AdamaxCoeffs {
  T one_minus_beta1, beta2, eps, weight_decay;
  T clr;   // lr / (1 - beta1^t)
  T sign;  // -1 to maximize (negating g is exact), else 1
};

// State slots: 0 = exp_avg (m), 1 = exp_inf (u).
struct AdamaxRule {
  static constexpr int kStates = 2;
  static constexpr bool kCountsSteps = true;
  using Options = AdamaxOptions;
  template <typename T>
  using Coeffs = AdamaxCoeffs<T>;

  template <typename T>
  GENESIS_HD static AdamaxCoeffs<T> coeffs(const AdamaxOptions& o, double step, bool) {
    return {T(1.0 - o.beta1),
            T(o.beta2),
            T(o.eps),
            T(o.weight_decay),
            T(o.lr / (1.0 - portable_pow(o.beta1, step))),
            T(o.maximize ? -1.0 : 1.0)};
  }

  // m_t = lerp(m_{t-1}, g, 1 - beta1);  u_t = max(beta2 * u_{t-1}, |g| + eps)
  // p_t = p_{t-1} - lr / (1 - beta1^t) * m_t / u_t
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const AdamaxCoeffs<T>& c) {
    g = c.sign * g;
    if (c.weight_decay != T(0)) g = g + c.weight_decay * p;
    const T m = s[0] + c.one_minus_beta1 * (g - s[0]);
    const T decayed = s[1] * c.beta2;
    const T bound = std::fabs(g) + c.eps;
    // NaN in either operand propagates, as torch.maximum does.
    const T u = decayed != decayed ? decayed : (decayed > bound ? decayed : bound);
    s[0] = m;
    s[1] = u;
    p = p + (-c.clr) * (m / u);
  }
};

template <>
struct RuleSpec<AdamaxOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const AdamaxOptions&) { return "Adamax"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("betas", o.beta1, o.beta2);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const AdamaxOptions&) { return {"exp_avg", "exp_inf"}; }
  // Never negative: stored with the unsigned 8-bit map (NOTE: [non-negative states]).
  static std::vector<std::string> nonnegative_states(const AdamaxOptions&) { return {"exp_inf"}; }
  static void validate(const AdamaxOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("epsilon value", o.eps);
    detail::require_beta(0, o.beta1);
    detail::require_beta(1, o.beta2);
    detail::require_non_negative("weight_decay value", o.weight_decay);
  }
  template <typename F>
  static void select(const AdamaxOptions&, F&& f) {
    f(AdamaxRule{});
  }
};

}  // namespace genesis
