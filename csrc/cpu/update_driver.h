// The CPU driver shared by every update rule: per-tensor scalars once on the host, then one
// parallel region whose inner loop loads a register tile, calls Rule::apply, and stores.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "flat_partition.h"
#include "genesis/cpu.h"
#include "genesis/update_element.h"

// In the variant's namespace: each instruction-set build must keep its own copies of these
// templates (the linker would otherwise fold both builds onto one, see csrc/cpu/kernels.h).
namespace genesis::cpu::GENESIS_CPU_VARIANT {

// Updates elements [begin, end) of one tensor. Everything the loop touches is a restrict
// pointer or a loop-invariant scalar, so the compiler vectorizes the whole rule.
template <typename Rule, typename P, typename S, ParamStore kStore, typename T, typename GX>
void update_range(const TensorSlots& t, const typename Rule::template Coeffs<T>& coeffs, const GX& gx, uint32_t rng_key,
                  int64_t begin, int64_t end) {
  // A local copy: the compiler then knows no store in the loop can change a coefficient.
  const typename Rule::template Coeffs<T> c = coeffs;
  P* GENESIS_RESTRICT param = static_cast<P*>(t.param);
  const P* GENESIS_RESTRICT grad = static_cast<const P*>(t.grad);
  // Arrays this variant does not have are stood in for by one scratch element each (never
  // read or written: update_element skips them at compile time).
  constexpr int K = Rule::kStates;
  constexpr bool kMaster = kStore == ParamStore::Master;
  float scratch_master;
  S scratch_state;
  float* GENESIS_RESTRICT master = kMaster ? t.master : &scratch_master;
  S* GENESIS_RESTRICT s0 = K > 0 ? static_cast<S*>(t.state[0]) : &scratch_state;
  S* GENESIS_RESTRICT s1 = K > 1 ? static_cast<S*>(t.state[1]) : &scratch_state;
  S* GENESIS_RESTRICT s2 = K > 2 ? static_cast<S*>(t.state[2]) : &scratch_state;
  // No `omp simd` here on purpose: it privatizes the StateRegs temporary per lane, and GCC then
  // refuses the loop (a "scatter store"). The restrict pointers are all it needs to vectorize.
  // The outer loop only splits a range at multiples of 2^32 elements, where the stochastic
  // rounding key changes (once per tensor in practice).
  for (int64_t lo = begin; lo < end;) {
    const int64_t hi = std::min(end, ((lo >> 32) + 1) << 32);
    const uint32_t key = block_key(rng_key, uint64_t(lo) >> 32);
    for (int64_t i = lo; i < hi; ++i)
      update_element<Rule, kStore, P, S, T>(param[i], grad[i], master[kMaster ? i : 0], s0[K > 0 ? i : 0],
                                            s1[K > 1 ? i : 0], s2[K > 2 ? i : 0], uint32_t(i), c, gx, key);
    lo = hi;
  }
}

// Calls fn(PlainGrad{}) for a step whose gradients pass through unchanged (no scaler, no
// clip), else fn(gx): every CPU driver's loops are compiled for both, and the plain one runs
// two products and a clamp fewer per element (update_element.h, PlainGrad). Same bits.
template <typename T, typename Fn>
void with_grad_transform(const GradTransform<T>& gx, Fn&& fn) {
  if (is_plain(gx)) return fn(PlainGrad{});
  fn(gx);
}

// Per-tensor scalars of one step, advancing step counters and per-tensor scalars. Tensors of a
// group almost always share their step count, so the bias corrections (two pow() calls) are
// recomputed only when it changes. Rules with per-tensor scalars (NOTE: [per-tensor scalars])
// compute each tensor's own, and advance them here: nothing after this reads them again.
template <typename Rule, typename T>
std::vector<typename Rule::template Coeffs<T>> step_coeffs(const typename Rule::Options& options, TensorSlots* tensors,
                                                           int64_t count) {
  constexpr bool kScalars = ScalarCount<Rule>::value > 0;
  std::vector<typename Rule::template Coeffs<T>> coeffs(count);
  float last_step = -1.0f;
  bool last_fresh = false;
  for (int64_t t = 0; t < count; ++t) {
    TensorSlots& ts = tensors[t];
    if constexpr (Rule::kCountsSteps) *ts.step += 1.0f;
    const double step = ts.step ? *ts.step : 0.0;
    const bool same = !kScalars && t > 0 && ts.fresh == last_fresh && (!ts.step || *ts.step == last_step);
    coeffs[t] =
        same ? coeffs[t - 1]
             : rule_coeffs<Rule, T>(options, step, ts.fresh, kScalars ? load_scalars<Rule>(ts.state) : TensorScalars{});
    if constexpr (kScalars) advance_scalars<Rule>(options, step, ts.state);
    last_step = ts.step ? *ts.step : -1.0f;
    last_fresh = ts.fresh;
  }
  return coeffs;
}

// One step of Rule over `count` tensors whose parameters are stored as P and state as S.
template <typename Rule, typename P, typename S, ParamStore kStore>
void run_update(const typename Rule::Options& options, const StepConfig& config, TensorSlots* tensors, int64_t count) {
  using T = MathType<P>;
  // The index is allocated before step_coeffs advances the step counters (and the per-tensor
  // scalars): a std::bad_alloc leaves every tensor as it was. (step_coeffs allocates before it
  // advances anything.)
  const FlatIndex index(count, [&](int64_t t) { return tensors[t].numel; });
  const auto coeffs = step_coeffs<Rule, T>(options, tensors, count);
  with_grad_transform(grad_transform<T>(config), [&](const auto& gx) {
    index.parallel_for_each_piece([&](int64_t t, int64_t begin, int64_t end) {
      const uint32_t key =
          kStore == ParamStore::Stochastic ? stream_key(config.seed, tensors[t].id, config.counter) : 0u;
      update_range<Rule, P, S, kStore, T>(tensors[t], coeffs[t], gx, key, begin, end);
    });
  });
}

// Rules with 8-bit state (StepConfig::state_dtype UInt8) take the block driver, quantized_driver.h.
template <typename Rule>
void dispatch_quantized(const char* op, const typename Rule::Options& options, const StepConfig& config,
                        TensorSlots* tensors, int64_t count);

// Runs Rule for the storage the config describes. A step whose found_inf flag is set changes
// nothing, step counters included (GradScaler skips it).
template <typename Rule>
void dispatch_update(const char* op, const typename Rule::Options& options, const StepConfig& config,
                     TensorSlots* tensors, int64_t count) {
  if (config.found_inf && *config.found_inf != 0.0f) return;
  if (config.state_dtype == DType::UInt8) return dispatch_quantized<Rule>(op, options, config, tensors, count);
  dispatch_storage(op, config, [&](auto param, auto state, auto store) {
    run_update<Rule, decltype(param), decltype(state), decltype(store)::value>(options, config, tensors, count);
  });
}

// One step of the rule whose options these are: its RuleSpec picks the compile-time variant.
template <typename Options>
void run_rule(const Options& options, const StepConfig& config, TensorSlots* tensors, int64_t count) {
  using Spec = RuleSpec<Options>;
  const std::string op = std::string(Spec::name(options)) + " step";
  Spec::select(options,
               [&](auto rule) { dispatch_update<decltype(rule)>(op.c_str(), options, config, tensors, count); });
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT

#include "quantized_driver.h"
