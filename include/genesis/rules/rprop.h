// Rprop, resilient backpropagation (Riedmiller & Braun 1993): torch.optim.Rprop.
#pragma once

#include <stdexcept>

#include "genesis/macros.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"

namespace genesis {

struct RpropOptions {
  double lr = 1e-2;
  double etaminus = 0.5;
  double etaplus = 1.2;
  double step_size_min = 1e-6;
  double step_size_max = 50.0;
  bool maximize = false;
};

template <typename T>
struct RpropCoeffs {
  T lr, etaminus, etaplus, step_size_min, step_size_max;
  T first;  // 1 on fresh state: every step size starts at lr (torch fills it so)
  T sign;   // -1 to maximize (negating g is exact), else 1
};

// State slots: 0 = prev (the last gradient used), 1 = step_size (per element).
struct RpropRule {
  static constexpr int kStates = 2;
  static constexpr bool kCountsSteps = true;
  using Options = RpropOptions;
  template <typename T>
  using Coeffs = RpropCoeffs<T>;

  template <typename T>
  GENESIS_HD static RpropCoeffs<T> coeffs(const RpropOptions& o, double, bool fresh) {
    return {T(o.lr),
            T(o.etaminus),
            T(o.etaplus),
            T(o.step_size_min),
            T(o.step_size_max),
            T(fresh ? 1.0 : 0.0),
            T(o.maximize ? -1.0 : 1.0)};
  }

  // The sign of g * prev scales the step size: by etaplus (same sign), etaminus (sign change)
  // or 1 (a zero), then clamped to [step_size_min, step_size_max]. After a sign change the
  // gradient counts as zero: no move, and prev = 0 so the next step is neutral.
  // p -= sign(g) * step_size;  prev = g
  template <typename T>
  GENESIS_HD static void apply(T& p, T g, const StateRegs<T>& s, const RpropCoeffs<T>& c) {
    g = c.sign * g;
    const T product = g * s[0];
    const T factor = product > T(0) ? c.etaplus : (product < T(0) ? c.etaminus : T(1));
    T step = (c.first != T(0) ? c.lr : s[1]) * factor;
    // clamp(min, max) as torch does it: max first, then min; NaN stays NaN.
    step = step < c.step_size_min ? c.step_size_min : step;
    step = step > c.step_size_max ? c.step_size_max : step;
    g = product < T(0) ? T(0) : g;
    const T direction = g > T(0) ? T(1) : (g < T(0) ? T(-1) : T(0));
    p = p + T(-1) * (direction * step);
    s[0] = g;
    s[1] = step;
  }
};

template <>
struct RuleSpec<RpropOptions> {
  static constexpr bool kCountsSteps = true;
  static const char* name(const RpropOptions&) { return "Rprop"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("etas", o.etaminus, o.etaplus);
    f("step_sizes", o.step_size_min, o.step_size_max);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const RpropOptions&) { return {"prev", "step_size"}; }
  // Never negative: stored with the unsigned 8-bit map (NOTE: [non-negative states]).
  static std::vector<std::string> nonnegative_states(const RpropOptions&) { return {"step_size"}; }
  static void validate(const RpropOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    if (!(0.0 < o.etaminus && o.etaminus < 1.0 && 1.0 < o.etaplus))
      throw std::invalid_argument("Invalid eta values: " + detail::float_repr(o.etaminus) + ", " +
                                  detail::float_repr(o.etaplus));
  }
  template <typename F>
  static void select(const RpropOptions&, F&& f) {
    f(RpropRule{});
  }
};

}  // namespace genesis
