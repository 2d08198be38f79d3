// NAdam, Adam with Nesterov momentum (Dozat 2016) and momentum decay: torch.optim.NAdam.
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/pow.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct NadamOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum_decay = 4e-3;
  bool decoupled_weight_decay = false;
  bool maximize = false;
};

template <typename T>
struct NadamCoeffs {
  T one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay;
  T decay;      // 1 - lr * wd (decoupled weight decay)
  T inv_bc2;    // 1 / (1 - beta2^t): a product per element, not a division (NOTE: [one division])
  T grad_step;  // lr * (1 - mu_t) / (1 - prod_{i<=t} mu_i)
  T avg_step;   // lr * mu_{t+1} / (1 - prod_{i<=t+1} mu_i)
  T sign;       // -1 to maximize (negating g is exact), else 1
};

// State slots: 0 = exp_avg (m), 1 = exp_avg_sq (v); one per-tensor scalar, mu_product (the
// running product of the momentum schedule mu_t, float32 as torch keeps it).
template <bool kDecoupled>
struct NadamRule {
  static constexpr int kStates = 2;
  static constexpr int kScalars = 1;
  static constexpr bool kCountsSteps = true;
  using Options = NadamOptions;
  template <typename T>
  using Coeffs = NadamCoeffs<T>;

  // mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))
  GENESIS_HD static double mu(const NadamOptions& o, double t) {
    return o.beta1 * (1.0 - 0.5 * portable_pow(0.96, t * o.momentum_decay));
  }
  // mu_product after step t, rounded to float32 as torch's 0-dim tensor is.
  GENESIS_HD static float product(const NadamOptions& o, double t, const TensorScalars& s) {
    return s.v[0] * static_cast<float>(mu(o, t));
  }
  GENESIS_HD static TensorScalars advance(const NadamOptions& o, double step, const TensorScalars& s) {
    return {{product(o, step, s), 0.0f}};
  }

  // `scalars` holds mu_product before this step.
  template <typename T>
  GENESIS_HD static NadamCoeffs<T> coeffs(const NadamOptions& o, double step, bool, const TensorScalars& scalars) {
    const double mu_t = mu(o, step), mu_next = mu(o, step + 1.0);
    const double prod = product(o, step, scalars);
    return {T(1.0 - o.beta1),
            T(o.beta2),
            T(1.0 - o.beta2),
            T(o.eps),
            T(o.weight_decay),
            T(1.0 - o.lr * o.weight_decay),
            T(1.0 / (1.0 - portable_pow(o.beta2, step))),
            T(o.lr * (1.0 - mu_t) / (1.0 - prod)),
            T(o.lr * mu_next / (1.0 - prod * mu_next)),
            T(o.maximize ? -1.0 : 1.0)};
  }

  // m_t = lerp(m_{t-1}, g, 1 - beta1);  v_t = beta2 v_{t-1} + (1 - beta2) g^2
  // denom = sqrt(v_t * (1 / bc2)) + eps;  p -= (grad_step * g + avg_step * m_t) / denom
  // torch divides v_t by bc2 and subtracts the two terms one after the other, each divided by
  // denom: three divisions per element where this makes one (NOTE: [one division] in adam.h).
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const NadamCoeffs<T>& c) {
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
    const T denom = std::sqrt(v * c.inv_bc2) + c.eps;
    p = p - (c.grad_step * g + c.avg_step * m) / denom;
  }
};

template <>
struct RuleSpec<NadamOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const NadamOptions&) { return "NAdam"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("betas", o.beta1, o.beta2);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("momentum_decay", o.momentum_decay);
    f("decoupled_weight_decay", o.decoupled_weight_decay);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const NadamOptions&) { return {"exp_avg", "exp_avg_sq"}; }
  // Per-tensor scalars with their initial values (NOTE: [per-tensor scalars]).
  static std::vector<std::pair<std::string, double>> scalars(const NadamOptions&) { return {{"mu_product", 1.0}}; }
  // Never negative: stored with the unsigned 8-bit map (NOTE: [non-negative states]).
  static std::vector<std::string> nonnegative_states(const NadamOptions&) { return {"exp_avg_sq"}; }
  static void validate(const NadamOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("epsilon value", o.eps);
    detail::require_beta(0, o.beta1);
    detail::require_beta(1, o.beta2);
    detail::require_non_negative("weight_decay value", o.weight_decay);
    detail::require_non_negative("momentum_decay value", o.momentum_decay);
  }
  template <typename F>
  static void select(const NadamOptions& o, F&& f) {
    if (o.decoupled_weight_decay) return f(NadamRule<true>{});
    f(NadamRule<false>{});
  }
};

}  // namespace genesis
