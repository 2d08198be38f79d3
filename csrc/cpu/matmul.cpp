// The matrix product of include/genesis/matmul.h in one instruction-set variant.
//
// Blocking: c is computed in tiles of kRows rows x kCols<T> columns (one 64-byte cache line of
// T) held in registers: 4 rows x 2 AVX2 vectors, 8 accumulators, leave registers for the row of
// b and the broadcast element of a. b is packed block by block (kDepth rows x kWidth<T>
// columns, 256 KB, shared by the threads and kept in L2) into column panels of kCols<T>, so a
// tile's inner loop reads b contiguously whatever n is (a row stride of 4 KB would alias in L1).
// Threads split the row tiles of c; nothing is summed across threads. Across the depth blocks a
// tile resumes from the sums c holds, so every element adds its products in k order.
#include <algorithm>
#include <cstring>
#include <vector>

#include "genesis/matmul.h"
#include "kernels.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

namespace {

// A native vector of T (GCC/Clang vector extension): an AVX2 register in the avx2 variant, an
// SSE2 one in the baseline. Lane-wise arithmetic rounds each lane as scalar code would.
#ifdef __AVX2__
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

// A tile of c is kRows rows x kLine<T> columns: two vectors per row, eight accumulators in all,
// which leaves registers for the panel row and the broadcast element of a.
constexpr int64_t kRows = 4;
constexpr int64_t kVecs = 2;
template <typename T>
constexpr int64_t kLine = kVecs * kVectorBytes / sizeof(T);
constexpr int64_t kDepth = 256;
constexpr int64_t kPanels = 32;
constexpr int64_t kParallelWork = int64_t(1) << 20;  // a block of b: kDepth x kPanels lines, 128-256 KB

// b[k0 : k0+depth, j0 : j0+kLine) as `depth` rows of kVecs vectors, the columns past n zero.
template <typename T>
void pack_panel(const T* b, int64_t n, int64_t k0, int64_t depth, int64_t j0, Vec<T>* panel) {
  const size_t bytes = static_cast<size_t>(std::min(kLine<T>, n - j0)) * sizeof(T);
  for (int64_t p = 0; p < depth; ++p) {
    Vec<T> line[kVecs] = {};
    std::memcpy(line, b + (k0 + p) * n + j0, bytes);
    for (int v = 0; v < kVecs; ++v) panel[p * kVecs + v] = line[v];
  }
}

// c[0:R, 0:cols] (row stride n) += a[0:R, 0:depth] (row stride k) @ panel, or = when `first`.
// R is a compile-time constant and no accumulator has its address taken, so they stay in
// registers; c moves through the `line` temporaries.
template <int R, typename T>
void tile(int64_t depth, const T* a, int64_t k, const Vec<T>* panel, T* c, int64_t n, int64_t cols, bool first) {
  const size_t bytes = static_cast<size_t>(cols) * sizeof(T);
  Vec<T> acc[R][kVecs];
  for (int r = 0; r < R; ++r) {
    Vec<T> line[kVecs] = {};
    if (!first) std::memcpy(line, c + r * n, bytes);
    for (int v = 0; v < kVecs; ++v) acc[r][v] = line[v];
  }
  for (int64_t p = 0; p < depth; ++p) {
    const Vec<T>* row = panel + p * kVecs;
    for (int r = 0; r < R; ++r) {
      const T x = a[r * k + p];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += x * row[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    Vec<T> line[kVecs];
    for (int v = 0; v < kVecs; ++v) line[v] = acc[r][v];
    std::memcpy(c + r * n, line, bytes);
  }
}

}  // namespace

template <typename T>
void matmul(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    std::fill(c, c + m * n, T(0));
    return;
  }
  constexpr int64_t W = kLine<T>;
  std::vector<Vec<T>> packed(static_cast<size_t>(kDepth * kPanels * kVecs));  // shared by the threads
  Vec<T>* const panels = packed.data();
  const int64_t row_tiles = (m + kRows - 1) / kRows;
  // Products under about 2 MFLOP take less time than waking the threads.
#pragma omp parallel if (m * n * k >= kParallelWork)
  for (int64_t j0 = 0; j0 < n; j0 += kPanels * W) {
    const int64_t width = std::min(kPanels * W, n - j0);
    const int64_t count = (width + W - 1) / W;
    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
      const int64_t depth = std::min(kDepth, k - k0);
#pragma omp for schedule(static)
      for (int64_t q = 0; q < count; ++q) pack_panel(b, n, k0, depth, j0 + q * W, panels + q * depth * kVecs);
      // (the implicit barrier: every panel is packed before any tile reads one)
#pragma omp for schedule(static)
      for (int64_t t = 0; t < row_tiles; ++t) {
        const int64_t i = t * kRows, rows = std::min(kRows, m - i);
        const T* at = a + i * k + k0;
        for (int64_t q = 0; q < count; ++q) {
          const Vec<T>* panel = panels + q * depth * kVecs;
          T* ct = c + i * n + j0 + q * W;
          const int64_t cols = std::min(W, width - q * W);
          if (rows == kRows) {
            tile<kRows>(depth, at, k, panel, ct, n, cols, k0 == 0);
          } else {
            for (int64_t r = 0; r < rows; ++r) tile<1>(depth, at + r * k, k, panel, ct + r * n, n, cols, k0 == 0);
          }
        }
      }
      // (the implicit barrier: no thread repacks while another still reads the panels)
    }
  }
}

template void matmul<float>(int64_t, int64_t, int64_t, const float*, const float*, float*);
template void matmul<double>(int64_t, int64_t, int64_t, const double*, const double*, double*);

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
