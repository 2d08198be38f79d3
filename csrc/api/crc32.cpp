// CRC-32 (zlib's polynomial, reflected) with PCLMULQDQ folding on x86-64.
//
// NOTE: [CRC folding]
// CRC-32 is the remainder of the message polynomial (times x^32) modulo P. Folding keeps four
// 128-bit accumulators and, every 64 bytes, replaces each accumulator A by A * x^512 mod P
// added to the next 16 bytes: the remainder of the whole message is unchanged, and the
// multiply is two carry-less 64x64 products, one per half of A. In the bit-reflected order the
// CRC uses, the low half of A is the earlier (higher-degree) half, so it takes the constant
// x^(512+32) mod P and the high half x^(512-32) mod P (each bit-reflected and shifted left by
// one, the form PCLMULQDQ on reflected data needs). Folding by 16 bytes uses x^(128+32) and
// x^(128-32) the same way. What remains, one accumulator and fewer than 16 further bytes, has
// the same CRC as the message, so zlib finishes those at most 31 bytes. The initial CRC enters
// by XOR into the first four bytes, as a CRC register's initial value does.
// tests/cpp/test_checkpoint.cpp compares the result with zlib for every length up to 4096.
#include "crc32.h"

#include <zlib.h>

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GENESIS_CRC32_FOLD 1
#endif

namespace genesis::checkpoint {

namespace {

uint32_t crc32_zlib(uint32_t crc, const unsigned char* p, size_t n) {
  return static_cast<uint32_t>(crc32_z(crc, p, n));
}

#ifdef GENESIS_CRC32_FOLD

__attribute__((target("pclmul,sse4.1"))) inline __m128i fold(__m128i a, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x00), _mm_clmulepi64_si128(a, k, 0x11));
}

__attribute__((target("pclmul,sse4.1"))) inline __m128i load(const unsigned char* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

// n >= 64.
__attribute__((target("pclmul,sse4.1"))) uint32_t crc32_fold(uint32_t crc, const unsigned char* p, size_t n) {
  const __m128i by64 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4);  // x^480, x^544 (high, low)
  const __m128i by16 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0);  // x^96, x^160
  __m128i a0 = _mm_xor_si128(load(p), _mm_cvtsi32_si128(static_cast<int>(~crc)));
  __m128i a1 = load(p + 16), a2 = load(p + 32), a3 = load(p + 48);
  for (p += 64, n -= 64; n >= 64; p += 64, n -= 64) {
    a0 = _mm_xor_si128(fold(a0, by64), load(p));
    a1 = _mm_xor_si128(fold(a1, by64), load(p + 16));
    a2 = _mm_xor_si128(fold(a2, by64), load(p + 32));
    a3 = _mm_xor_si128(fold(a3, by64), load(p + 48));
  }
  __m128i a = _mm_xor_si128(fold(a0, by16), a1);
  a = _mm_xor_si128(fold(a, by16), a2);
  a = _mm_xor_si128(fold(a, by16), a3);
  for (; n >= 16; p += 16, n -= 16) a = _mm_xor_si128(fold(a, by16), load(p));
  unsigned char rest[32];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(rest), a);
  std::memcpy(rest + 16, p, n);
  // The accumulator already carries the initial value: finish with a zero register (zlib's
  // crc argument is the complement of its register).
  return crc32_zlib(0xFFFFFFFFu, rest, 16 + n);
}

bool cpu_has_fold() {
  static const bool has = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return has;
}

#endif

}  // namespace

uint32_t crc32(uint32_t crc, const unsigned char* p, size_t n) {
#ifdef GENESIS_CRC32_FOLD
  if (n >= 64 && cpu_has_fold()) return crc32_fold(crc, p, n);
#endif
  return crc32_zlib(crc, p, n);
}

}  // namespace genesis::checkpoint
