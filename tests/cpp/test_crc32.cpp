// The checkpoint codec's CRC-32 (csrc/api/crc32.cpp, PCLMULQDQ folding where the CPU has it)
// against zlib's for every length up to 4 KiB, unaligned starts and non-zero initial values.
#include <zlib.h>

#include <random>
#include <vector>

#include "check.h"
#include "crc32.h"

TEST(crc32_matches_zlib) {
  std::mt19937 rng(7);
  std::vector<unsigned char> data((1 << 20) + 64);
  for (unsigned char& b : data) b = static_cast<unsigned char>(rng());
  int mismatches = 0;
  for (size_t n = 0; n <= 4096; ++n)
    for (uint32_t start : {0u, 0xDEADBEEFu}) {
      const unsigned char* p = data.data() + n % 16;
      mismatches += genesis::checkpoint::crc32(start, p, n) != static_cast<uint32_t>(crc32_z(start, p, n));
    }
  CHECK(mismatches == 0);
  CHECK(genesis::checkpoint::crc32(0, data.data() + 3, 1 << 20) ==
        static_cast<uint32_t>(crc32_z(0, data.data() + 3, 1 << 20)));
  // Continuing from a previous CRC is the same as one pass (the chunked reader relies on it).
  const uint32_t first = genesis::checkpoint::crc32(0, data.data(), 1000);
  CHECK(genesis::checkpoint::crc32(first, data.data() + 1000, 5000) ==
        static_cast<uint32_t>(crc32_z(0, data.data(), 6000)));
}
