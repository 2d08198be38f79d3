// Muon's Newton-Schulz orthogonalization on the CPU, for the C++ API's genesis::Muon.
#pragma once

#include <array>
#include <cstdint>

namespace genesis {

// torch.optim.Muon's iteration (torch 2.13, _zeropower_via_newtonschulz) on the rows x cols
// row-major matrix `update`, written to `out` (same shape; the two must not overlap):
//
//   X = update, transposed when rows > cols        (so X is r x c with r <= c)
//   X = X / max(||X||_F, eps)                       (spectral norm at most 1)
//   repeat steps times:  A = X X^T;  B = b A + c A A;  X = a X + B X
//   out = X, transposed back
//
// with (a, b, c) = coefficients. torch computes in bfloat16; this runs in T, float or double,
// each matrix product through cpu::matmul (include/genesis/matmul.h), so the result is the same
// bits for any thread count. It is genesis.optim.Muon's ns_dtype="float32" (or "float64")
// computation up to the products' summation order (docs/cpp.md#muon).
template <typename T>
void newton_schulz(const T* update, int64_t rows, int64_t cols, const std::array<double, 3>& coefficients,
                   int64_t steps, double eps, T* out);

}  // namespace genesis
