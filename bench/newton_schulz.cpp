// Speed of genesis::Muon's Newton-Schulz in the C++ API: cpu::matmul on an n x n x n product
// and one NS iteration (three products, 6 n^3 flops) on an n x n matrix, float32, on 1 thread
// and on all of OpenMP's, best of a few runs. Built by ctest's tree as `newton_schulz_bench`:
//   build/cpp/tests/cpp/newton_schulz_bench [n=1024] [runs=3]
// Compare with torch's float32 products on the same machine (bench/RESULTS.md).
#include <genesis/cpu.h>
#include <genesis/matmul.h>
#include <genesis/newton_schulz.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

template <typename F>
double best_seconds(int runs, F&& f) {
  double best = 1e30;
  for (int r = 0; r < runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 1024;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 3;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> a(n * n), b(n * n), c(n * n);
  for (float& x : a) x = normal(rng);
  for (float& x : b) x = normal(rng);
  const std::array<double, 3> abc = {3.4445, -4.7750, 2.0315};
  const double flops = 2.0 * n * n * n;
  const int all = genesis::cpu::num_threads();
  std::printf("isa %s, n = %lld, best of %d\n", genesis::cpu::isa(), (long long)n, runs);
  for (int threads : {1, all}) {
    genesis::cpu::set_num_threads(threads);
    const double mm = best_seconds(runs, [&] { genesis::cpu::matmul(n, n, n, a.data(), b.data(), c.data()); });
    // One iteration: the NS call with 1 step less the call with none (normalization, copies).
    const double ns1 = best_seconds(runs, [&] { genesis::newton_schulz(a.data(), n, n, abc, 1, 1e-7, c.data()); });
    const double ns0 = best_seconds(runs, [&] { genesis::newton_schulz(a.data(), n, n, abc, 0, 1e-7, c.data()); });
    std::printf("threads %d: matmul %.1f ms %.1f GFLOP/s; NS iteration %.1f ms %.1f GFLOP/s\n", threads, mm * 1e3,
                flops / mm * 1e-9, (ns1 - ns0) * 1e3, 3 * flops / (ns1 - ns0) * 1e-9);
  }
  return 0;
}
