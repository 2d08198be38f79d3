// The hand-vectorized block codecs of the 8-bit state (csrc/cpu/quantized_avx512.h and
// quantized_avx2.h) against their portable definition (include/genesis/quantized.h), bit for
// bit: the encode of every one of the 2^32 float32 bit patterns under both maps, and every code
// decoded and re-encoded under block scales from zero through the denormals to inf and NaN.
// Built twice, with the avx2 variant's flags (checks the AVX2 codecs) and with the avx512
// variant's (checks both); exits 77 (skipped) on a CPU that lacks the instructions.
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>

#define GENESIS_CPU_VARIANT codec_test
#include "cpu/quantized_avx2.h"
#include "cpu/quantized_avx512.h"

#ifndef GENESIS_QUANT_AVX2
#error "compile with the avx2 or avx512 variant's flags"
#endif

using namespace genesis;
using namespace genesis::cpu::codec_test;

namespace {

constexpr int kLanes = 32;  // a multiple of both codecs' vector lengths

struct Avx2 {
  static const char* name() { return "AVX2"; }
  static bool cpu_has() {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }
  template <bool kUnsigned>
  static void encode(const float* x, uint8_t* codes) {  // kLanes normalized values
    for (int j = 0; j < kLanes; j += 8) {
      alignas(32) uint32_t lanes[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), encode8<kUnsigned>(_mm256_loadu_ps(x + j)));
      for (int i = 0; i < 8; ++i) codes[j + i] = uint8_t(lanes[i]);
    }
  }
  template <bool kUnsigned>
  static void decode_block(const uint8_t* c, float absmax, float* v) {
    decode_block_avx2<kUnsigned>(c, absmax, v);
  }
  template <bool kUnsigned>
  static void encode_block(const float* v, uint8_t* c, float* absmax) {
    encode_block_avx2<kUnsigned>(v, c, absmax);
  }
};

#ifdef GENESIS_QUANT_AVX512
struct Avx512 {
  static const char* name() { return "AVX-512"; }
  static bool cpu_has() {
    return Avx2::cpu_has() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }
  template <bool kUnsigned>
  static void encode(const float* x, uint8_t* codes) {
    for (int j = 0; j < kLanes; j += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + j), encode16<kUnsigned>(_mm512_loadu_ps(x + j)));
  }
  template <bool kUnsigned>
  static void decode_block(const uint8_t* c, float absmax, float* v) {
    decode_block_avx512<kUnsigned>(c, absmax, v);
  }
  template <bool kUnsigned>
  static void encode_block(const float* v, uint8_t* c, float* absmax) {
    encode_block_avx512<kUnsigned>(v, c, absmax);
  }
};
#endif

const char* map_name(bool unsigned_map) { return unsigned_map ? "unsigned" : "signed"; }

template <typename Codec, bool kUnsigned>
long encode_every_float() {
  long bad = 0;
  alignas(64) float x[kLanes];
  uint8_t codes[kLanes];
  for (uint64_t base = 0; base < (uint64_t(1) << 32); base += kLanes) {
    for (int i = 0; i < kLanes; ++i) x[i] = bits_to_float(uint32_t(base + i));
    Codec::template encode<kUnsigned>(x, codes);
    for (int i = 0; i < kLanes; ++i) {
      const uint32_t expected = encode_code<kUnsigned>(x[i]);
      if (codes[i] != expected && ++bad <= 5)
        std::printf("  %s, %s map: 0x%08x encodes to %u, expected %u\n", Codec::name(), map_name(kUnsigned),
                    uint32_t(base + i), codes[i], expected);
    }
  }
  return bad;
}

template <typename Codec, bool kUnsigned>
long every_code_every_scale() {
  // (2^31 and the float below it: either side of where the unsigned decode by exponent stops,
  // NOTE: [unsigned codes at the exponent] in csrc/cpu/unsigned_decode.h)
  const float scales[] = {0.0f,    1e-45f,   1e-40f, 1.17549435e-38f, 2e-38f,  1e-30f,    3.3e-5f,
                          1.0f,    1.875f,   7.5f,   0x1.fffffep30f,  0x1p31f, 0x1.2p40f, 1e30f,
                          FLT_MAX, INFINITY, NAN,    -0.0f,           -2.0f};
  alignas(64) uint8_t codes[kQuantBlock];
  for (int i = 0; i < kQuantBlock; ++i) codes[i] = uint8_t(i);
  long bad = 0;
  for (float scale : scales) {
    alignas(64) float fast[kQuantBlock], portable[kQuantBlock];
    Codec::template decode_block<kUnsigned>(codes, scale, fast);
    decode_block_map<kUnsigned>(codes, scale, kQuantBlock, portable);
    uint8_t fast_codes[kQuantBlock], portable_codes[kQuantBlock];
    float fast_absmax, portable_absmax;
    Codec::template encode_block<kUnsigned>(portable, fast_codes, &fast_absmax);
    encode_block_map<kUnsigned>(portable, kQuantBlock, portable_codes, &portable_absmax);
    const bool same = std::memcmp(fast, portable, sizeof fast) == 0 &&
                      std::memcmp(fast_codes, portable_codes, sizeof fast_codes) == 0 &&
                      std::memcmp(&fast_absmax, &portable_absmax, sizeof fast_absmax) == 0;
    if (!same) {
      ++bad;
      std::printf("  %s, %s map, block scale %g: the codecs differ\n", Codec::name(), map_name(kUnsigned), scale);
    }
  }
  return bad;
}

template <typename Codec>
long check() {
  long bad = every_code_every_scale<Codec, false>() + every_code_every_scale<Codec, true>() +
             encode_every_float<Codec, false>() + encode_every_float<Codec, true>();
  // Again with denormals-are-zero set (torch.set_flush_denormal(True) sets it): the unsigned
  // decode's fast path, whose subnormal codes are float32 denormals, must step aside.
  const unsigned mxcsr = _mm_getcsr();
  _mm_setcsr(mxcsr | 0x0040u);
  bad += every_code_every_scale<Codec, false>() + every_code_every_scale<Codec, true>();
  _mm_setcsr(mxcsr);
  std::printf("%s codecs: %ld mismatches\n", Codec::name(), bad);
  return bad;
}

}  // namespace

int main() {
  __builtin_cpu_init();
#ifdef GENESIS_QUANT_AVX512
  using Widest = Avx512;
#else
  using Widest = Avx2;
#endif
  if (!Widest::cpu_has()) {
    std::printf("skipped: this CPU has no %s\n", Widest::name());
    return 77;
  }
  long bad = check<Avx2>();
#ifdef GENESIS_QUANT_AVX512
  bad += check<Avx512>();
#endif
  std::printf("%s\n", bad ? "FAILED" : "passed");
  return bad ? 1 : 0;
}
