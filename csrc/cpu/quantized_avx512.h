// The 8-bit state's block codecs written for AVX-512 (NOTE: [8-bit state maps] in
// include/genesis/quantized.h is the definition; these compute the same codes and values, bit for
// bit, with fewer instructions than the compiler finds for the portable loops). Compiled into
// the avx512 CPU variant only; the driver falls back to the portable loops elsewhere and for a
// tensor's short last block.
//
// Why by hand: the portable loops mix 8-, 16- and 32-bit lanes, and the compiler widens and
// narrows through every size in between. Here each direction works on 16 elements in 32-bit
// lanes: one widening load (vpmovzxbd/vpmovsxbw), one narrowing store (vpmovdb), the rest
// integer and float operations at full width. The signed decode goes through float16: a signed
// code is a float16 whose low 7 mantissa bits are zero (same exponent bias, same subnormals), so
// it is the code placed at bit 7 and one exact float16 -> float32 conversion.
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#define GENESIS_QUANT_AVX512 1
#include "intrinsics.h"

#include "genesis/quantized.h"
#include "unsigned_decode.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

static_assert(kQuantBlock % 16 == 0, "the AVX-512 codecs take blocks of whole 16-element vectors");

// The NaN-propagating largest magnitude (as block_absmax: the integer maximum of the magnitude bits).
inline float absmax_avx512(const float* v) {
  const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i m0 = _mm512_setzero_si512(), m1 = m0;
  for (int j = 0; j < kQuantBlock; j += 32) {
    m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_loadu_si512(v + j), magnitude));
    m1 = _mm512_max_epu32(m1, _mm512_and_si512(_mm512_loadu_si512(v + j + 16), magnitude));
  }
  return bits_to_float(_mm512_reduce_max_epu32(_mm512_max_epu32(m0, m1)));
}

// encode_code for 16 values already multiplied by the block's factor.
template <bool kUnsigned>
inline __m128i encode16(__m512 x) {
  using M = QuantMap<kUnsigned>;
  const __m512i u = _mm512_castps_si512(x);
  // The unsigned map stores negative values (and negative NaNs) as 0: a signed maximum with 0
  // turns every value with the sign bit set into +0.
  const __m512i a =
      kUnsigned ? _mm512_max_epi32(u, _mm512_setzero_si512()) : _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
  // Normal: rebias and round the 20 dropped bits to nearest even, the rebias folded into the
  // rounding constant (the result is only used where a is a normal code, a >= kMinNormal).
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_add_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(int(0x7FFFFu - ((127u - M::kBias) << 23)))), odd);
  __m512i mag = _mm512_srli_epi32(rounded, 20);
  // Subnormal: the FPU's own rounding places the step count at the bottom of the anchor.
  const __m512 anchor = _mm512_castsi512_ps(_mm512_set1_epi32(int(M::kSubnormalAnchor)));
  const __m512i subnormal =
      _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a), anchor)), _mm512_castps_si512(anchor));
  const __mmask16 small = _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(int(M::kMinNormal)));
  mag = _mm512_mask_mov_epi32(mag, small, subnormal);
  mag = _mm512_min_epu32(mag, _mm512_set1_epi32(int(M::kMaxMag)));  // NaN, inf, past 1.875
  if constexpr (!kUnsigned) {
    // sign bit 31 -> code bit 7: (u >> 24) & 0x80 | mag in one three-input operation
    mag = _mm512_ternarylogic_epi32(_mm512_set1_epi32(0x80), _mm512_srli_epi32(u, 24), mag, 0xEA);
  }
  return _mm512_cvtepi32_epi8(mag);
}

// The codes of a block whose absmax is known (the driver takes it while the update writes the block).
template <bool kUnsigned>
inline void encode_codes_avx512(const float* v, float absmax, uint8_t* codes) {
  const __m512 q = _mm512_set1_ps(quant_factor(absmax));
  for (int j = 0; j < kQuantBlock; j += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + j),
                     encode16<kUnsigned>(_mm512_mul_ps(_mm512_loadu_ps(v + j), q)));
}

template <bool kUnsigned>
inline void encode_block_avx512(const float* v, uint8_t* codes, float* absmax) {
  *absmax = absmax_avx512(v);
  encode_codes_avx512<kUnsigned>(v, *absmax, codes);
}

// decode_code for 16 codes, times the block's factor d.
template <bool kUnsigned>
inline __m512 decode16(const uint8_t* codes, __m512 d) {
  using M = QuantMap<kUnsigned>;
  __m512 value;
  if constexpr (!kUnsigned) {
    // Sign-extended to 16 bits, shifted by 7: bit 15 is the sign, bits 13..7 the magnitude,
    // bit 14 a copy of the sign that the mask clears: the float16 of the code's value.
    const __m256i c = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    value = _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(c, 7), _mm256_set1_epi16(int16_t(0xBF80))));
  } else {
    const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    const __m512 normal = _mm512_castsi512_ps(
        _mm512_add_epi32(_mm512_slli_epi32(c, 20), _mm512_set1_epi32(int((127u - M::kBias) << 23))));
    // Subnormal codes (below 8) are c * 2^(-bias - 2), as in decode_code.
    const __m512 subnormal =
        _mm512_mul_ps(_mm512_cvtepi32_ps(c), _mm512_castsi512_ps(_mm512_set1_epi32(int((127u - M::kBias - 2u) << 23))));
    value = _mm512_mask_mov_ps(normal, _mm512_cmplt_epu32_mask(c, _mm512_set1_epi32(8)), subnormal);
  }
  return _mm512_mul_ps(value, d);
}

template <bool kUnsigned>
inline void decode_block_avx512(const uint8_t* codes, float absmax, float* v) {
  if constexpr (kUnsigned) {
    if (unsigned_decode_by_exponent(absmax)) {  // NOTE: [unsigned codes at the exponent]
      const __m512 d = _mm512_set1_ps(dequant_factor(absmax) * kExponentScale);
      for (int j = 0; j < kQuantBlock; j += 16) {
        const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j)));
        _mm512_storeu_ps(v + j, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(c, 20)), d));
      }
      return;
    }
  }
  const __m512 d = _mm512_set1_ps(dequant_factor(absmax));
  for (int j = 0; j < kQuantBlock; j += 16) _mm512_storeu_ps(v + j, decode16<kUnsigned>(codes + j, d));
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT

#endif
