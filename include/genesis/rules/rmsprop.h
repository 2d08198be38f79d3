// RMSprop (Hinton, lecture 6e), centered variant (Graves 2013) and momentum: torch.optim.RMSprop.
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct RmspropOptions {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;
  bool maximize = false;
};

template <typename T>
struct RmspropCoeffs {
  T lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
  T sign;  // -1 to maximize (negating g is exact), else 1
};

// State slots: 0 = square_avg (v), then grad_avg (centered), then momentum_buffer (momentum).
template <bool kCentered, bool kMomentum>
struct RmspropRule {
  static constexpr int kGradAvg = 1;
  static constexpr int kBuffer = kCentered ? 2 : 1;
  static constexpr int kStates = 1 + int(kCentered) + int(kMomentum);
  static constexpr bool kCountsSteps = true;
  using Options = RmspropOptions;
  template <typename T>
  using Coeffs = RmspropCoeffs<T>;

  template <typename T>
  GENESIS_HD static RmspropCoeffs<T> coeffs(const RmspropOptions& o, double, bool) {
    return {T(o.lr),           T(o.alpha),    T(1.0 - o.alpha),          T(o.eps),
            T(o.weight_decay), T(o.momentum), T(o.maximize ? -1.0 : 1.0)};
  }

  // v_t = alpha * v_{t-1} + (1 - alpha) * g_t^2
  // centered: ga_t = lerp(ga_{t-1}, g_t, 1 - alpha), denom = sqrt(v_t - ga_t^2) + eps
  // else denom = sqrt(v_t) + eps
  // momentum: b_t = mu * b_{t-1} + g_t / denom, p -= lr * b_t;  else p -= lr * g_t / denom
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const RmspropCoeffs<T>& c) {
    g = c.sign * g;
    if (c.weight_decay != T(0)) g = g + c.weight_decay * p;
    T v = s[0] * c.alpha + c.one_minus_alpha * g * g;
    s[0] = v;
    T denom;
    if constexpr (kCentered) {
      T ga = s[kGradAvg] + c.one_minus_alpha * (g - s[kGradAvg]);
      s[kGradAvg] = ga;
      denom = std::sqrt(v + T(-1) * ga * ga) + c.eps;
    } else {
      denom = std::sqrt(v) + c.eps;
    }
    if constexpr (kMomentum) {
      T b = s[kBuffer] * c.momentum + g / denom;
      s[kBuffer] = b;
      p = p + (-c.lr) * b;
    } else {
      p = p + (-c.lr) * (g / denom);
    }
  }
};

template <>
struct RuleSpec<RmspropOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const RmspropOptions&) { return "RMSprop"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("alpha", o.alpha);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("momentum", o.momentum);
    f("centered", o.centered);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const RmspropOptions& o) {
    std::vector<std::string> names = {"square_avg"};
    if (o.centered) names.push_back("grad_avg");
    if (o.momentum > 0.0) names.push_back("momentum_buffer");
    return names;
  }
  // Never negative: stored with the unsigned 8-bit map (NOTE: [non-negative states]).
  static std::vector<std::string> nonnegative_states(const RmspropOptions&) { return {"square_avg"}; }
  static void validate(const RmspropOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("epsilon value", o.eps);
    detail::require_non_negative("momentum value", o.momentum);
    detail::require_non_negative("weight_decay value", o.weight_decay);
    detail::require_non_negative("alpha value", o.alpha);
  }
  template <typename F>
  static void select(const RmspropOptions& o, F&& f) {
    if (o.centered) return variant<true>(o, f);
    variant<false>(o, f);
  }
  template <bool kCentered, typename F>
  static void variant(const RmspropOptions& o, F& f) {
    if (o.momentum > 0.0) return f(RmspropRule<kCentered, true>{});
    f(RmspropRule<kCentered, false>{});
  }
};

}  // namespace genesis
