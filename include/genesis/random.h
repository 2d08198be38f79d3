// The counter-based generator behind stochastic rounding: a pure function of (key, index), so
// results are reproducible, need no state, and are the same on every backend.
#pragma once

#include <cstdint>

#include "genesis/macros.h"

namespace genesis {

// A 32-bit integer mixer (the "lowbias32" constants of Chris Wellons' hash-prospector): each
// input bit flips each output bit with probability close to 1/2.
GENESIS_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// One key per (seed, tensor, step), computed once per tensor on the host.
GENESIS_HD uint32_t stream_key(uint64_t seed, uint64_t tensor, uint64_t counter) {
  uint32_t k = mix32(static_cast<uint32_t>(seed) ^ 0x9E3779B9u);
  k = mix32(k ^ static_cast<uint32_t>(seed >> 32));
  k = mix32(k ^ static_cast<uint32_t>(tensor));
  k = mix32(k ^ static_cast<uint32_t>(tensor >> 32));
  k = mix32(k ^ static_cast<uint32_t>(counter));
  return mix32(k ^ static_cast<uint32_t>(counter >> 32));
}

// The key of the elements whose index has `high` as its upper 32 bits: the key itself for the
// first 2^32 elements of a tensor (every tensor in practice), a remixed one beyond.
GENESIS_HD uint32_t block_key(uint32_t key, uint64_t high) {
  return high == 0 ? key : mix32(key ^ static_cast<uint32_t>(high));
}

// The random bits of the element whose index has `low` as its lower 32 bits, in the stream
// `key` (already adjusted by block_key for the upper bits). Only 32-bit arithmetic, so the CPU
// loop vectorizes. Multiplying by an odd constant (a bijection) first spreads neighbouring
// indices, which differ in few bits, over the whole word before the full mix.
GENESIS_HD uint32_t random_bits(uint32_t key, uint32_t low) { return mix32((low * 0x9E3779B1u) ^ key); }

}  // namespace genesis
