// The CUDA kernel of 8-bit state (docs/low-bit-state.md, NOTE: [8-bit state maps]): one warp
// per block of kQuantBlock elements, in one pass over memory. Each lane holds 8 elements of
// the block in registers (lane + 32 j: every access is coalesced), decodes their codes, runs
// the same update_element as every other path (so the rule's unchanged apply), reduces each
// state's new absmax across the warp and encodes. One launch per tensor (8-bit state is for
// tensors of min_8bit_size elements and more), then the step counters advance on the device
// as for float state: no host synchronization.
#pragma once

#include <stdexcept>
#include <string>

#include "genesis/quantized.h"
#include "update_kernel.cuh"

namespace genesis::cuda {

constexpr int kQuantThreads = 256;  // 8 warps: 8 blocks of state per CUDA block
constexpr int kQuantPerLane = kQuantBlock / 32;

template <typename Rule, typename P, ParamStore kStore>
__global__ void __launch_bounds__(kQuantThreads)
    quantized_kernel(const TensorSlots t, const typename Rule::Options options, const StepConfig config,
                     unsigned unsigned_mask) {
  using T = MathType<P>;
  using Coeffs = typename Rule::template Coeffs<T>;
  constexpr int K = Rule::kStates;
  constexpr bool kMaster = kStore == ParamStore::Master;
  if (config.found_inf && *config.found_inf != 0.0f) return;
  __shared__ Coeffs shared;
  if (threadIdx.x == 0)
    shared = slot_coeffs<Rule, T>(with_device_lr(options, config.lr, config.lr_is_double), t.step, t.state, t.fresh);
  __syncthreads();
  const Coeffs c = shared;
  const GradTransform<T> gx = grad_transform<T>(config);
  const int lane = threadIdx.x & 31;
  const int64_t b = int64_t(blockIdx.x) * (kQuantThreads / 32) + threadIdx.x / 32;
  if (b >= quant_blocks(t.numel)) return;
  const int64_t lo = b * kQuantBlock;
  const int n = t.numel - lo < kQuantBlock ? int(t.numel - lo) : kQuantBlock;
  // A block never straddles a multiple of 2^32 elements: one key serves it.
  const uint32_t key = kStore == ParamStore::Stochastic
                           ? block_key(stream_key(config.seed, t.id, config.counter), uint64_t(lo) >> 32)
                           : 0u;
  P* param = static_cast<P*>(t.param) + lo;
  const P* grad = static_cast<const P*>(t.grad) + lo;
  float* master = kMaster ? t.master + lo : nullptr;
  float v[kMaxStates][kQuantPerLane];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const uint8_t* codes = static_cast<const uint8_t*>(t.state[k]) + lo;
    const float d = dequant_factor(t.absmax[k][b]);
    const bool u = (unsigned_mask >> k) & 1u;
#pragma unroll
    for (int j = 0; j < kQuantPerLane; ++j) {
      const int i = lane + 32 * j;
      const uint32_t code = i < n ? codes[i] : 0u;
      v[k][j] = (u ? decode_code<true>(code) : decode_code<false>(code)) * d;
    }
  }
  // Every load of the lane's elements is issued before the first update, and the stores come
  // after the last: updating in place element by element kept one parameter and gradient load
  // in flight per thread (the compiler cannot move a load above a store that may alias it),
  // which held 8-bit AdamW to 28 % of the copy bandwidth on an H200.
  P pv[kQuantPerLane] = {}, gv[kQuantPerLane] = {};
  float mv[kQuantPerLane] = {};
#pragma unroll
  for (int j = 0; j < kQuantPerLane; ++j) {
    const int i = lane + 32 * j;
    if (i < n) {
      pv[j] = param[i];
      gv[j] = grad[i];
      if constexpr (kMaster) mv[j] = master[i];
    }
  }
#pragma unroll
  for (int j = 0; j < kQuantPerLane; ++j) {
    if (lane + 32 * j < n)
      update_element<Rule, kStore, P, float, T>(pv[j], gv[j], mv[j], v[0][j], v[K > 1 ? 1 : 0][j], v[K > 2 ? 2 : 0][j],
                                                uint32_t(lo + lane + 32 * j), c, gx, key);
  }
#pragma unroll
  for (int j = 0; j < kQuantPerLane; ++j) {
    const int i = lane + 32 * j;
    if (i < n) {
      param[i] = pv[j];
      if constexpr (kMaster) master[i] = mv[j];
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) {
    uint32_t m = 0;  // the NaN-propagating absmax, as block_absmax
#pragma unroll
    for (int j = 0; j < kQuantPerLane; ++j) {
      const uint32_t a = float_to_bits(v[k][j]) & 0x7FFFFFFFu;
      m = lane + 32 * j < n && a > m ? a : m;
    }
    m = __reduce_max_sync(0xFFFFFFFFu, m);
    const float absmax = bits_to_float(m);
    const float q = quant_factor(absmax);
    const bool u = (unsigned_mask >> k) & 1u;
    uint8_t* codes = static_cast<uint8_t*>(t.state[k]) + lo;
#pragma unroll
    for (int j = 0; j < kQuantPerLane; ++j) {
      const int i = lane + 32 * j;
      if (i < n) codes[i] = static_cast<uint8_t>(u ? encode_code<true>(v[k][j] * q) : encode_code<false>(v[k][j] * q));
    }
    if (lane == 0) t.absmax[k][b] = absmax;
  }
}

template <typename Rule, typename P, ParamStore kStore>
void launch_quantized(const char* op, const typename Rule::Options& options, const StepConfig& config,
                      const TensorSlots* tensors, int64_t count, cudaStream_t stream) {
  for (int64_t t = 0; t < count; ++t)
    if (Rule::kCountsSteps && !tensors[t].step)
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + " has no step counter");
  const unsigned mask = unsigned_state_mask(options);
  for (int64_t t = 0; t < count; ++t) {
    const int64_t blocks = (quant_blocks(tensors[t].numel) + kQuantThreads / 32 - 1) / (kQuantThreads / 32);
    if (blocks == 0) continue;
    quantized_kernel<Rule, P, kStore>
        <<<unsigned(blocks), kQuantThreads, 0, stream>>>(tensors[t], options, config, mask);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
      throw std::runtime_error(std::string("genesis CUDA ") + op + ": launch for tensor " + std::to_string(t) +
                               " failed (" + cudaGetErrorString(e) + "); tensors 0.." + std::to_string(t) +
                               " (exclusive) were updated, and no step counter was advanced");
  }
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
