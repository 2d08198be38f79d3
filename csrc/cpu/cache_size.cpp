// The size of the last-level cache, for the reduction driver's cache-blocked schedule
// (csrc/cpu/reduce_driver.h). Read from Linux's sysfs, which describes the caches the kernel
// sees; glibc's sysconf(_SC_LEVEL3_CACHE_SIZE) reads cpuid, which in virtual machines can
// report the host's whole package (320 MiB on the 2-core development VM, whose sysfs says 32).
#include <cstdint>
#include <fstream>
#include <string>

#include "genesis/cpu.h"

namespace genesis::cpu {
namespace {

constexpr int64_t kUnknownCache = int64_t(8) << 20;  // a conservative guess where sysfs is absent

// "32768K" -> 33554432; 0 for anything else.
int64_t parse_size(const std::string& text) {
  std::size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (...) {
    return 0;
  }
  const std::string unit = text.substr(used, 1);
  if (unit == "K") return value << 10;
  if (unit == "M") return value << 20;
  if (unit == "G") return value << 30;
  return value;
}

int64_t read_last_level_cache() {
  int best_level = 0;
  int64_t best = 0;
  for (int index = 0; index < 16; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size"), type_file(dir + "type");
    int level = 0;
    std::string size, type;
    if (!(level_file >> level) || !(size_file >> size) || !(type_file >> type)) break;
    if (type == "Instruction" || level < best_level) continue;
    best_level = level;
    best = parse_size(size);
  }
  return best > 0 ? best : kUnknownCache;
}

}  // namespace

int64_t last_level_cache_bytes() {
  static const int64_t bytes = read_last_level_cache();
  return bytes;
}

}  // namespace genesis::cpu
