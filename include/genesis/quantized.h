// Blockwise 8-bit optimizer state (docs/low-bit-state.md): the code maps, one block's
// quantization and dequantization, and which of a rule's states are non-negative. Storage
// only: no rule knows its state is quantized (the drivers dequantize a block, run the rule's
// unchanged apply through update_element, and requantize).
//
// NOTE: [8-bit state maps]
// A state array of n elements is stored as n uint8 codes plus one float32 `absmax` per block of
// kQuantBlock elements (the largest magnitude of the block). A code is a tiny float relative to
// the block's absmax, the non-linear "dynamic" idea of Dettmers et al. 2022 (most codes near
// zero, relative precision instead of absolute), written as a float format so that both
// directions are a few integer operations (they vectorize on the CPU; no table search):
//   signed map (first moments, momentum):   sign bit + 4 exponent bits + 3 mantissa bits
//   unsigned map (non-negative states):     5 exponent bits + 3 mantissa bits, no sign
// Both have subnormals and the largest code is 1.875 = 0b1.111, which the block's absmax maps
// to exactly: x = v * (1.875 / absmax) is rounded to the nearest code (ties to even), and a
// code c decodes to value(c) * (absmax / 1.875). Relative precision is 1/16 everywhere; the
// signed range is 2^-17 of absmax, the unsigned one 2^-33 (a second moment is a square, so it
// needs twice the exponent range of the first moment it normalizes). Both directions are exact
// float32 operations in a fixed order (no contraction), so a NumPy float32 reference
// reproduces every code bit for bit (tests/reference.py: quantize_block).
// Non-finite values: absmax is the NaN-propagating maximum, so a block holding an inf or NaN
// decodes to non-finite values only (a diverged run stays visibly diverged). The unsigned map
// stores negative values (never produced by the rules that declare a state non-negative) as 0.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "genesis/dtype.h"
#include "genesis/macros.h"
#include "genesis/rules/spec.h"
#include "genesis/tensor_slots.h"
#include "genesis/update_element.h"

namespace genesis {

// Elements per block (one float32 absmax each: 4/256 = 0.016 bytes per element on top of the
// code). A block never straddles two tensors; the last block of a tensor may be shorter.
constexpr int kQuantBlock = 256;
// Tensors with fewer elements keep float32 state (the default of `min_8bit_size`): their
// state is a negligible share of the memory, and per-block overhead would dominate them.
constexpr int64_t kDefaultMin8BitSize = 4096;
// The largest code value, which the block's absmax maps to.
constexpr float kQuantMax = 1.875f;

GENESIS_HD int64_t quant_blocks(int64_t numel) { return (numel + kQuantBlock - 1) / kQuantBlock; }

// kBias: the exponent bias (15 signed, 31 unsigned); kMaxMag: the largest magnitude code.
template <bool kUnsigned>
struct QuantMap {
  static constexpr uint32_t kBias = kUnsigned ? 31 : 15;
  static constexpr uint32_t kMaxMag = kUnsigned ? 255 : 127;
  // float32 bits of the smallest normal magnitude, 2^(1 - bias)
  static constexpr uint32_t kMinNormal = (128 - kBias) << 23;
  // A float whose spacing is the subnormal step 2^(-bias - 2): adding it rounds to that step.
  static constexpr uint32_t kSubnormalAnchor = (128 - kBias + 20) << 23;
};

// A normalized value x (|x| <= 1.875, or non-finite) -> its code.
template <bool kUnsigned>
GENESIS_HD uint32_t encode_code(float x) {
  using M = QuantMap<kUnsigned>;
  const uint32_t u = float_to_bits(x);
  const uint32_t a = u & 0x7FFFFFFFu;
  // Normal: rebias the exponent and round the 20 dropped mantissa bits to nearest even.
  const uint32_t normal = ((a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) - ((127u - M::kBias) << 3);
  // Subnormal: the FPU's own rounding places the step count at the bottom of the anchor.
  const uint32_t subnormal = float_to_bits(bits_to_float(a) + bits_to_float(M::kSubnormalAnchor)) - M::kSubnormalAnchor;
  uint32_t mag = a < M::kMinNormal ? subnormal : normal;
  mag = mag > M::kMaxMag ? M::kMaxMag : mag;  // NaN and rounding past 1.875 saturate
  if constexpr (kUnsigned) return (u >> 31) ? 0u : mag;
  return ((u >> 24) & 0x80u) | mag;
}

// A code -> its normalized value (exact).
template <bool kUnsigned>
GENESIS_HD float decode_code(uint32_t c) {
  using M = QuantMap<kUnsigned>;
  const uint32_t mag = c & M::kMaxMag;
  const float normal = bits_to_float((mag + ((127u - M::kBias) << 3)) << 20);
  // Subnormals are m * 2^(-bias - 2), computed without ever forming a denormal float.
  const float subnormal = float(mag & 7u) * bits_to_float((127u - M::kBias - 2u) << 23);
  const float v = (mag >> 3) ? normal : subnormal;
  if constexpr (kUnsigned) return v;
  return bits_to_float(float_to_bits(v) | ((c & 0x80u) << 24));
}

// The NaN-propagating largest magnitude of n values: the integer maximum of their magnitude
// bits (NaN > inf > every finite value as integers), folded in one value at a time by
// max_magnitude (starting from 0) and read back with bits_to_float.
GENESIS_HD uint32_t max_magnitude(uint32_t m, float x) {
  const uint32_t a = float_to_bits(x) & 0x7FFFFFFFu;
  return a > m ? a : m;
}
GENESIS_HD float block_absmax(const float* GENESIS_RESTRICT v, int n) {
  uint32_t m = 0;
  for (int j = 0; j < n; ++j) m = max_magnitude(m, v[j]);
  return bits_to_float(m);
}

// The factor that maps a block onto the codes: 1.875 / absmax, or 0 for a block whose absmax
// is zero or denormal (all its codes are then 0) or NaN (it decodes to NaN whatever its codes).
GENESIS_HD float quant_factor(float absmax) { return absmax >= 1.17549435e-38f ? kQuantMax / absmax : 0.0f; }
GENESIS_HD float dequant_factor(float absmax) { return absmax / kQuantMax; }

// The codes of n values whose block_absmax is known.
template <bool kUnsigned>
GENESIS_HD void encode_codes_map(const float* GENESIS_RESTRICT v, int n, float absmax,
                                 uint8_t* GENESIS_RESTRICT codes) {
  const float q = quant_factor(absmax);
  for (int j = 0; j < n; ++j) codes[j] = static_cast<uint8_t>(encode_code<kUnsigned>(v[j] * q));
}

template <bool kUnsigned>
GENESIS_HD void encode_block_map(const float* GENESIS_RESTRICT v, int n, uint8_t* GENESIS_RESTRICT codes,
                                 float* absmax) {
  *absmax = block_absmax(v, n);
  encode_codes_map<kUnsigned>(v, n, *absmax, codes);
}

template <bool kUnsigned>
GENESIS_HD void decode_block_map(const uint8_t* GENESIS_RESTRICT codes, float absmax, int n,
                                 float* GENESIS_RESTRICT v) {
  const float d = dequant_factor(absmax);
  for (int j = 0; j < n; ++j) v[j] = decode_code<kUnsigned>(codes[j]) * d;
}

// One block (n <= kQuantBlock values) to codes and its absmax, and back. The branch on the map
// is per block, so each loop is straight-line code.
GENESIS_HD void encode_block(const float* v, int n, uint8_t* codes, float* absmax, bool unsigned_map) {
  if (unsigned_map) return encode_block_map<true>(v, n, codes, absmax);
  encode_block_map<false>(v, n, codes, absmax);
}
GENESIS_HD void decode_block(const uint8_t* codes, float absmax, int n, float* v, bool unsigned_map) {
  if (unsigned_map) return decode_block_map<true>(codes, absmax, n, v);
  decode_block_map<false>(codes, absmax, n, v);
}

// A whole array (the Python and C++ APIs' conversions: loading a float32 checkpoint into an
// 8-bit optimizer, reading 8-bit state back as float32). absmax has quant_blocks(n) entries.
inline void quantize_array(const float* v, int64_t n, uint8_t* codes, float* absmax, bool unsigned_map) {
  for (int64_t b = 0; b * kQuantBlock < n; ++b) {
    const int64_t lo = b * kQuantBlock;
    const int len = static_cast<int>(n - lo < kQuantBlock ? n - lo : kQuantBlock);
    encode_block(v + lo, len, codes + lo, absmax + b, unsigned_map);
  }
}
inline void dequantize_array(const uint8_t* codes, const float* absmax, int64_t n, float* v, bool unsigned_map) {
  for (int64_t b = 0; b * kQuantBlock < n; ++b) {
    const int64_t lo = b * kQuantBlock;
    const int len = static_cast<int>(n - lo < kQuantBlock ? n - lo : kQuantBlock);
    decode_block(codes + lo, absmax[b], len, v + lo, unsigned_map);
  }
}

// NOTE: [non-negative states]
// A rule's RuleSpec may declare which of its state arrays never go negative
// (`static std::vector<std::string> nonnegative_states(const Options&)`, e.g. Adam's second
// moments): those use the unsigned map, which spends the sign bit on precision and range. The
// declaration is storage metadata next to state_names(); the math (apply) does not change.
// A rule that declares nothing gets the signed map everywhere, which is always correct.
template <typename O, typename = void>
struct HasNonNegativeStates : std::false_type {};
template <typename O>
struct HasNonNegativeStates<O, std::void_t<decltype(RuleSpec<O>::nonnegative_states(std::declval<const O&>()))>>
    : std::true_type {};

template <typename O>
std::vector<std::string> nonnegative_states(const O& o) {
  if constexpr (HasNonNegativeStates<O>::value) {
    return RuleSpec<O>::nonnegative_states(o);
  } else {
    (void)o;
    return {};
  }
}

// Bit k set: state slot k uses the unsigned map.
template <typename O>
unsigned unsigned_state_mask(const O& o) {
  const std::vector<std::string> names = RuleSpec<O>::state_names(o);
  const std::vector<std::string> nonneg = nonnegative_states(o);
  unsigned mask = 0;
  for (size_t k = 0; k < names.size(); ++k)
    for (const std::string& n : nonneg)
      if (n == names[k]) mask |= 1u << k;
  return mask;
}

// The checks both backends make before an 8-bit step (NOTE: [8-bit state maps]): float32 or
// 16-bit parameters, and the codes and block scales of every state array present.
inline void check_quantized_slots(const char* op, DType param, const TensorSlots* tensors, int64_t count, int states) {
  if (param != DType::Float32 && param != DType::Float16 && param != DType::BFloat16)
    throw std::invalid_argument(std::string(op) + ": 8-bit state is not supported for " + dtype_name(param) +
                                " parameters");
  for (int64_t t = 0; t < count; ++t)
    for (int k = 0; k < states; ++k)
      if (!tensors[t].state[k] || !tensors[t].absmax[k])
        throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) +
                                    " has 8-bit state without its codes or block scales");
}

// The storage dispatch of an 8-bit step, shared by both backends: the checks above, then
// quantized(P{}, store) for the parameter storage P (float32 or 16-bit) and its store, or, for a
// rule without state (nothing to quantize), stateless(P{}, S{}, store) as a float32-state step.
// The parameter dispatch is the float32-state one; float64 parameters are refused by the checks
// and not instantiated.
template <int kStates, typename Quantized, typename Stateless>
void dispatch_quantized_storage(const char* op, const StepConfig& config, const TensorSlots* tensors, int64_t count,
                                Quantized&& quantized, Stateless&& stateless) {
  check_quantized_slots(op, config.param_dtype, tensors, count, kStates);
  StepConfig dense = config;
  dense.state_dtype = DType::Float32;
  dispatch_storage(op, dense, [&](auto param, auto state, auto store) {
    if constexpr (kStates == 0) {
      stateless(param, state, store);
    } else if constexpr (!std::is_same_v<decltype(param), double>) {
      quantized(param, store);
    }
  });
}

}  // namespace genesis
