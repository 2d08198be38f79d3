// The CUDA kernel of 8-bit state (docs/low-bit-state.md, NOTE: [8-bit state maps]): the tables
// of the float kernels (NOTE: [tensor tables], plus each state's block scales), one CUDA block
// per chunk of kChunk elements, and within it one warp per block of kQuantBlock elements at a
// time. A lane holds 8 elements of its block in registers, decodes their codes, runs the same
// update_element as every other path (so the rule's unchanged apply), the warp reduces each
// state's new absmax and the lane encodes: one pass over memory. The step counters then
// advance on the device as for float state: no host synchronization.
//
// Why this shape (H200, 1B parameters; docs/low-bit-state.md): a CUDA block per 8 blocks of state
// made 488,000 blocks a step, each waiting for one thread's bias corrections (portable_pow in
// double-double) before its first load, and byte-wide code accesses. A chunk per CUDA block pays
// the coefficients once per 65,536 elements, as the float kernel does, and on tensors whose
// arrays are aligned the lanes move whole packs: 16-byte parameter and gradient accesses and
// 4-byte code accesses, each warp access one contiguous run.
#pragma once

#include <stdexcept>
#include <string>

#include "genesis/quantized.h"
#include "update_kernel.cuh"

namespace genesis::cuda {

constexpr int kQuantWarps = kThreads / 32;

// Loads kQuantPerLane elements of the lane from x (a block's start) into v: whole packs, or
// element by element below n (what lies beyond keeps its zero).
template <bool kPacked, typename S, typename V>
__device__ __forceinline__ void load_lane(const S* x, int lane, int n, V (&v)[kQuantPerLane]) {
  if constexpr (kPacked) {
#pragma unroll
    for (int h = 0; h < kQuantPacks; ++h) {
      const Pack<S> p = *reinterpret_cast<const Pack<S>*>(x + lane_element<true>(lane, h * kVec));
#pragma unroll
      for (int k = 0; k < kVec; ++k) v[h * kVec + k] = p.v[k];
    }
  } else {
#pragma unroll
    for (int j = 0; j < kQuantPerLane; ++j) {
      const int i = lane_element<false>(lane, j);
      v[j] = i < n ? V(x[i]) : V{};
    }
  }
}

template <bool kPacked, typename S, typename V>
__device__ __forceinline__ void store_lane(S* x, int lane, int n, const V (&v)[kQuantPerLane]) {
  if constexpr (kPacked) {
#pragma unroll
    for (int h = 0; h < kQuantPacks; ++h) {
      Pack<S> p;
#pragma unroll
      for (int k = 0; k < kVec; ++k) p.v[k] = S(v[h * kVec + k]);
      *reinterpret_cast<Pack<S>*>(x + lane_element<true>(lane, h * kVec)) = p;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kQuantPerLane; ++j) {
      const int i = lane_element<false>(lane, j);
      if (i < n) x[i] = S(v[j]);
    }
  }
}

// One block of state (elements [lo, lo + n) of tensor t), by one warp.
template <typename Rule, typename P, ParamStore kStore, bool kPacked>
__device__ __forceinline__ void quantized_block(const QuantTable& table, int t, int64_t lo, int n,
                                                const typename Rule::template Coeffs<MathType<P>>& c,
                                                const GradTransform<MathType<P>>& gx, uint32_t key,
                                                unsigned unsigned_mask) {
  using T = MathType<P>;
  constexpr int K = Rule::kStates;
  constexpr bool kMaster = kStore == ParamStore::Master;
  const int lane = threadIdx.x & 31;
  const int64_t b = lo / kQuantBlock;
  P* param = static_cast<P*>(table.ptr[0][t]) + lo;
  const P* grad = static_cast<const P*>(table.ptr[1][t]) + lo;
  float* master = kMaster ? static_cast<float*>(table.ptr[2][t]) + lo : nullptr;
  // Every load of the lane is issued before the first update, and the stores come after the
  // last: updating element by element kept one load in flight per thread (the compiler cannot
  // move a load above a store that may alias it).
  uint32_t code[kMaxStates][kQuantPerLane];
  float scale[kMaxStates];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    load_lane<kPacked>(static_cast<const uint8_t*>(table.ptr[3 + k][t]) + lo, lane, n, code[k]);
    scale[k] = dequant_factor(static_cast<const float*>(table.ptr[kSlots + k][t])[b]);
  }
  P pv[kQuantPerLane], gv[kQuantPerLane];
  float mv[kQuantPerLane] = {};
  load_lane<kPacked>(param, lane, n, pv);
  load_lane<kPacked>(grad, lane, n, gv);
  if constexpr (kMaster) load_lane<kPacked>(master, lane, n, mv);
  float v[kMaxStates][kQuantPerLane];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const bool u = (unsigned_mask >> k) & 1u;
#pragma unroll
    for (int j = 0; j < kQuantPerLane; ++j)
      v[k][j] = (u ? decode_code<true>(code[k][j]) : decode_code<false>(code[k][j])) * scale[k];
  }
#pragma unroll
  for (int j = 0; j < kQuantPerLane; ++j) {
    const int i = lane_element<kPacked>(lane, j);
    if (kPacked || i < n)
      update_element<Rule, kStore, P, float, T>(pv[j], gv[j], mv[j], v[0][j], v[K > 1 ? 1 : 0][j], v[K > 2 ? 2 : 0][j],
                                                uint32_t(lo + i), c, gx, key);
  }
  store_lane<kPacked>(param, lane, n, pv);
  if constexpr (kMaster) store_lane<kPacked>(master, lane, n, mv);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    uint32_t m = 0;  // the NaN-propagating absmax, as block_absmax
#pragma unroll
    for (int j = 0; j < kQuantPerLane; ++j) {
      const uint32_t a = float_to_bits(v[k][j]) & 0x7FFFFFFFu;
      m = (kPacked || lane_element<kPacked>(lane, j) < n) && a > m ? a : m;
    }
    m = __reduce_max_sync(0xFFFFFFFFu, m);
    const float absmax = bits_to_float(m);
    const float q = quant_factor(absmax);
    const bool u = (unsigned_mask >> k) & 1u;
#pragma unroll
    for (int j = 0; j < kQuantPerLane; ++j)
      code[k][j] = u ? encode_code<true>(v[k][j] * q) : encode_code<false>(v[k][j] * q);
    store_lane<kPacked>(static_cast<uint8_t*>(table.ptr[3 + k][t]) + lo, lane, n, code[k]);
    if (lane == 0) static_cast<float*>(table.ptr[kSlots + k][t])[b] = absmax;
  }
}

template <typename Rule, typename P, ParamStore kStore>
__global__ void __launch_bounds__(kThreads)
    quantized_kernel(const __grid_constant__ QuantTable table, const typename Rule::Options options,
                     const StepConfig config, unsigned unsigned_mask) {
  using T = MathType<P>;
  if (config.found_inf && *config.found_inf != 0.0f) return;
  const ChunkSetup<Rule, T> setup = chunk_setup<Rule, T, kStore>(table, options, config);
  const BlockRange& r = setup.r;
  const int t = r.tensor;
  const bool packed = (table.flags[t] & kVectorPath) != 0;
  for (int64_t lo = r.begin + int64_t(threadIdx.x / 32) * kQuantBlock; lo < r.end;
       lo += int64_t(kQuantWarps) * kQuantBlock) {
    const int n = r.end - lo < kQuantBlock ? int(r.end - lo) : kQuantBlock;
    if (packed && n == kQuantBlock)
      quantized_block<Rule, P, kStore, true>(table, t, lo, n, setup.c, setup.gx, setup.key, unsigned_mask);
    else
      quantized_block<Rule, P, kStore, false>(table, t, lo, n, setup.c, setup.gx, setup.key, unsigned_mask);
  }
}

template <typename Rule, typename P, ParamStore kStore>
void launch_quantized(const char* op, const typename Rule::Options& options, const StepConfig& config,
                      const TensorSlots* tensors, int64_t count, cudaStream_t stream) {
  // Everything that can be refused is refused before the first launch.
  std::vector<TableTensor> views;
  views.reserve(count);
  for (int64_t t = 0; t < count; ++t) {
    if (Rule::kCountsSteps && !tensors[t].step)
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + " has no step counter");
    views.push_back({&tensors[t], int(sizeof(P)), 1});
  }
  const unsigned mask = unsigned_state_mask(options);
  const auto tables = build_tables<QuantTable>(views.data(), count);
  launch_tables(tables, op, [&](const QuantTable& table, int blocks) {
    quantized_kernel<Rule, P, kStore><<<blocks, kThreads, 0, stream>>>(table, options, config, mask);
  });
  launch_advance<Rule>(options, config, tensors, count, stream);
}

template <typename Rule>
void dispatch_quantized(const char* op, const typename Rule::Options& options, const StepConfig& config,
                        const TensorSlots* tensors, int64_t count, cudaStream_t stream) {
  dispatch_quantized_storage<Rule::kStates>(
      op, config, tensors, count,
      [&](auto param, auto store) {
        launch_quantized<Rule, decltype(param), decltype(store)::value>(op, options, config, tensors, count, stream);
      },
      [&](auto param, auto state, auto store) {
        launch_update<Rule, decltype(param), decltype(state), decltype(store)::value>(op, options, config, tensors,
                                                                                      count, stream);
      });
}

}  // namespace genesis::cuda
