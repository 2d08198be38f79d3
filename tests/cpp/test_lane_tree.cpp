// The CPU's lane tree (csrc/cpu/lane_tree.h), three levels per sweep, against the tree it
// stands for, one level at a time (the order the CUDA driver adds in): the same bits for every
// lane count, with addends of many magnitudes and both signs, where another order of the same
// additions would round differently.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"

#define GENESIS_CPU_VARIANT lane_tree_test
#include "cpu/lane_tree.h"

namespace {

double level_by_level(std::vector<double> a, int lanes) {
  for (int s = lanes / 2; s > 0; s /= 2)
    for (int j = 0; j < s; ++j) a[j] += a[j + s];
  return a[0];
}

}  // namespace

TEST(lane_tree_sweeps_keep_the_trees_bits) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> mantissa(-1.0, 1.0);
  std::uniform_int_distribution<int> exponent(-40, 40);
  for (int lanes = 1; lanes <= 512; lanes *= 2) {
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<double> a(lanes);
      for (double& x : a) x = std::ldexp(mantissa(rng), exponent(rng));
      const double want = level_by_level(a, lanes);
      std::vector<double> swept = a;
      const double got = genesis::cpu::lane_tree_test::combine_lanes(swept.data(), lanes);
      CHECK(std::memcmp(&got, &want, sizeof(double)) == 0);
    }
  }
}
