// The CUDA update kernel shared by every rule: each block loads a register tile of one chunk,
// calls the same Rule::apply as the CPU loop, and stores. See NOTE: [tensor tables].
// The kernels are compiled without floating-point contraction (--fmad=false, see
// CMakeLists.txt), like the CPU core, so that both give the same bits.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "device_lr.cuh"
#include "genesis/cuda.h"
#include "genesis/update_element.h"
#include "tensor_table.cuh"

namespace genesis::cuda {

// kVec elements of S, loaded and stored as one access (16 bytes of float32, 8 of 16-bit
// types, two 16-byte accesses of float64).
template <typename S>
struct alignas(sizeof(S) * kVec) Pack {
  S v[kVec];
};

// The per-tensor coefficients of this step. A rule that counts steps reads the count before
// this step's increment (advance_steps runs after every update launch), and its per-tensor
// scalars (NOTE: [per-tensor scalars]) from the state slots after its arrays; SGD's first step
// is decided by its device counter when it has one (0: no step has run since the buffer was
// created, so a step skipped by GradScaler leaves the next one first), else by the host's flag;
// a rule that counts steps gets the host's flag as the CPU does (Rprop's first step sizes).
// `state`: the tensor's state slots (arrays, then scalars); `host_fresh`: TensorSlots::fresh.
template <typename Rule, typename T>
__device__ typename Rule::template Coeffs<T> slot_coeffs(const typename Rule::Options& options, const float* counter,
                                                         void* const* state, bool host_fresh) {
  TensorScalars scalars{};
  if constexpr (ScalarCount<Rule>::value > 0) scalars = load_scalars<Rule>(state);
  if constexpr (Rule::kCountsSteps) return rule_coeffs<Rule, T>(options, double(*counter) + 1.0, host_fresh, scalars);
  const bool fresh = counter ? *counter == 0.0f : host_fresh;
  return rule_coeffs<Rule, T>(options, 0.0, fresh, scalars);
}
template <typename Rule, typename T, typename TableT>
__device__ typename Rule::template Coeffs<T> coeffs_of(const typename Rule::Options& options, const TableT& table,
                                                       int t) {
  void* state[kMaxStates];
  for (int k = 0; k < kMaxStates; ++k) state[k] = table.ptr[3 + k][t];
  return slot_coeffs<Rule, T>(options, table.step[t], state, (table.flags[t] & kFresh) != 0);
}

// What every thread of a table's block needs before its elements (the float and the 8-bit
// kernels): its chunk, the rule's coefficients for the chunk's tensor, the gradient transform,
// and the stochastic rounding key.
template <typename Rule, typename T>
struct ChunkSetup {
  BlockRange r;
  typename Rule::template Coeffs<T> c;
  GradTransform<T> gx;
  uint32_t key;
};
template <typename Rule, typename T, ParamStore kStore, typename TableT>
__device__ ChunkSetup<Rule, T> chunk_setup(const TableT& table, const typename Rule::Options& options,
                                           const StepConfig& config) {
  ChunkSetup<Rule, T> s;
  s.r = block_range(table, blockIdx.x);
  const int t = s.r.tensor;
  // The bias corrections need pow() in double: one thread computes them for the block.
  __shared__ typename Rule::template Coeffs<T> shared;
  if (threadIdx.x == 0) shared = coeffs_of<Rule, T>(with_device_lr(options, config.lr, config.lr_is_double), table, t);
  __syncthreads();
  s.c = shared;
  s.gx = grad_transform<T>(config);
  // A chunk never straddles a multiple of 2^32 elements (2^32 is a multiple of kChunk), so one
  // key serves the whole block.
  s.key = kStore == ParamStore::Stochastic
              ? block_key(stream_key(config.seed, table.id[t], config.counter), uint64_t(s.r.begin) >> 32)
              : 0u;
  return s;
}

template <typename Rule, typename P, typename S, ParamStore kStore>
__global__ void __launch_bounds__(kThreads)
    update_kernel(const __grid_constant__ TensorTable table, const typename Rule::Options options,
                  const StepConfig config) {
  using T = MathType<P>;
  if (config.found_inf && *config.found_inf != 0.0f) return;
  const ChunkSetup<Rule, T> setup = chunk_setup<Rule, T, kStore>(table, options, config);
  const BlockRange& r = setup.r;
  const int t = r.tensor;
  const auto& c = setup.c;
  const GradTransform<T>& gx = setup.gx;
  const uint32_t key = setup.key;
  P* param = static_cast<P*>(table.ptr[0][t]);
  const P* grad = static_cast<const P*>(table.ptr[1][t]);
  float* master = static_cast<float*>(table.ptr[2][t]);
  S* s0 = static_cast<S*>(table.ptr[3][t]);
  S* s1 = static_cast<S*>(table.ptr[4][t]);
  S* s2 = static_cast<S*>(table.ptr[5][t]);
  constexpr int K = Rule::kStates;
  constexpr bool kMaster = kStore == ParamStore::Master;
  // Whole packs through registers with 16-byte accesses; see BlockRange.
  for (int64_t i = r.begin + int64_t(threadIdx.x) * kVec; i < r.packs_end; i += int64_t(kThreads) * kVec) {
    // Read with master weights too: NOTE: [master re-seed] compares it with the master.
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
      update_element<Rule, kStore, P, S, T>(p.v[k], g.v[k], m.v[k], a.v[k], b.v[k], d.v[k], uint32_t(i + k), c, gx,
                                            key);
    *reinterpret_cast<Pack<P>*>(param + i) = p;
    if constexpr (kMaster) *reinterpret_cast<Pack<float>*>(master + i) = m;
    if constexpr (K > 0) *reinterpret_cast<Pack<S>*>(s0 + i) = a;
    if constexpr (K > 1) *reinterpret_cast<Pack<S>*>(s1 + i) = b;
    if constexpr (K > 2) *reinterpret_cast<Pack<S>*>(s2 + i) = d;
  }
  // Unaligned tensors and the tail: one element per thread per iteration, consecutive threads
  // on consecutive elements (coalesced). Arrays a variant lacks are stood in for by scratch
  // registers, as on the CPU.
  float scratch_master;
  S scratch_state;
  for (int64_t j = r.packs_end + threadIdx.x; j < r.end; j += kThreads)
    update_element<Rule, kStore, P, S, T>(param[j], grad[j], kMaster ? master[j] : scratch_master,
                                          K > 0 ? s0[j] : scratch_state, K > 1 ? s1[j] : scratch_state,
                                          K > 2 ? s2[j] : scratch_state, uint32_t(j), c, gx, key);
}

// Advances every step counter of a step and the per-tensor scalars that go with it (NOTE:
// [per-tensor scalars]), unless the step was skipped: one launch after all update launches, so
// a tensor split over tables read the same values in each. `lr`: StepConfig::lr (ASGD's scalars
// follow the learning rate).
template <typename Rule>
__global__ void advance_steps(const __grid_constant__ StepList list, const float* found_inf,
                              typename Rule::Options options, const void* lr = nullptr, bool lr_is_double = false) {
  if (found_inf && *found_inf != 0.0f) return;
  options = with_device_lr(options, lr, lr_is_double);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < list.count; i += gridDim.x * blockDim.x) {
    if constexpr (ScalarCount<Rule>::value > 0) {
      void* state[kMaxStates];
      for (int k = 0; k < kMaxStates; ++k) state[k] = list.state[k][i];
      advance_scalars<Rule>(options, double(*list.step[i]) + 1.0, state);
    }
    *list.step[i] += 1.0f;
  }
}

// Launches advance_steps over every step counter of a call.
template <typename Rule>
void launch_advance(const typename Rule::Options& options, const StepConfig& config, const TensorSlots* tensors,
                    int64_t count, cudaStream_t stream) {
  for (const StepList& list : build_step_lists(tensors, count)) {
    advance_steps<Rule>
        <<<(list.count + 127) / 128, 128, 0, stream>>>(list, config.found_inf, options, config.lr, config.lr_is_double);
    check(cudaGetLastError(), "step counters (the parameters and state were updated)");
  }
}

template <typename Rule, typename P, typename S, ParamStore kStore>
void launch_update(const char* op, const typename Rule::Options& options, const StepConfig& config,
                   const TensorSlots* tensors, int64_t count, cudaStream_t stream) {
  // Everything that can be refused is refused before the first launch.
  std::vector<TableTensor> views;
  views.reserve(count);
  for (int64_t t = 0; t < count; ++t) {
    if (Rule::kCountsSteps && !tensors[t].step)
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + " has no step counter");
    views.push_back({&tensors[t], int(sizeof(P)), int(sizeof(S))});
  }
  const std::vector<BuiltTable> tables = build_tables(views.data(), count);
  launch_tables(tables, op, [&](const TensorTable& table, int blocks) {
    update_kernel<Rule, P, S, kStore><<<blocks, kThreads, 0, stream>>>(table, options, config);
  });
  launch_advance<Rule>(options, config, tensors, count, stream);
}

// Rules with 8-bit state (StepConfig::state_dtype UInt8) take the block kernel, quantized_kernel.cuh.
template <typename Rule>
void dispatch_quantized(const char* op, const typename Rule::Options& options, const StepConfig& config,
                        const TensorSlots* tensors, int64_t count, cudaStream_t stream);

// Runs Rule for the storage the config describes (found_inf is read on the device), on the
// device that holds the tensors.
template <typename Rule>
void dispatch_update(const char* op, const typename Rule::Options& options, const StepConfig& config,
                     const TensorSlots* tensors, int64_t count, void* stream) {
  if (count == 0) return;
  const DeviceGuard guard(stream, device_pointer(tensors, count));
  if (config.state_dtype == DType::UInt8)
    return dispatch_quantized<Rule>(op, options, config, tensors, count, static_cast<cudaStream_t>(stream));
  dispatch_storage(op, config, [&](auto param, auto state, auto store) {
    launch_update<Rule, decltype(param), decltype(state), decltype(store)::value>(op, options, config, tensors, count,
                                                                                  static_cast<cudaStream_t>(stream));
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

#include "quantized_kernel.cuh"
