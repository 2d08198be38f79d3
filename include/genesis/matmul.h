// A CPU matrix product for Muon's Newton-Schulz iteration in the C++ API
// (include/genesis/newton_schulz.h). Not a BLAS: one product of row-major matrices, blocked
// for the caches and split across OpenMP threads, good enough that NS is not the slow part of
// a C++ training step (docs/cpp.md#muon gives its speed).
#pragma once

#include <cstdint>

namespace genesis::cpu {

// c = a @ b for row-major a (m x k), b (k x n) and c (m x n), which must not overlap; c is
// written, never read. Each element is summed in one fixed order, k ascending, by one thread,
// so the result is the same bits for any thread count and instruction-set variant (the
// build has no floating-point contraction). Instantiated for float and double.
template <typename T>
void matmul(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c);

}  // namespace genesis::cpu
