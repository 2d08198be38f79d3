// Runtime dtypes, their storage types, the conversions between storage and math types, and the
// one dispatcher that maps a dtype to a type.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "genesis/macros.h"

namespace genesis {

enum class DType : int8_t { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3, UInt8 = 4 };
// The floating-point dtypes (parameters, gradients, float state). UInt8 is not one of them: as a
// state dtype it means blockwise 8-bit state, uint8 codes plus float32 block scales
// (include/genesis/quantized.h); dispatch_dtype does not map it to a type.
constexpr int kNumDTypes = 4;

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32:
      return "float32";
    case DType::Float64:
      return "float64";
    case DType::Float16:
      return "float16";
    case DType::BFloat16:
      return "bfloat16";
    case DType::UInt8:
      return "uint8";
  }
  return "unknown";
}

inline std::size_t dtype_size(DType d) {
  return d == DType::Float64 ? 8 : d == DType::Float32 ? 4 : d == DType::UInt8 ? 1 : 2;
}

// 16-bit storage types. Nothing computes in them: values widen to float on load and round
// once on store, so every rule only ever sees float or double registers.
struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

// The register type a storage type computes in.
template <typename S>
struct MathTypeOf {
  using type = float;
};
template <>
struct MathTypeOf<double> {
  using type = double;
};
template <typename S>
using MathType = typename MathTypeOf<S>::type;

GENESIS_HD float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
GENESIS_HD uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// NOTE: [16-bit conversions]
// bfloat16 is the top half of a float32, so both directions are integer arithmetic. float16
// conversions are written branch-free in integer and float arithmetic too: GCC vectorizes them
// with plain SSE2 (it does not vectorize F16C's scalar conversions, or _Float16 casts, inside a
// shared element-wise loop), and they are bit-exact against IEEE round-to-nearest-even for
// every input (tests/test_mixed_precision.py checks all 65536 halves and millions of floats).

// float16 -> float32. Normal and subnormal halves: move the 15 magnitude bits into a float's
// exponent/mantissa position and multiply by 2^112, which rebiases the exponent and normalizes
// subnormals exactly. Inf/NaN halves keep their payload under an all-ones exponent.
GENESIS_HD float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t shifted = uint32_t(h & 0x7FFFu) << 13;
  const uint32_t finite = float_to_bits(bits_to_float(shifted) * bits_to_float(0x77800000u));
  const uint32_t magnitude = shifted >= (0x7C00u << 13) ? (shifted | 0x7F800000u) : finite;
  return bits_to_float(sign | magnitude);
}

// float32 -> float16, round to nearest even. Results below 2^-14 (subnormal halves): adding
// 0.5 lets the FPU's own rounding place the 10 result bits at the bottom of the mantissa.
// Normal results: rebias the exponent and round on the 13 dropped bits. Values from 65520 up
// become inf; NaN stays a quiet NaN.
GENESIS_HD uint16_t float_to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t overflow = a > 0x7F800000u ? 0x7E00u : 0x7C00u;
  const uint32_t subnormal = float_to_bits(bits_to_float(a) + 0.5f) - 0x3F000000u;
  const uint32_t normal = (a + 0xC8000FFFu + ((a >> 13) & 1u)) >> 13;
  const uint32_t magnitude = a >= 0x477FF000u ? overflow : (a < 0x38800000u ? subnormal : normal);
  return static_cast<uint16_t>(sign | magnitude);
}

GENESIS_HD float bfloat16_to_float(uint16_t b) { return bits_to_float(uint32_t(b) << 16); }

// float32 -> bfloat16, round to nearest even on the 16 dropped bits; NaN stays a quiet NaN.
GENESIS_HD uint16_t float_to_bfloat16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? ((u >> 16) | 0x40u) : rounded);
}

// float32 -> bfloat16 with stochastic rounding: adding 16 uniformly random bits below the kept
// ones, then truncating, rounds up with probability equal to the dropped fraction, so the
// rounding error has zero mean. Inf and NaN are never perturbed.
GENESIS_HD uint16_t float_to_bfloat16_stochastic(float f, uint32_t random) {
  const uint32_t u = float_to_bits(f);
  const bool special = (u & 0x7F800000u) == 0x7F800000u;
  return static_cast<uint16_t>(special ? float_to_bfloat16(f) : (u + (random & 0xFFFFu)) >> 16);
}

// Widening load and rounding store: the only place a storage type meets a math type.
template <typename M, typename S>
GENESIS_HD M load(S x) {
  return static_cast<M>(x);
}
template <typename M>
GENESIS_HD M load(Half x) {
  return static_cast<M>(half_to_float(x.bits));
}
template <typename M>
GENESIS_HD M load(BFloat16 x) {
  return static_cast<M>(bfloat16_to_float(x.bits));
}

template <typename S, typename M>
GENESIS_HD void store(S& dst, M v) {
  dst = static_cast<S>(v);
}
template <typename M>
GENESIS_HD void store(Half& dst, M v) {
  dst.bits = float_to_half(static_cast<float>(v));
}
template <typename M>
GENESIS_HD void store(BFloat16& dst, M v) {
  dst.bits = float_to_bfloat16(static_cast<float>(v));
}

// The runtime dtype of a storage type.
template <typename S>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<S, double>) return DType::Float64;
  if constexpr (std::is_same_v<S, Half>) return DType::Float16;
  if constexpr (std::is_same_v<S, BFloat16>) return DType::BFloat16;
  return DType::Float32;
}

// Maps a runtime dtype to its storage type and calls fn(tag) with a value of that type, so one
// template instantiates per dtype instead of one hand-written copy per dtype. `op` names the
// operation in the error for a dtype it does not support.
template <typename Fn>
decltype(auto) dispatch_dtype(DType d, const char* op, Fn&& fn) {
  switch (d) {
    case DType::Float32:
      return fn(float{});
    case DType::Float64:
      return fn(double{});
    case DType::Float16:
      return fn(Half{});
    case DType::BFloat16:
      return fn(BFloat16{});
    case DType::UInt8:
      break;  // 8-bit state codes: no element type of their own
  }
  throw std::invalid_argument(std::string(op) + ": unsupported dtype " + std::to_string(int(d)));
}

}  // namespace genesis
