// Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019), with AMSGrad: torch.optim.Adam/AdamW.
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/pow.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;
  bool maximize = false;
  bool decoupled_weight_decay = false;  // AdamW's rule (torch: Adam(decoupled_weight_decay=True))
};

// Per-tensor scalars in the math type. The bias corrections depend on the tensor's step t and
// are computed once per step in double on the host (torch does the same in Python floats).
template <typename T>
struct AdamCoeffs {
  T one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay;
  T decay;         // 1 - lr * wd (AdamW's decoupled decay factor)
  T step_size;     // lr / (1 - beta1^t)
  T inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^t): a product, not a division, per element (NOTE: [one division])
  T sign;          // -1 to maximize (negating g is exact), else 1
};

// kDecoupled: AdamW (decay the weights directly) versus Adam (L2 term added to the gradient).
// kAmsgrad: keep v_max = max(v_max, v_t) as a third state and normalise by it.
template <bool kDecoupled, bool kAmsgrad>
struct AdamRule {
  static constexpr int kStates = kAmsgrad ? 3 : 2;
  static constexpr bool kCountsSteps = true;
  using Options = AdamOptions;
  template <typename T>
  using Coeffs = AdamCoeffs<T>;

  // `step` is t after this step's increment; `fresh` is unused (the moments start at zero).
  template <typename T>
  GENESIS_HD static AdamCoeffs<T> coeffs(const AdamOptions& o, double step, bool) {
    return {T(1.0 - o.beta1),
            T(o.beta2),
            T(1.0 - o.beta2),
            T(o.eps),
            T(o.weight_decay),
            T(1.0 - o.lr * o.weight_decay),
            T(o.lr / (1.0 - portable_pow(o.beta1, step))),
            T(1.0 / std::sqrt(1.0 - portable_pow(o.beta2, step))),
            T(o.maximize ? -1.0 : 1.0)};
  }

  // m_t = lerp(m_{t-1}, g_t, 1 - beta1)                 (torch's lerp form, same rounding)
  // v_t = beta2 * v_{t-1} + (1 - beta2) * g_t^2
  // p_t = p_{t-1} - (lr / bc1) * m_t / (sqrt(v_t) * (1 / sqrt(bc2)) + eps)
  //
  // NOTE: [one division]
  // torch divides sqrt(v_t) by sqrt(bc2) per element; this multiplies by the reciprocal, rounded
  // once per step on the host (the reciprocal's rounding and the product's put the denominator
  // within about two ulps of torch's, inside the torch parity tolerance). Where the step is bound
  // by arithmetic rather than memory (8-bit state, data in cache) the CPU's divider is the
  // bottleneck: on an Intel Xeon the AdamW update in cache took 0.52 ns per element with a square
  // root and two divisions, 0.37 with one (docs/performance.md, "Divisions").
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const AdamCoeffs<T>& c) {
    g = c.sign * g;
    if constexpr (kDecoupled) {
      p = p * c.decay;
    } else {
      if (c.weight_decay != T(0)) g = g + c.weight_decay * p;
    }
    T m = s[0] + c.one_minus_beta1 * (g - s[0]);
    T v = s[1] * c.beta2 + c.one_minus_beta2 * g * g;
    s[0] = m;
    s[1] = v;
    if constexpr (kAmsgrad) {
      v = s[2] > v ? s[2] : v;
      s[2] = v;
    }
    T denom = std::sqrt(v) * c.inv_bc2_sqrt + c.eps;
    p = p + (-c.step_size) * (m / denom);
  }
};

template <>
struct RuleSpec<AdamOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const AdamOptions& o) { return o.decoupled_weight_decay ? "AdamW" : "Adam"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("betas", o.beta1, o.beta2);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("amsgrad", o.amsgrad);
    f("maximize", o.maximize);
    f("decoupled_weight_decay", o.decoupled_weight_decay);
  }
  static std::vector<std::string> state_names(const AdamOptions& o) {
    if (o.amsgrad) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    return {"exp_avg", "exp_avg_sq"};
  }
  // Never negative: stored with the unsigned 8-bit map (NOTE: [non-negative states]).
  static std::vector<std::string> nonnegative_states(const AdamOptions&) { return {"exp_avg_sq", "max_exp_avg_sq"}; }
  static void validate(const AdamOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("epsilon value", o.eps);
    detail::require_beta(0, o.beta1);
    detail::require_beta(1, o.beta2);
    detail::require_non_negative("weight_decay value", o.weight_decay);
  }
  template <typename F>
  static void select(const AdamOptions& o, F&& f) {
    if (o.decoupled_weight_decay) return variant<true>(o, f);
    variant<false>(o, f);
  }
  template <bool kDecoupled, typename F>
  static void variant(const AdamOptions& o, F& f) {
    if (o.amsgrad) return f(AdamRule<kDecoupled, true>{});
    f(AdamRule<kDecoupled, false>{});
  }
};

}  // namespace genesis
