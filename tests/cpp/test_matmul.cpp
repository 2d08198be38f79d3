// cpu::matmul (include/genesis/matmul.h), the product behind genesis::Muon's Newton-Schulz:
// every element is the plainest k-ordered sum, bit for bit, for any blocking and thread count.
#include <genesis/cpu.h>
#include <genesis/matmul.h>

#include <random>
#include <vector>

#include "check.h"

using namespace genesis;

namespace {

template <typename T>
std::vector<T> random_values(std::mt19937& rng, int64_t n) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<T> v(static_cast<size_t>(n));
  for (T& x : v) x = static_cast<T>(normal(rng));
  return v;
}

// The sizes cross the 6-row tiles and 60-row work items, the column panels (16 floats, 8
// doubles in AVX2), the 256-column blocks and the 256-deep blocks; k = 0 gives zeros; with 2
// threads the two largest run in parallel (over 2^20 multiplications).
constexpr int64_t kSizes[][3] = {{1, 1, 1}, {3, 5, 7}, {4, 16, 256}, {67, 300, 513}, {130, 40, 260}, {5, 3, 0}};

template <typename T>
void check_k_ordered_sum() {
  std::mt19937 rng(5);
  for (const auto& s : kSizes) {
    const int64_t m = s[0], n = s[1], k = s[2];
    const std::vector<T> a = random_values<T>(rng, m * k), b = random_values<T>(rng, k * n);
    std::vector<T> expected(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        T sum = 0;
        for (int64_t p = 0; p < k; ++p) sum += a[i * k + p] * b[p * n + j];
        expected[i * n + j] = sum;
      }
    const int before = cpu::num_threads();
    for (int threads : {1, 2}) {
      cpu::set_num_threads(threads);
      std::vector<T> c(static_cast<size_t>(m * n), T(-1));
      cpu::matmul(m, n, k, a.data(), b.data(), c.data());
      CHECK(c == expected);
    }
    cpu::set_num_threads(before);
  }
}

}  // namespace

TEST(matmul_is_the_k_ordered_sum) {
  check_k_ordered_sum<float>();
  check_k_ordered_sum<double>();
}
