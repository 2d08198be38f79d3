// SGD with momentum, dampening, Nesterov and L2 weight decay: torch.optim.SGD's update.
#pragma once

#include "genesis/macros.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct SgdOptions {
  double lr = 1e-3;  // torch 2.13's default
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
};

// Per-tensor scalars in the math type T, computed once per step on the host.
template <typename T>
struct SgdCoeffs {
  T lr, weight_decay, momentum, one_minus_dampening;
  T first;  // 1 on a fresh buffer: b_1 = g_1 exactly (torch clones the gradient), else 0
  T sign;   // -1 to maximize (negating g is exact), else 1
};

// kMomentum and kNesterov select the variant at compile time: without momentum there is no
// buffer to read or write, which halves the memory traffic of plain SGD.
template <bool kMomentum, bool kNesterov>
struct SgdRule {
  static constexpr int kStates = kMomentum ? 1 : 0;
  static constexpr bool kCountsSteps = false;
  using Options = SgdOptions;
  template <typename T>
  using Coeffs = SgdCoeffs<T>;

  // `fresh`: the momentum buffer was just created (SGD counts no steps).
  template <typename T>
  GENESIS_HD static SgdCoeffs<T> coeffs(const SgdOptions& o, double, bool fresh) {
    return {T(o.lr),
            T(o.weight_decay),
            T(o.momentum),
            T(1.0 - o.dampening),
            T(fresh ? 1.0 : 0.0),
            T(o.maximize ? -1.0 : 1.0)};
  }

  // g_t += wd * p;  b_t = mu * b_{t-1} + (1 - dampening) * g_t;
  // p -= lr * (g_t + mu * b_t) with Nesterov, else p -= lr * b_t.
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const SgdCoeffs<T>& c) {
    g = c.sign * g;
    if (c.weight_decay != T(0)) g = g + c.weight_decay * p;
    if constexpr (kMomentum) {
      T b = c.first != T(0) ? g : c.momentum * s[0] + c.one_minus_dampening * g;
      s[0] = b;
      g = kNesterov ? g + c.momentum * b : b;
    }
    p = p + (-c.lr) * g;
  }
};

template <>
struct RuleSpec<SgdOptions> {
  static constexpr bool kCountsSteps = false;
  static const char* name(const SgdOptions&) { return "SGD"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("momentum", o.momentum);
    f("dampening", o.dampening);
    f("weight_decay", o.weight_decay);
    f("nesterov", o.nesterov);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const SgdOptions& o) {
    if (o.momentum == 0.0) return {};
    return {"momentum_buffer"};
  }
  static void validate(const SgdOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("momentum value", o.momentum);
    detail::require_non_negative("dampening value", o.dampening);
    detail::require_non_negative("weight_decay value", o.weight_decay);
    if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0))
      throw std::invalid_argument("Nesterov momentum requires a momentum and zero dampening");
  }
  template <typename F>
  static void select(const SgdOptions& o, F&& f) {
    if (o.momentum == 0.0) return f(SgdRule<false, false>{});
    if (o.nesterov) return f(SgdRule<true, true>{});
    f(SgdRule<true, false>{});
  }
};

}  // namespace genesis
