// The CPU driver shared by every update rule: per-tensor scalars once on the host, then one
// parallel region whose inner loop loads a register tile, calls Rule::apply, and stores.
#pragma once

#include <vector>

#include "flat_partition.h"
#include "genesis/dtype.h"
#include "genesis/tensor_slots.h"

namespace genesis::cpu {

// Updates elements [begin, end) of one tensor. Everything the loop touches is a restrict
// pointer or a loop-invariant scalar, so the compiler vectorizes the whole rule.
template <typename Rule, typename P, typename S, typename T>
void update_range(const TensorSlots& t, const typename Rule::template Coeffs<T>& coeffs,
                  int64_t begin, int64_t end) {
  // A local copy: the compiler then knows no store in the loop can change a coefficient.
  const typename Rule::template Coeffs<T> c = coeffs;
  constexpr int K = Rule::kStates;
  P* GENESIS_RESTRICT param = static_cast<P*>(t.param);
  const P* GENESIS_RESTRICT grad = static_cast<const P*>(t.grad);
  S* GENESIS_RESTRICT s0 = static_cast<S*>(t.state[0]);
  S* GENESIS_RESTRICT s1 = static_cast<S*>(t.state[1]);
  S* GENESIS_RESTRICT s2 = static_cast<S*>(t.state[2]);
  // No `omp simd` here on purpose: it privatizes the StateRegs temporary per lane, and GCC then
  // refuses the loop (a "scatter store"). The restrict pointers are all it needs to vectorize.
  for (int64_t i = begin; i < end; ++i) {
    T p = load<T>(param[i]);
    T v0 = K > 0 ? load<T>(s0[i]) : T(0);
    T v1 = K > 1 ? load<T>(s1[i]) : T(0);
    T v2 = K > 2 ? load<T>(s2[i]) : T(0);
    Rule::apply(p, load<T>(grad[i]), StateRegs<T>{v0, v1, v2}, c);
    store(param[i], p);
    if constexpr (K > 0) store(s0[i], v0);
    if constexpr (K > 1) store(s1[i], v1);
    if constexpr (K > 2) store(s2[i], v2);
  }
}

// One step of Rule over `count` tensors whose parameters are stored as P and state as S.
template <typename Rule, typename P, typename S>
void run_update(const typename Rule::Options& options, TensorSlots* tensors, int64_t count) {
  using T = MathType<P>;
  using Coeffs = typename Rule::template Coeffs<T>;
  // Per-tensor scalars. Tensors of a group almost always share their step count, so the
  // bias corrections (two pow() calls) are recomputed only when it changes.
  std::vector<Coeffs> coeffs(count);
  float last_step = -1.0f;
  bool last_fresh = false;
  for (int64_t t = 0; t < count; ++t) {
    TensorSlots& ts = tensors[t];
    if constexpr (Rule::kCountsSteps) *ts.step += 1.0f;
    const bool same = t > 0 && ts.fresh == last_fresh && (!ts.step || *ts.step == last_step);
    coeffs[t] = same ? coeffs[t - 1] : Rule::template coeffs<T>(options, ts);
    last_step = ts.step ? *ts.step : -1.0f;
    last_fresh = ts.fresh;
  }
  const FlatIndex index(count, [&](int64_t t) { return tensors[t].numel; });
  index.parallel_for_each_piece([&](int64_t t, int64_t begin, int64_t end) {
    update_range<Rule, P, S, T>(tensors[t], coeffs[t], begin, end);
  });
}

// Runs Rule for the parameter dtype; state is kept in the parameter's own dtype.
template <typename Rule>
void dispatch_update(const char* op, const typename Rule::Options& options, DType dtype,
                     TensorSlots* tensors, int64_t count) {
  dispatch_float_dtype(dtype, op, [&](auto tag) {
    using P = decltype(tag);
    run_update<Rule, P, P>(options, tensors, count);
  });
}

}  // namespace genesis::cpu
