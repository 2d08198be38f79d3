// RAdam, Adam with the variance rectification of Liu et al. 2020: torch.optim.RAdam.
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/pow.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct RadamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;
  bool maximize = false;
};

template <typename T>
struct RadamCoeffs {
  T one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay;
  T decay;      // 1 - lr * wd (decoupled weight decay)
  T step_size;  // lr / (1 - beta1^t): a product per element, not a division (NOTE: [one division])
  T bc2_sqrt;   // sqrt(1 - beta2^t)
  T rect;       // the rectification term r_t
  T rectified;  // 1 once rho_t > 5 (then the adaptive step), else 0 (plain momentum step)
  T sign;       // -1 to maximize (negating g is exact), else 1
};

template <bool kDecoupled>
struct RadamRule {
  static constexpr int kStates = 2;
  static constexpr bool kCountsSteps = true;
  using Options = RadamOptions;
  template <typename T>
  using Coeffs = RadamCoeffs<T>;

  // The rectification switch depends on t only, so it is a coefficient: one branch per tensor.
  // rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
  // r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
  template <typename T>
  GENESIS_HD static RadamCoeffs<T> coeffs(const RadamOptions& o, double step, bool) {
    const double bc2 = 1.0 - portable_pow(o.beta2, step);
    const double rho_inf = 2.0 / (1.0 - o.beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * step * portable_pow(o.beta2, step) / bc2;
    const bool rectified = rho_t > 5.0;
    const double rect =
        rectified ? std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                  : 0.0;
    return {T(1.0 - o.beta1),
            T(o.beta2),
            T(1.0 - o.beta2),
            T(o.eps),
            T(o.weight_decay),
            T(1.0 - o.lr * o.weight_decay),
            T(o.lr / (1.0 - portable_pow(o.beta1, step))),
            T(std::sqrt(bc2)),
            T(rect),
            T(rectified ? 1.0 : 0.0),
            T(o.maximize ? -1.0 : 1.0)};
  }

  // m_t = lerp(m_{t-1}, g, 1 - beta1);  v_t = beta2 v_{t-1} + (1 - beta2) g^2
  // rectified: p -= m_t * (lr / bc1) * (sqrt(bc2) / (sqrt(v_t) + eps)) * r_t;  else p -= m_t * (lr / bc1)
  // torch divides m_t by bc1 per element; lr / bc1 is one host-side division per step.
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const RadamCoeffs<T>& c) {
    g = c.sign * g;
    if (c.weight_decay != T(0)) {
      if constexpr (kDecoupled) {
        p = p * c.decay;
      } else {
        g = g + c.weight_decay * p;
      }
    }
    const T m = s[0] + c.one_minus_beta1 * (g - s[0]);
    const T v = s[1] * c.beta2 + c.one_minus_beta2 * g * g;
    s[0] = m;
    s[1] = v;
    T step = m * c.step_size;
    if (c.rectified != T(0)) step = step * (c.bc2_sqrt / (std::sqrt(v) + c.eps)) * c.rect;
    p = p + T(-1) * step;
  }
};

template <>
struct RuleSpec<RadamOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const RadamOptions&) { return "RAdam"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("betas", o.beta1, o.beta2);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("maximize", o.maximize);
    f("decoupled_weight_decay", o.decoupled_weight_decay);
  }
  static std::vector<std::string> state_names(const RadamOptions&) { return {"exp_avg", "exp_avg_sq"}; }
  // Never negative: stored with the unsigned 8-bit map (NOTE: [non-negative states]).
  static std::vector<std::string> nonnegative_states(const RadamOptions&) { return {"exp_avg_sq"}; }
  static void validate(const RadamOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("epsilon value", o.eps);
    detail::require_beta(0, o.beta1);
    detail::require_beta(1, o.beta2);
    detail::require_non_negative("weight_decay value", o.weight_decay);
  }
  template <typename F>
  static void select(const RadamOptions& o, F&& f) {
    if (o.decoupled_weight_decay) return f(RadamRule<true>{});
    f(RadamRule<false>{});
  }
};

}  // namespace genesis
