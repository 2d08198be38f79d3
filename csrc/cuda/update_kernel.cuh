// The CUDA update kernel shared by every rule: each block loads a register tile of one chunk,
// calls the same Rule::apply as the CPU loop, and stores. See NOTE: [tensor tables].
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "genesis/cuda.h"
#include "genesis/update_element.h"
#include "tensor_table.cuh"

namespace genesis::cuda {

// Elements per thread per iteration: one 16-byte load of float32 (8 bytes of 16-bit types,
// two 16-byte loads of float64) from every array.
constexpr int kVec = 4;
template <typename S> struct alignas(sizeof(S) * kVec) Pack { S v[kVec]; };

// The tensor view the launcher packs into tables.
struct TableTensor {
  const TensorSlots* slots;
  int64_t numel;
  void fill(TensorTable& table, int i) const {
    table.ptr[0][i] = slots->param;
    table.ptr[1][i] = const_cast<void*>(slots->grad);
    table.ptr[2][i] = slots->master;
    for (int k = 0; k < kMaxStates; ++k) table.ptr[3 + k][i] = slots->state[k];
    table.numel[i] = slots->numel;
    table.step[i] = slots->step;
    table.id[i] = slots->id;
    table.fresh[i] = slots->fresh;
  }
};

template <typename Rule, typename P, typename S, ParamStore kStore>
__global__ void __launch_bounds__(kThreads) update_kernel(TensorTable table, typename Rule::Options options,
                                                         StepConfig config) {
  using T = MathType<P>;
  using Coeffs = typename Rule::template Coeffs<T>;
  if (config.found_inf && *config.found_inf != 0.0f) return;
  const int t = table.block_tensor[blockIdx.x];
  const int64_t begin = int64_t(table.block_chunk[blockIdx.x]) * kChunk;
  const int64_t end = min(begin + kChunk, table.numel[t]);
  // The bias corrections need pow() in double: one thread computes them for the block.
  __shared__ Coeffs shared;
  if (threadIdx.x == 0) {
    const double step = table.step[t] ? double(*table.step[t]) + 1.0 : 0.0;
    TensorScalars scalars{};
    if constexpr (ScalarCount<Rule>::value > 0) {
      void* state[kMaxStates];
      for (int k = 0; k < kMaxStates; ++k) state[k] = table.ptr[3 + k][t];
      scalars = load_scalars<Rule>(state);
    }
    shared = rule_coeffs<Rule, T>(options, step, table.fresh[t] != 0, scalars);
  }
  __syncthreads();
  const Coeffs c = shared;
  const T grad_scale = config.grad_scale ? T(*config.grad_scale) : T(1);
  // A chunk never straddles a multiple of 2^32 elements (2^32 is a multiple of kChunk), so one
  // key serves the whole block.
  const uint32_t key = kStore == ParamStore::Stochastic
                           ? block_key(stream_key(config.seed, table.id[t], config.counter), uint64_t(begin) >> 32)
                           : 0u;
  P* param = static_cast<P*>(table.ptr[0][t]);
  const P* grad = static_cast<const P*>(table.ptr[1][t]);
  float* master = static_cast<float*>(table.ptr[2][t]);
  S* s0 = static_cast<S*>(table.ptr[3][t]);
  S* s1 = static_cast<S*>(table.ptr[4][t]);
  S* s2 = static_cast<S*>(table.ptr[5][t]);
  constexpr int K = Rule::kStates;
  constexpr bool kMaster = kStore == ParamStore::Master;
  auto aligned = [](const void* p, size_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; };
  const bool vector = aligned(param, sizeof(Pack<P>)) && aligned(grad, sizeof(Pack<P>)) &&
                      aligned(master, sizeof(Pack<float>)) && aligned(s0, sizeof(Pack<S>)) &&
                      aligned(s1, sizeof(Pack<S>)) && aligned(s2, sizeof(Pack<S>));
  int64_t i = begin + int64_t(threadIdx.x) * kVec;
  const int64_t stride = int64_t(blockDim.x) * kVec;
  if (vector) {
    // Whole packs through registers with 16-byte loads and stores; the tail goes element-wise.
    for (; i + kVec <= end; i += stride) {
      Pack<P> p = *reinterpret_cast<const Pack<P>*>(param + i);
      const Pack<P> g = *reinterpret_cast<const Pack<P>*>(grad + i);
      Pack<float> m;
      Pack<S> a, b, d;
      if constexpr (kMaster) m = *reinterpret_cast<const Pack<float>*>(master + i);
      if constexpr (K > 0) a = *reinterpret_cast<const Pack<S>*>(s0 + i);
      if constexpr (K > 1) b = *reinterpret_cast<const Pack<S>*>(s1 + i);
      if constexpr (K > 2) d = *reinterpret_cast<const Pack<S>*>(s2 + i);
#pragma unroll
      for (int k = 0; k < kVec; ++k)
        update_element<Rule, kStore, P, S, T>(p.v[k], g.v[k], m.v[k], a.v[k], b.v[k], d.v[k], uint32_t(i + k), c,
                                              grad_scale, key);
      *reinterpret_cast<Pack<P>*>(param + i) = p;
      if constexpr (kMaster) *reinterpret_cast<Pack<float>*>(master + i) = m;
      if constexpr (K > 0) *reinterpret_cast<Pack<S>*>(s0 + i) = a;
      if constexpr (K > 1) *reinterpret_cast<Pack<S>*>(s1 + i) = b;
      if constexpr (K > 2) *reinterpret_cast<Pack<S>*>(s2 + i) = d;
    }
  }
  // Arrays a variant lacks are stood in for by scratch registers, as on the CPU.
  float scratch_master;
  S scratch_state;
  for (; i < end; i += stride)
    for (int64_t j = i; j < min(i + kVec, end); ++j)
      update_element<Rule, kStore, P, S, T>(param[j], grad[j], kMaster ? master[j] : scratch_master,
                                            K > 0 ? s0[j] : scratch_state, K > 1 ? s1[j] : scratch_state,
                                            K > 2 ? s2[j] : scratch_state, uint32_t(j), c, grad_scale, key);
}

// Advances the step counter and the per-tensor scalars (NOTE: [per-tensor scalars]) of every
// tensor of a table, after all its chunks were updated, unless the step was skipped.
template <typename Rule>
__global__ void advance_steps(TensorTable table, int blocks, const float* found_inf, typename Rule::Options options) {
  if (found_inf && *found_inf != 0.0f) return;
  // Entries past `blocks` are left over from the previous table: only the first chunk of each
  // tensor listed in this one advances its counter.
  const int b = threadIdx.x;
  if (b >= blocks || table.block_chunk[b] != 0) return;
  const int t = table.block_tensor[b];
  float* step = table.step[t];
  if constexpr (ScalarCount<Rule>::value > 0) {
    void* state[kMaxStates];
    for (int k = 0; k < kMaxStates; ++k) state[k] = table.ptr[3 + k][t];
    advance_scalars<Rule>(options, step ? double(*step) + 1.0 : 0.0, state);
  }
  if (step) *step += 1.0f;
}

template <typename Rule, typename P, typename S, ParamStore kStore>
void launch_update(const typename Rule::Options& options, const StepConfig& config, const TensorSlots* tensors,
                   int64_t count, cudaStream_t stream) {
  std::vector<TableTensor> views;
  views.reserve(count);
  for (int64_t t = 0; t < count; ++t) views.push_back({&tensors[t], tensors[t].numel});
  for_each_table(views.data(), count, [&](const TensorTable& table, int blocks) {
    update_kernel<Rule, P, S, kStore><<<blocks, kThreads, 0, stream>>>(table, options, config);
    check(cudaGetLastError(), "update launch");
  });
  if (Rule::kCountsSteps || ScalarCount<Rule>::value > 0) {
    // After every update launch: a tensor split over tables must read the same step in each.
    for_each_table(views.data(), count, [&](const TensorTable& table, int blocks) {
      advance_steps<Rule><<<1, kTableBlocks, 0, stream>>>(table, blocks, config.found_inf, options);
      check(cudaGetLastError(), "step launch");
    });
  }
}

// Runs Rule for the storage the config describes (found_inf is read on the device).
template <typename Rule>
void dispatch_update(const char* op, const typename Rule::Options& options, const StepConfig& config,
                     const TensorSlots* tensors, int64_t count, void* stream) {
  dispatch_storage(op, config, [&](auto param, auto state, auto store) {
    launch_update<Rule, decltype(param), decltype(state), decltype(store)::value>(
        options, config, tensors, count, static_cast<cudaStream_t>(stream));
  });
}

// One step of the rule whose options these are: its RuleSpec picks the compile-time variant.
template <typename Options>
void run_rule(const Options& options, const StepConfig& config, const TensorSlots* tensors, int64_t count,
              void* stream) {
  using Spec = RuleSpec<Options>;
  const std::string op = std::string(Spec::name(options)) + " step";
  Spec::select(options, [&](auto rule) {
    dispatch_update<decltype(rule)>(op.c_str(), options, config, tensors, count, stream);
  });
}

}  // namespace genesis::cuda
