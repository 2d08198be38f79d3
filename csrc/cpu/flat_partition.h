// Splits the concatenation of many tensors into equal ranges, so one OpenMP region can balance a
// whole parameter group across threads no matter how its elements are spread over tensors.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "threads.h"

// In the variant's namespace: each instruction-set build must keep its own copies of these
// templates (the linker would otherwise fold both builds onto one, see csrc/cpu/kernels.h).
namespace genesis::cpu::GENESIS_CPU_VARIANT {

// Below this many elements a step is cheaper on one thread than waking the team.
constexpr int64_t kParallelThreshold = 1 << 15;

// Thread shares are rounded to this many elements (64 bytes of float32), so two threads never
// write the same cache line.
constexpr int64_t kShareAlign = 16;

// Prefix sums of the tensor sizes: element k of the concatenation lives in the tensor t with
// offsets[t] <= k < offsets[t + 1].
class FlatIndex {
 public:
  template <typename NumelOf>
  FlatIndex(int64_t count, NumelOf numel_of) : offsets_(count + 1, 0) {
    for (int64_t t = 0; t < count; ++t) offsets_[t + 1] = offsets_[t] + numel_of(t);
  }

  int64_t total() const { return offsets_.back(); }

  // Calls body(t, begin, end) for each tensor t overlapping the flat range [first, last), with
  // begin/end local to tensor t. Empty tensors are never visited.
  template <typename Body>
  void for_each_piece(int64_t first, int64_t last, Body&& body) const {
    if (first >= last) return;
    const int64_t count = static_cast<int64_t>(offsets_.size()) - 1;
    int64_t t = std::upper_bound(offsets_.begin(), offsets_.end(), first) - offsets_.begin() - 1;
    for (; t < count && offsets_[t] < last; ++t) {
      const int64_t begin = std::max(first, offsets_[t]) - offsets_[t];
      const int64_t end = std::min(last, offsets_[t + 1]) - offsets_[t];
      if (begin < end) body(t, begin, end);
    }
  }

  // One parallel region in which each thread takes one contiguous share of all elements (or of
  // whatever unit the sizes count: the 8-bit state driver counts blocks, with its own threshold
  // and no alignment).
  template <typename Body>
  void parallel_for_each_piece(Body&& body, int64_t threshold = kParallelThreshold, int64_t align = kShareAlign) const {
    const int64_t n = total();
#pragma omp parallel num_threads(region_threads(n >= threshold))
    {
      const int64_t threads = omp_get_num_threads();
      const int64_t tid = omp_get_thread_num();
      const int64_t first = tid == 0 ? 0 : (n * tid / threads) / align * align;
      const int64_t last = tid + 1 == threads ? n : (n * (tid + 1) / threads) / align * align;
      for_each_piece(first, last, body);
    }
  }

 private:
  std::vector<int64_t> offsets_;
};

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
