// The CPU's lane tree of a Sum task (NOTE: [reduction rules] in include/genesis/reduce.h): the
// order in which a task's per-lane sums become its result, which the CUDA driver's tree in
// shared memory follows too (csrc/cuda/reduce_kernel.cuh), so that both backends agree bit for
// bit. tests/cpp/test_lane_tree.cpp holds it to the tree level by level.
#pragma once

namespace genesis::cpu::GENESIS_CPU_VARIANT {

// For s = lanes / 2 down to 1, lane j += lane j + s (lanes a power of two); returns lane 0.
// Three levels per sweep over the lanes: lane j < s / 4 adds its eight addends in the tree's own
// pairs, so the result has the tree's bits. A sweep per level stored every partial sum for the
// next level to reload, and for a 1000-column row (512 lanes) that was a quarter of the row's
// time in Adafactor's first pass (docs/performance.md).
inline double combine_lanes(double* a, int lanes) {
  int s = lanes / 2;
  for (; s >= 4; s /= 8) {
    const int h = s / 2, q = s / 4;
    for (int j = 0; j < q; ++j)
      a[j] = ((a[j] + a[j + s]) + (a[j + h] + a[j + h + s])) +
             ((a[j + q] + a[j + q + s]) + (a[j + q + h] + a[j + q + h + s]));
  }
  for (; s > 0; s /= 2)
    for (int j = 0; j < s; ++j) a[j] += a[j + s];
  return a[0];
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
