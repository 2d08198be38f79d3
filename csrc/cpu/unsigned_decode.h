// When the hand-vectorized codecs (quantized_avx512.h, quantized_avx2.h) may decode unsigned
// codes with one shift and one product. See NOTE: [unsigned codes at the exponent].
#pragma once

#include "intrinsics.h"

#include "genesis/quantized.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

// NOTE: [unsigned codes at the exponent]
// An unsigned code c = eeeee mmm (NOTE: [8-bit state maps] in include/genesis/quantized.h)
// shifted to bit 20 of a float32 is the float whose exponent field is e and whose top mantissa
// bits are m: 2^(e - 127) (1 + m/8) for e >= 1, and the float32 subnormal m 2^-129 for e = 0.
// The code's value is 2^(e - 31) (1 + m/8), and m 2^-33 for e = 0: in both cases that float
// times 2^96. So value(c) * d = float(c << 20) * (d * 2^96): a shift and a product per element,
// where decode_code builds both cases and picks one (three vector operations instead of eight).
// The bits are decode_code's: d * 2^96 is exact (a power of two, no overflow below the bound
// here), and float(c << 20) * (d * 2^96) is the same real number as value(c) * d, rounded once.
// Two cases keep the general decode: a block scale of kExponentScaleMax or more (d * 2^96
// would overflow; NaN and inf fail the test too), and a thread whose MXCSR has DAZ set
// (denormals-are-zero, which torch.set_flush_denormal(True) sets): the e = 0 codes are
// float32 subnormals here and would read as 0. 8-bit AdamW, one thread, Zen 4: 0.75 -> 0.71 ns
// per element (docs/low-bit-state.md).
constexpr float kExponentScale = 0x1p96f;
constexpr float kExponentScaleMax = 0x1p31f;

inline bool unsigned_decode_by_exponent(float absmax) {
  constexpr unsigned kDenormalsAreZero = 0x0040;
  return absmax < kExponentScaleMax && (_mm_getcsr() & kDenormalsAreZero) == 0;
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
