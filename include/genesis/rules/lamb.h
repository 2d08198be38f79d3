// LAMB, layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep
// Learning: Training BERT in 76 minutes", Algorithm 2), with apex's FusedLAMB semantics
// (docs/semantics.md#lamb says where apex and the paper differ). A reduction rule: see NOTE:
// [reduction rules] in include/genesis/reduce.h.
#pragma once

#include <cmath>

#include "genesis/reduce.h"
#include "genesis/rules/pow.h"
#include "genesis/rules/spec.h"

namespace genesis {

struct LambOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-6;
  double weight_decay = 0.01;
  bool bias_correction = true;
  bool adam_w_mode = true;     // decoupled weight decay (added to the update), else L2 (added to g)
  bool grad_averaging = true;  // m = b1 m + (1 - b1) g; without it m = b1 m + g
  bool use_nvlamb = false;     // apex: the trust ratio also for groups with weight_decay == 0
  bool maximize = false;
};

template <typename T>
struct LambCoeffs {
  T beta1, beta3, beta2, one_minus_beta2, eps, weight_decay, sign;
  T inv_bc1, inv_bc2;  // 1 / (1 - beta^t): products, not divisions, in the lane loops (below)
  T ratio;             // pass 1: lr * ||p|| / ||u|| (lr when a norm is 0 or the trust ratio is off)
};

// Two passes, the fewest a per-tensor trust ratio allows (the step needs ||u|| over the whole
// tensor before any parameter is written):
//   pass 0 (chunks of kSumChunk): m, v updated and stored; u from the stored moments;
//          sums of p^2 and u^2 per chunk, combined in chunk order by finish(0).
//   pass 1 (chunks): p -= ratio * u, with u as pass 0 kept it (NOTE: [kept values] in
//          include/genesis/reduce.h: the CPU driver, for all but its largest groups of
//          tensors; it spares a division and a square root per element), else recomputed
//          from the stored m, v (reading them costs what writing and re-reading a kept u
//          would, without its memory).
// Scratch per tensor: [0] sum p^2, [1] sum u^2, then two partials per chunk.
// kAdamW (adam_w_mode) is a template argument: a run-time flag in the lane loop keeps GCC from
// vectorizing it (measured: pass 0 ran scalar).
template <bool kAdamW>
struct LambRule {
  static constexpr int kStates = 2;
  static constexpr int kPasses = 2;
  static constexpr int kKinds = 1;  // every task is a chunk
  static constexpr bool kCountsSteps = true;
  static constexpr bool kKeepsValue = true;  // u, from pass 0 to pass 1
  using Options = LambOptions;
  template <typename T>
  using Coeffs = LambCoeffs<T>;

  GENESIS_HD static int64_t chunks(const TensorShape& s) { return (s.numel + kSumChunk - 1) / kSumChunk; }
  GENESIS_HD static int64_t scratch_size(const TensorShape& s) { return 2 + 2 * chunks(s); }
  GENESIS_HD static int64_t tasks(int, const TensorShape& s) { return chunks(s); }
  GENESIS_HD static TaskInfo task(int pass, const TensorShape& s, int64_t task) {
    const int64_t rest = s.numel - task * kSumChunk;
    TaskInfo info = sum_task(rest < kSumChunk ? rest : kSumChunk);
    if (pass == 1) info.mode = TaskMode::None;
    return info;
  }

  template <typename Ref>
  GENESIS_HD static Coeffs<typename Ref::T> coeffs(int pass, const LambOptions& o, const Ref& r, int64_t) {
    using T = typename Ref::T;
    const double t = r.t;
    const double* scratch = r.scratch;
    const bool bc = o.bias_correction;
    Coeffs<T> c{T(o.beta1),
                T(o.grad_averaging ? 1.0 - o.beta1 : 1.0),
                T(o.beta2),
                T(1.0 - o.beta2),
                T(o.eps),
                T(o.weight_decay),
                T(o.maximize ? -1.0 : 1.0),
                T(bc ? 1.0 / (1.0 - portable_pow(o.beta1, t)) : 1.0),
                T(bc ? 1.0 / (1.0 - portable_pow(o.beta2, t)) : 1.0),
                T(0)};
    if (pass == 1) {
      const double p_norm = std::sqrt(scratch[0]), u_norm = std::sqrt(scratch[1]);
      const bool trust = o.use_nvlamb || o.weight_decay != 0.0;
      c.ratio = T(trust && p_norm != 0.0 && u_norm != 0.0 ? o.lr * (p_norm / u_norm) : o.lr);
    }
    return c;
  }

  // The update direction from the stored moments: m_hat / (sqrt(v_hat) + eps) (+ wd * p).
  // apex divides m and v by the bias corrections; multiplying by their reciprocals (computed
  // once per task in double) differs by an ulp or so and leaves one division and one square
  // root per element and pass instead of three divisions and a square root, which the divider
  // runs one after another (one thread, 50 x 1M: 72 -> 67 ms per step; two threads, bound by
  // memory as much as by arithmetic, no measurable change: docs/performance.md).
  template <typename T>
  GENESIS_HD static T direction(T p, T m, T v, const Coeffs<T>& c) {
    T u = (m * c.inv_bc1) / (std::sqrt(v * c.inv_bc2) + c.eps);
    if constexpr (kAdamW) u = u + c.weight_decay * p;
    return u;
  }

  template <typename Ref, typename T, typename Acc>
  GENESIS_HD static void visit(int pass, const LambOptions&, const Ref& r, const Coeffs<T>& c, int64_t task, LaneAt at,
                               Acc acc) {
    const int64_t i = task * kSumChunk + at.k;
    const T p = r.p(i);
    if (pass == 0) {
      T g = c.sign * r.g(i);
      if constexpr (!kAdamW) g = g + c.weight_decay * p;
      const T m = r.set_s(0, i, c.beta1 * r.s(0, i) + c.beta3 * g);
      const T v = r.set_s(1, i, c.beta2 * r.s(1, i) + c.one_minus_beta2 * g * g);
      const T u = direction(p, m, v, c);
      if (at.kept) r.kept[i] = u;
      acc[0] += double(p) * double(p);
      acc[1] += double(u) * double(u);
    } else {
      const T u = at.kept ? r.kept[i] : direction(p, r.s(0, i), r.s(1, i), c);
      r.set_p(i, p - c.ratio * u);
    }
  }

  template <typename Ref>
  GENESIS_HD static void task_done(int, const Ref& r, int64_t task, int, const double* acc) {
    r.scratch[2 + 2 * task] = acc[0];
    r.scratch[3 + 2 * task] = acc[1];
  }
  template <typename Ref>
  GENESIS_HD static void begin(const LambOptions&, const Ref&) {}
  GENESIS_HD static constexpr bool finishes(int pass) { return pass == 0; }
  template <typename Ref>
  GENESIS_HD static void finish(int, const LambOptions&, const Ref& r) {
    r.scratch[0] = sum_in_order(r.scratch + 2, chunks(r.shape), 2);
    r.scratch[1] = sum_in_order(r.scratch + 3, chunks(r.shape), 2);
  }
};

template <>
struct RuleSpec<LambOptions> {
  static constexpr bool kCountsSteps = true;
  static constexpr bool kReduction = true;
  static const char* name(const LambOptions&) { return "LAMB"; }
  template <typename O, typename F>
  static void fields(O& o, F&& f) {
    f("lr", o.lr);
    f("bias_correction", o.bias_correction);
    f("betas", o.beta1, o.beta2);
    f("eps", o.eps);
    f("weight_decay", o.weight_decay);
    f("adam_w_mode", o.adam_w_mode);
    f("grad_averaging", o.grad_averaging);
    f("use_nvlamb", o.use_nvlamb);
    f("maximize", o.maximize);
  }
  static std::vector<std::string> state_names(const LambOptions&) { return {"exp_avg", "exp_avg_sq"}; }
  static void validate(const LambOptions& o) {
    detail::require_non_negative("learning rate", o.lr);
    detail::require_non_negative("epsilon value", o.eps);
    detail::require_beta(0, o.beta1);
    detail::require_beta(1, o.beta2);
    detail::require_non_negative("weight_decay value", o.weight_decay);
  }
  template <typename F>
  static void select(const LambOptions& o, F&& f) {
    if (o.adam_w_mode) return f(LambRule<true>{});
    f(LambRule<false>{});
  }
};

}  // namespace genesis
