// The matrix product of include/genesis/matmul.h in one instruction-set variant.
//
// b is first packed, by all threads, into panels of kLine<T> columns (each panel all k rows
// of its columns, contiguous), so the inner loop reads b contiguously whatever n is (a row
// stride of 4 KB would alias in L1). That is the one barrier. Then c is cut into work items of
// kChunk rows x one column block of kPanels<T> panels; a thread takes items one at a time
// (dynamic schedule: a thread the OS delays holds up nobody) and computes each whole, so
// nothing is summed across threads. Within an item, the depth is walked in blocks of kDepth:
// a block of b (256 KB) stays in the thread's L2 while every row tile of the item passes over
// it, and c is computed in tiles of kRows rows x kLine<T> columns held in registers. Across
// the depth blocks a tile resumes from the sums c holds, so every element adds its products in
// k order.
#include <algorithm>
#include <cstring>
#include <vector>

#include "genesis/matmul.h"
#include "kernels.h"
#include "threads.h"

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

// A tile of c is kRows rows x kLine<T> columns: two vectors per row, twelve accumulators, which
// with the panel row (two) and the broadcast element of a fill 15 of the 16 vector registers
// (AVX2 and SSE2 alike).
constexpr int64_t kRows = 6;
constexpr int64_t kVecs = 2;
template <typename T>
constexpr int64_t kLine = kVecs * kVectorBytes / sizeof(T);
constexpr int64_t kDepth = 256;
// A block of b is kDepth rows x kPanels<T> panels of kLine<T> columns: 256 KB.
template <typename T>
constexpr int64_t kPanels = (int64_t(256) << 10) / (kDepth * kLine<T> * int64_t(sizeof(T)));
// The rows of c in one work item (a multiple of kRows): each block of b is read into L2 once
// for them.
constexpr int64_t kChunk = 60;
// Products under about 2 MFLOP take less time than waking the threads.
constexpr int64_t kParallelWork = int64_t(1) << 20;

// b[0 : k, j0 : j0+kLine) as k rows of kVecs vectors, the columns past n zero.
template <typename T>
void pack_panel(const T* b, int64_t n, int64_t k, int64_t j0, Vec<T>* panel) {
  const size_t bytes = static_cast<size_t>(std::min(kLine<T>, n - j0)) * sizeof(T);
  for (int64_t p = 0; p < k; ++p) {
    Vec<T> line[kVecs] = {};
    std::memcpy(line, b + p * n + j0, bytes);
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
  constexpr int64_t W = kLine<T>, kWidth = kPanels<T> * W;
  const int64_t panels = (n + W - 1) / W;
  const int64_t chunks = (m + kChunk - 1) / kChunk, blocks = (n + kWidth - 1) / kWidth;
  std::vector<Vec<T>> packed(static_cast<size_t>(panels * k * kVecs));
#pragma omp parallel num_threads(region_threads(m * n * k >= kParallelWork))
  {
#pragma omp for schedule(static)
    for (int64_t q = 0; q < panels; ++q) pack_panel(b, n, k, q * W, packed.data() + q * k * kVecs);
    // (the implicit barrier: b is packed before any item reads it)
#pragma omp for schedule(dynamic) nowait
    for (int64_t item = 0; item < chunks * blocks; ++item) {
      const int64_t i0 = item / blocks * kChunk, i1 = std::min(m, i0 + kChunk);
      const int64_t q0 = item % blocks * kPanels<T>, q1 = std::min(panels, q0 + kPanels<T>);
      for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
        const int64_t depth = std::min(kDepth, k - k0);
        for (int64_t i = i0; i < i1; i += kRows) {
          const int64_t rows = std::min(kRows, i1 - i);
          const T* at = a + i * k + k0;
          for (int64_t q = q0; q < q1; ++q) {
            const Vec<T>* panel = packed.data() + (q * k + k0) * kVecs;
            T* ct = c + i * n + q * W;
            const int64_t cols = std::min(W, n - q * W);
            if (rows == kRows) {
              tile<kRows>(depth, at, k, panel, ct, n, cols, k0 == 0);
            } else {
              for (int64_t r = 0; r < rows; ++r) tile<1>(depth, at + r * k, k, panel, ct + r * n, n, cols, k0 == 0);
            }
          }
        }
      }
    }
  }
}

template void matmul<float>(int64_t, int64_t, int64_t, const float*, const float*, float*);
template void matmul<double>(int64_t, int64_t, int64_t, const double*, const double*, double*);

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
