// CRC-32 as zlib and Python's zlib.crc32 compute it (internal to the checkpoint codec).
#pragma once

#include <cstddef>
#include <cstdint>

namespace genesis::checkpoint {

// The CRC-32 of p[0..n), continuing from `crc` (0 to start). On x86-64 CPUs with PCLMULQDQ it
// folds 64 bytes per step with carry-less multiplies (~3x zlib's table method); elsewhere,
// and for short inputs, it is zlib's crc32_z.
uint32_t crc32(uint32_t crc, const unsigned char* p, size_t n);

}  // namespace genesis::checkpoint
