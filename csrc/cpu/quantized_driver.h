// The CPU driver of 8-bit state (docs/low-bit-state.md, NOTE: [8-bit state maps]): one pass over
// memory per block of kQuantBlock elements. A thread decodes the block's codes into an L1-resident
// float32 tile, runs the same update_element (and so the rule's unchanged apply, gradient
// scaling and everything else update_element does) over it, takes each state's new absmax and
// encodes the tile back. Threads split the blocks of all tensors evenly, never a block.
#pragma once

#include "genesis/quantized.h"
#include "quantized_avx2.h"
#include "quantized_avx512.h"
#include "update_driver.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

// One block's codecs: hand-vectorized for whole blocks where this variant has them (the same bits
// as the portable loops, checked for every float32 input by tests/cpp/test_quantized_simd.cpp:
// quantized_avx512.h, quantized_avx2.h), else the portable loops of genesis/quantized.h, which
// also take a tensor's short last block.
inline void decode_tile(const uint8_t* codes, float absmax, int n, float* v, bool unsigned_map) {
  if (n == kQuantBlock) {
#if defined(GENESIS_QUANT_AVX512)
    return unsigned_map ? decode_block_avx512<true>(codes, absmax, v) : decode_block_avx512<false>(codes, absmax, v);
#elif defined(GENESIS_QUANT_AVX2)
    return unsigned_map ? decode_block_avx2<true>(codes, absmax, v) : decode_block_avx2<false>(codes, absmax, v);
#endif
  }
  decode_block(codes, absmax, n, v, unsigned_map);
}
// `absmax`: the tile's block_absmax, which the update loop took as it wrote the tile (a pass of
// its own over the tile, in cache, cost 2-3 % of the 8-bit AdamW step: 1.13 -> 1.10 ns per
// element, one thread, three alternating pairs).
inline void encode_tile(const float* v, int n, float absmax, uint8_t* codes, bool unsigned_map) {
  if (n == kQuantBlock) {
#if defined(GENESIS_QUANT_AVX512)
    return unsigned_map ? encode_codes_avx512<true>(v, absmax, codes) : encode_codes_avx512<false>(v, absmax, codes);
#elif defined(GENESIS_QUANT_AVX2)
    return unsigned_map ? encode_codes_avx2<true>(v, absmax, codes) : encode_codes_avx2<false>(v, absmax, codes);
#endif
  }
  unsigned_map ? encode_codes_map<true>(v, n, absmax, codes) : encode_codes_map<false>(v, n, absmax, codes);
}

// NOTE: [prefetching codes]
// A block reads 4 bytes of parameter and of gradient per element but one byte per state, so the
// codes advance a quarter as fast as the float streams; the hardware prefetchers (measured on an
// Intel Xeon, 2 threads, 50M parameters) left the code loads missing, a quarter of the AdamW
// step's time stalled on them. Asking for the codes two blocks ahead took that step from 58.6 to
// 42 ms (one to eight blocks ahead measured the same; prefetching the parameter and gradient too
// added nothing measurable). A prefetch is a hint: it changes no result and never faults.
constexpr int64_t kPrefetchBlocks = 2;

template <int K>
inline void prefetch_codes(const TensorSlots& t, int64_t lo) {
  for (int k = 0; k < K; ++k)
    for (int byte = 0; byte < kQuantBlock; byte += 64)
      __builtin_prefetch(static_cast<const uint8_t*>(t.state[k]) + lo + byte);
}

// Updates blocks [first, last) of one tensor. `unsigned_mask` bit k: state k uses the unsigned map.
template <typename Rule, typename P, ParamStore kStore, typename T, typename GX>
void update_blocks(const TensorSlots& t, const typename Rule::template Coeffs<T>& coeffs, const GX& gx,
                   uint32_t rng_key, unsigned unsigned_mask, int64_t first, int64_t last) {
  const typename Rule::template Coeffs<T> c = coeffs;
  constexpr int K = Rule::kStates;
  constexpr bool kMaster = kStore == ParamStore::Master;
  P* GENESIS_RESTRICT param = static_cast<P*>(t.param);
  const P* GENESIS_RESTRICT grad = static_cast<const P*>(t.grad);
  float scratch_master;
  float* GENESIS_RESTRICT master = kMaster ? t.master : &scratch_master;
  alignas(64) float tile[K][kQuantBlock];
  float* GENESIS_RESTRICT s0 = tile[0];
  float* GENESIS_RESTRICT s1 = tile[K > 1 ? 1 : 0];
  float* GENESIS_RESTRICT s2 = tile[K > 2 ? 2 : 0];
  for (int64_t b = first; b < last; ++b) {
    const int64_t lo = b * kQuantBlock;
    const int n = static_cast<int>(t.numel - lo < kQuantBlock ? t.numel - lo : kQuantBlock);
    if (b + kPrefetchBlocks < last) prefetch_codes<K>(t, lo + kPrefetchBlocks * kQuantBlock);
    for (int k = 0; k < K; ++k)
      decode_tile(static_cast<const uint8_t*>(t.state[k]) + lo, t.absmax[k][b], n, tile[k], (unsigned_mask >> k) & 1u);
    // A block never straddles a multiple of 2^32 elements (kQuantBlock divides 2^32).
    const uint32_t key = block_key(rng_key, uint64_t(lo) >> 32);
    P* GENESIS_RESTRICT pb = param + lo;
    const P* GENESIS_RESTRICT gb = grad + lo;
    float* GENESIS_RESTRICT mb = kMaster ? master + lo : master;
    uint32_t m0 = 0, m1 = 0, m2 = 0;  // each state's max_magnitude over the block's new values
    for (int j = 0; j < n; ++j) {
      update_element<Rule, kStore, P, float, T>(pb[j], gb[j], mb[kMaster ? j : 0], s0[j], s1[K > 1 ? j : 0],
                                                s2[K > 2 ? j : 0], uint32_t(lo + j), c, gx, key);
      m0 = max_magnitude(m0, s0[j]);
      if constexpr (K > 1) m1 = max_magnitude(m1, s1[j]);
      if constexpr (K > 2) m2 = max_magnitude(m2, s2[j]);
    }
    const uint32_t mag[3] = {m0, m1, m2};
    for (int k = 0; k < K; ++k) {
      t.absmax[k][b] = bits_to_float(mag[k]);
      encode_tile(tile[k], n, t.absmax[k][b], static_cast<uint8_t*>(t.state[k]) + lo, (unsigned_mask >> k) & 1u);
    }
  }
}

// One step of Rule over tensors with parameters stored as P and 8-bit state.
template <typename Rule, typename P, ParamStore kStore>
void run_quantized(const typename Rule::Options& options, const StepConfig& config, TensorSlots* tensors,
                   int64_t count) {
  using T = MathType<P>;
  // The index before step_coeffs advances the step counters (update_driver.h: run_update).
  const FlatIndex blocks(count, [&](int64_t t) { return quant_blocks(tensors[t].numel); });
  const auto coeffs = step_coeffs<Rule, T>(options, tensors, count);
  const unsigned mask = unsigned_state_mask(options);
  with_grad_transform(grad_transform<T>(config), [&](const auto& gx) {
    blocks.parallel_for_each_piece(
        [&](int64_t t, int64_t first, int64_t last) {
          const uint32_t key =
              kStore == ParamStore::Stochastic ? stream_key(config.seed, tensors[t].id, config.counter) : 0u;
          update_blocks<Rule, P, kStore, T>(tensors[t], coeffs[t], gx, key, mask, first, last);
        },
        kParallelThreshold / kQuantBlock, 1);
  });
}

template <typename Rule>
void dispatch_quantized(const char* op, const typename Rule::Options& options, const StepConfig& config,
                        TensorSlots* tensors, int64_t count) {
  dispatch_quantized_storage<Rule::kStates>(
      op, config, tensors, count,
      [&](auto param, auto store) {
        run_quantized<Rule, decltype(param), decltype(store)::value>(options, config, tensors, count);
      },
      [&](auto param, auto state, auto store) {
        run_update<Rule, decltype(param), decltype(state), decltype(store)::value>(options, config, tensors, count);
      });
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
