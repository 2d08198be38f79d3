// The 8-bit state's block codecs written for AVX2+F16C: the same codes and values as the
// definition (NOTE: [8-bit state maps] in include/genesis/quantized.h), bit for bit, in 8-element
// vectors. The avx2 CPU variant uses them (the avx512 variant has its own, quantized_avx512.h);
// the driver falls back to the portable loops for a tensor's short last block. The steps are
// those of quantized_avx512.h, which says why each one is exact; what AVX2 lacks is a narrowing
// store, so encode packs 32 codes at a time (two saturating packs and one lane permutation).
#pragma once

#if defined(__AVX2__) && defined(__F16C__)
#define GENESIS_QUANT_AVX2 1
#include "intrinsics.h"

#include "genesis/quantized.h"
#include "unsigned_decode.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

static_assert(kQuantBlock % 32 == 0, "the AVX2 encode packs 32 codes at a time");

inline float absmax_avx2(const float* v) {
  const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i m0 = _mm256_setzero_si256(), m1 = m0;
  for (int j = 0; j < kQuantBlock; j += 16) {
    m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + j)), magnitude));
    m1 = _mm256_max_epu32(m1,
                          _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + j + 8)), magnitude));
  }
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
  m = _mm_max_epu32(m, _mm_max_epu32(_mm256_castsi256_si128(m1), _mm256_extracti128_si256(m1, 1)));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return bits_to_float(uint32_t(_mm_cvtsi128_si32(m)));
}

// encode_code for 8 values already multiplied by the block's factor, as 32-bit lanes.
template <bool kUnsigned>
inline __m256i encode8(__m256 x) {
  using M = QuantMap<kUnsigned>;
  const __m256i u = _mm256_castps_si256(x);
  const __m256i a =
      kUnsigned ? _mm256_max_epi32(u, _mm256_setzero_si256()) : _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 20), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_add_epi32(_mm256_add_epi32(a, _mm256_set1_epi32(int(0x7FFFFu - ((127u - M::kBias) << 23)))), odd);
  const __m256 anchor = _mm256_castsi256_ps(_mm256_set1_epi32(int(M::kSubnormalAnchor)));
  const __m256i subnormal =
      _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a), anchor)), _mm256_castps_si256(anchor));
  // a is at most 0x7FFFFFFF, so the signed compare is the unsigned one
  const __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(M::kMinNormal)), a);
  __m256i mag = _mm256_blendv_epi8(_mm256_srli_epi32(rounded, 20), subnormal, small);
  mag = _mm256_min_epu32(mag, _mm256_set1_epi32(int(M::kMaxMag)));
  if constexpr (!kUnsigned)
    mag = _mm256_or_si256(mag, _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80)));
  return mag;
}

// The codes of a block whose absmax is known (the driver takes it while the update writes the block).
template <bool kUnsigned>
inline void encode_codes_avx2(const float* v, float absmax, uint8_t* codes) {
  const __m256 q = _mm256_set1_ps(quant_factor(absmax));
  // The packs interleave 128-bit lanes: dword k of the result holds codes 4k..4k+3 of
  // vector k % 4's low (k < 4) or high half; the permutation restores the element order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int j = 0; j < kQuantBlock; j += 32) {
    const __m256i c0 = encode8<kUnsigned>(_mm256_mul_ps(_mm256_loadu_ps(v + j), q));
    const __m256i c1 = encode8<kUnsigned>(_mm256_mul_ps(_mm256_loadu_ps(v + j + 8), q));
    const __m256i c2 = encode8<kUnsigned>(_mm256_mul_ps(_mm256_loadu_ps(v + j + 16), q));
    const __m256i c3 = encode8<kUnsigned>(_mm256_mul_ps(_mm256_loadu_ps(v + j + 24), q));
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1), _mm256_packus_epi32(c2, c3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + j), _mm256_permutevar8x32_epi32(bytes, order));
  }
}

template <bool kUnsigned>
inline void encode_block_avx2(const float* v, uint8_t* codes, float* absmax) {
  *absmax = absmax_avx2(v);
  encode_codes_avx2<kUnsigned>(v, *absmax, codes);
}

// decode_code for 8 codes, times the block's factor d.
template <bool kUnsigned>
inline __m256 decode8(const uint8_t* codes, __m256 d) {
  using M = QuantMap<kUnsigned>;
  const __m128i raw = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes));
  __m256 value;
  if constexpr (!kUnsigned) {
    value = _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(raw), 7), _mm_set1_epi16(int16_t(0xBF80))));
  } else {
    const __m256i c = _mm256_cvtepu8_epi32(raw);
    const __m256 normal = _mm256_castsi256_ps(
        _mm256_add_epi32(_mm256_slli_epi32(c, 20), _mm256_set1_epi32(int((127u - M::kBias) << 23))));
    const __m256 subnormal =
        _mm256_mul_ps(_mm256_cvtepi32_ps(c), _mm256_castsi256_ps(_mm256_set1_epi32(int((127u - M::kBias - 2u) << 23))));
    value = _mm256_blendv_ps(normal, subnormal, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), c)));
  }
  return _mm256_mul_ps(value, d);
}

template <bool kUnsigned>
inline void decode_block_avx2(const uint8_t* codes, float absmax, float* v) {
  if constexpr (kUnsigned) {
    if (unsigned_decode_by_exponent(absmax)) {  // NOTE: [unsigned codes at the exponent]
      const __m256 d = _mm256_set1_ps(dequant_factor(absmax) * kExponentScale);
      for (int j = 0; j < kQuantBlock; j += 8) {
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j)));
        _mm256_storeu_ps(v + j, _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(c, 20)), d));
      }
      return;
    }
  }
  const __m256 d = _mm256_set1_ps(dequant_factor(absmax));
  for (int j = 0; j < kQuantBlock; j += 8) _mm256_storeu_ps(v + j, decode8<kUnsigned>(codes + j, d));
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT

#endif
