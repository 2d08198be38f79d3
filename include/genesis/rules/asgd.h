// ASGD, averaged SGD (Polyak & Juditsky 1992) with torch's step-size schedule: torch.optim.ASGD.
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/pow.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct AsgdOptions {
  double lr = 1e-2;
  double lambd = 1e-4;
  double alpha = 0.75;
  double t0 = 1e6;
  double weight_decay = 0.0;
  bool maximize = false;
};

template <typename T>
struct AsgdCoeffs {
  T eta;    // this step's step size (the eta scalar before the step)
  T decay;  // 1 - lambd * eta
  T mu;     // averaging weight (the mu scalar before the step)
  T copy;   // 1 while mu == 1: the average is the parameter itself
  T weight_decay;
  T sign;  // -1 to maximize (negating g is exact), else 1
};

// State slot 0 = ax (the averaged parameter); per-tensor scalars eta and mu (float32 as torch
// keeps them), advanced after each step from t: eta = lr / (1 + lambd lr t)^alpha,
// mu = 1 / max(1, t - t0).
struct AsgdRule {
  static constexpr int kStates = 1;
  static constexpr int kScalars = 2;
  static constexpr bool kCountsSteps = true;
  using Options = AsgdOptions;
  template <typename T>
  using Coeffs = AsgdCoeffs<T>;

  GENESIS_HD static TensorScalars advance(const AsgdOptions& o, double step, const TensorScalars&) {
    const double eta = o.lr / portable_pow(1.0 + o.lambd * o.lr * step, o.alpha);
    const double mu = 1.0 / (step - o.t0 > 1.0 ? step - o.t0 : 1.0);
    return {{static_cast<float>(eta), static_cast<float>(mu)}};
  }

  template <typename T>
  GENESIS_HD static AsgdCoeffs<T> coeffs(const AsgdOptions& o, double, bool, const TensorScalars& s) {
    const double eta = s.v[0], mu = s.v[1];
    return {
        T(eta), T(1.0 - o.lambd * eta), T(mu), T(mu == 1.0 ? 1.0 : 0.0), T(o.weight_decay), T(o.maximize ? -1.0 : 1.0)};
  }

  // p = p * (1 - lambd eta) - eta g;  ax = p while mu == 1, else ax += mu (p - ax)
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const AsgdCoeffs<T>& c) {
    g = c.sign * g;
    if (c.weight_decay != T(0)) g = g + c.weight_decay * p;
    p = p * c.decay;
    p = p + (-c.eta) * g;
    s[0] = c.copy != T(0) ? p : s[0] + (p - s[0]) * c.mu;
  }
};

template <>
struct RuleSpec<AsgdOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const AsgdOptions&) { return "ASGD"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("lambd", o.lambd);
    f("alpha", o.alpha);
    f("t0", o.t0);
    f("weight_decay", o.weight_decay);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const AsgdOptions&) { return {"ax"}; }
  static std::vector<std::pair<std::string, double>> scalars(const AsgdOptions& o) {
    return {{"eta", o.lr}, {"mu", 1.0}};
  }
  static void validate(const AsgdOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("weight_decay value", o.weight_decay);
  }
  template <typename F>
  static void select(const AsgdOptions&, F&& f) {
    f(AsgdRule{});
  }
};

}  // namespace genesis
