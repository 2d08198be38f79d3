// Newton-Schulz (include/genesis/newton_schulz.h): torch.optim.Muon's sequence of operations,
// its three matrix products per iteration through cpu::matmul.
#include "genesis/newton_schulz.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "genesis/matmul.h"

namespace genesis {

namespace {

// out (cols x rows) = in (rows x cols)^T, in square blocks so both sides stay in cache.
template <typename T>
void transpose(const T* in, int64_t rows, int64_t cols, T* out) {
  constexpr int64_t kBlock = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += kBlock)
    for (int64_t j0 = 0; j0 < cols; j0 += kBlock)
      for (int64_t i = i0; i < std::min(i0 + kBlock, rows); ++i)
        for (int64_t j = j0; j < std::min(j0 + kBlock, cols); ++j) out[j * rows + i] = in[i * cols + j];
}

}  // namespace

template <typename T>
void newton_schulz(const T* update, int64_t rows, int64_t cols, const std::array<double, 3>& coefficients,
                   int64_t steps, double eps, T* out) {
  // torch turns a tall matrix into a wide one (a view, X.T), so that X X^T is the smaller Gram
  // matrix, and turns the result back.
  const bool tall = rows > cols;
  const int64_t r = tall ? cols : rows, c = tall ? rows : cols;
  const int64_t size = r * c;
  std::vector<T> x(static_cast<size_t>(size)), xt(static_cast<size_t>(size));
  std::vector<T> gram(static_cast<size_t>(r * r)), poly(static_cast<size_t>(r * r)), product(static_cast<size_t>(size));
  if (tall) {
    transpose(update, rows, cols, x.data());
  } else {
    std::copy(update, update + size, x.begin());
  }

  // X / max(||X||, eps). The sum of squares is accumulated in double in index order: the
  // norm rounded once to T (torch's float32 norm is within a few units of it).
  double squares = 0.0;
  for (const T v : x) squares += double(v) * double(v);
  const T norm = std::max(static_cast<T>(std::sqrt(squares)), static_cast<T>(eps));
  for (T& v : x) v = v / norm;

  // The coefficients rounded to T, as torch passes Python floats to a T kernel. Each
  // torch.addmm(C, A, B, beta, alpha) is beta * C + alpha * (A @ B), the product rounded to T
  // first (the build has no contraction, so every product and sum rounds separately).
  const T a = static_cast<T>(coefficients[0]), b = static_cast<T>(coefficients[1]),
          cc = static_cast<T>(coefficients[2]);
  for (int64_t step = 0; step < steps; ++step) {
    transpose(x.data(), r, c, xt.data());
    cpu::matmul(r, r, c, x.data(), xt.data(), gram.data());                       // A = X X^T
    cpu::matmul(r, r, r, gram.data(), gram.data(), product.data());               // A A
    for (int64_t i = 0; i < r * r; ++i) poly[i] = b * gram[i] + cc * product[i];  // B = b A + c A A
    cpu::matmul(r, c, r, poly.data(), x.data(), product.data());                  // B X
    for (int64_t i = 0; i < size; ++i) x[i] = a * x[i] + product[i];              // X = a X + B X
  }

  if (tall) {
    transpose(x.data(), r, c, out);
  } else {
    std::copy(x.begin(), x.end(), out);
  }
}

template void newton_schulz<float>(const float*, int64_t, int64_t, const std::array<double, 3>&, int64_t, double,
                                   float*);
template void newton_schulz<double>(const double*, int64_t, int64_t, const std::array<double, 3>&, int64_t, double,
                                    double*);

}  // namespace genesis
