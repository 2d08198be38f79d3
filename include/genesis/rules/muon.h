// Muon (Jordan et al. 2024; torch.optim.Muon): the two element-wise stages around its
// Newton-Schulz orthogonalization. The matrix products run in the caller's array library
// (torch.matmul, numpy.matmul; docs/migrating-from-torch.md#muon); these stages are what the core fuses:
//
//   momentum stage (before):  B = lerp(B, G, 1 - momentum)
//                             U = lerp(G, B, momentum) with nesterov, else B   -> NS input
//   update stage (after):     P = P * (1 - lr * weight_decay) + (-adjusted_lr) * O
//
// Both are ordinary rules for the drivers (update_driver.h, update_kernel.cuh) with the slots
// mapped as below, listed in GENESIS_STAGE_RULES (list.h).
#pragma once

#include <cmath>

#include "genesis/macros.h"
#include "genesis/rules/lerp.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

// ------------------------------------------------------------------------- momentum stage
// Slots: param = the NS input U (a scratch array of the parameter's dtype, written only),
// grad = the gradient, state[0] = momentum_buffer (state dtype).
struct MuonMomentumOptions {
  double momentum = 0.95;
  bool nesterov = true;
};

template <typename T>
struct MuonMomentumCoeffs {
  T weight;  // 1 - momentum, rounded once from double as torch rounds its Python float
  T momentum;
};

template <bool kNesterov>
struct MuonMomentumRule {
  static constexpr int kStates = 1;
  static constexpr bool kCountsSteps = false;
  using Options = MuonMomentumOptions;
  template <typename T>
  using Coeffs = MuonMomentumCoeffs<T>;

  template <typename T>
  GENESIS_HD static MuonMomentumCoeffs<T> coeffs(const MuonMomentumOptions& o, double, bool) {
    return {T(1.0 - o.momentum), T(o.momentum)};
  }

  // torch: buf.lerp_(grad, 1 - momentum); update = grad.lerp(buf, momentum) if nesterov else buf
  template <typename T>
  GENESIS_HD static void apply(T& u, T g, const StateRegs<T>& s, const MuonMomentumCoeffs<T>& c) {
    const T b = torch_lerp(s[0], g, c.weight);
    s[0] = b;
    u = kNesterov ? torch_lerp(g, b, c.momentum) : b;
  }
};

template <>
struct RuleSpec<MuonMomentumOptions> {
  static constexpr bool kCountsSteps = false;
  static const char* name(const MuonMomentumOptions&) { return "Muon"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("momentum", o.momentum);
    f("nesterov", o.nesterov);
  }
  static std::vector<std::string> state_names(const MuonMomentumOptions&) { return {"momentum_buffer"}; }
  static void validate(const MuonMomentumOptions& o) {
    // torch.optim.Muon's message (its other optimizers say "Invalid momentum value").
    if (!(0.0 <= o.momentum))
      throw std::invalid_argument("momentum should be >= 0 but is: " + detail::float_repr(o.momentum));
  }
  template <typename F>
  static void select(const MuonMomentumOptions& o, F&& f) {
    if (o.nesterov) return f(MuonMomentumRule<true>{});
    f(MuonMomentumRule<false>{});
  }
};

// --------------------------------------------------------------------------- update stage
// Slots: param = the parameter (with its master copy, if any), grad = the orthogonalized
// update O in the parameter's dtype; no state. The caller computes both factors as torch does
// (in double from Python floats, or in float32 from a float32 tensor lr), and makes one call
// per adjusted learning rate (it depends on the matrix shape).
struct MuonUpdateOptions {
  double decay = 1.0;         // 1 - lr * weight_decay
  double adjusted_lr = 1e-3;  // lr scaled for the matrix shape (adjust_lr_fn)
};

template <typename T>
struct MuonUpdateCoeffs {
  T decay;
  T step;  // -adjusted_lr
};

struct MuonUpdateRule {
  static constexpr int kStates = 0;
  static constexpr bool kCountsSteps = false;
  using Options = MuonUpdateOptions;
  template <typename T>
  using Coeffs = MuonUpdateCoeffs<T>;

  template <typename T>
  GENESIS_HD static MuonUpdateCoeffs<T> coeffs(const MuonUpdateOptions& o, double, bool) {
    return {T(o.decay), T(-o.adjusted_lr)};
  }

  // torch: param.mul_(1 - lr * weight_decay); param.add_(update, alpha=-adjusted_lr), whose
  // CPU and CUDA kernels compute p + alpha * o as one fused multiply-add (see torch_lerp).
  template <typename T>
  GENESIS_HD static void apply(T& p, T o, const StateRegs<T>&, const MuonUpdateCoeffs<T>& c) {
    p = std::fma(c.step, o, p * c.decay);
  }
};

template <>
struct RuleSpec<MuonUpdateOptions> {
  static constexpr bool kCountsSteps = false;
  static const char* name(const MuonUpdateOptions&) { return "Muon"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("decay", o.decay);
    f("adjusted_lr", o.adjusted_lr);
  }
  static std::vector<std::string> state_names(const MuonUpdateOptions&) { return {}; }
  // Derived values: torch's checks of lr and weight_decay run on the group (genesis/optim/muon.py).
  static void validate(const MuonUpdateOptions&) {}
  template <typename F>
  static void select(const MuonUpdateOptions&, F&& f) {
    f(MuonUpdateRule{});
  }
};

}  // namespace genesis
