// RMSprop (Hinton, lecture 6e), centered variant (Graves 2013) and momentum: torch.optim.RMSprop.
#pragma once

#include <cmath>

#include "genesis/macros.h"
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

template <typename T> struct RmspropCoeffs {
  T lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
  T sign;  // -1 to maximize (negating g is exact), else 1
};

// State slots: 0 = square_avg (v), then grad_avg (centered), then momentum_buffer (momentum).
template <bool kCentered, bool kMomentum> struct RmspropRule {
  static constexpr int kGradAvg = 1;
  static constexpr int kBuffer = kCentered ? 2 : 1;
  static constexpr int kStates = 1 + int(kCentered) + int(kMomentum);
  static constexpr bool kCountsSteps = true;
  using Options = RmspropOptions;
  template <typename T> using Coeffs = RmspropCoeffs<T>;

  template <typename T> GENESIS_HD static RmspropCoeffs<T> coeffs(const RmspropOptions& o, double, bool) {
    return {T(o.lr), T(o.alpha), T(1.0 - o.alpha), T(o.eps), T(o.weight_decay), T(o.momentum),
            T(o.maximize ? -1.0 : 1.0)};
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

}  // namespace genesis
