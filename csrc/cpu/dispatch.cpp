// Picks the CPU kernel variant once per process: AVX2+FMA+F16C where the CPU has them (the
// 16-bit conversions and the wider vectors roughly halve the compute of the 16-bit paths),
// the baseline build otherwise. GENESIS_CPU_ISA=baseline forces the baseline. Both variants
// are compiled without floating-point contraction, so they give the same bits.
#include <cstdlib>
#include <cstring>

#include "genesis/cpu.h"
#include "genesis/matmul.h"

#define GENESIS_CPU_VARIANT baseline
#include "kernels.h"
#undef GENESIS_CPU_VARIANT
#ifdef GENESIS_CPU_AVX2
#define GENESIS_CPU_VARIANT avx2
#include "kernels.h"
#undef GENESIS_CPU_VARIANT
#endif

namespace genesis::cpu {

namespace {
bool use_avx2() {
#ifdef GENESIS_CPU_AVX2
  static const bool chosen = [] {
    const char* forced = std::getenv("GENESIS_CPU_ISA");
    if (forced && std::strcmp(forced, "baseline") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return chosen;
#else
  return false;
#endif
}
}  // namespace

const char* isa() { return use_avx2() ? "avx2" : "baseline"; }

#ifdef GENESIS_CPU_AVX2
#define GENESIS_DISPATCH(call) return use_avx2() ? avx2::call : baseline::call
#else
#define GENESIS_DISPATCH(call) return baseline::call
#endif

#define GENESIS_CPU_STEP(rule, Options, Class) \
  void step(const Options& o, const StepConfig& c, TensorSlots* t, int64_t n) { GENESIS_DISPATCH(step(o, c, t, n)); }
GENESIS_RULES(GENESIS_CPU_STEP)
GENESIS_STAGE_RULES(GENESIS_CPU_STEP)
#undef GENESIS_CPU_STEP
double global_norm(double norm_type, DType d, const Buffer* b, int64_t n) {
  GENESIS_DISPATCH(global_norm(norm_type, d, b, n));
}
double global_norm(double norm_type, DType d, const Buffer* b, int64_t n, double factor, bool* nonfinite) {
  GENESIS_DISPATCH(global_norm(norm_type, d, b, n, factor, nonfinite));
}
void clamp(double limit, DType d, const Buffer* b, int64_t n) { GENESIS_DISPATCH(clamp(limit, d, b, n)); }
bool unscale(double factor, DType d, const Buffer* b, int64_t n) { GENESIS_DISPATCH(unscale(factor, d, b, n)); }
bool has_nonfinite(DType d, const Buffer* b, int64_t n) { GENESIS_DISPATCH(has_nonfinite(d, b, n)); }
template <typename T>
void matmul(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c) {
  GENESIS_DISPATCH(matmul(m, n, k, a, b, c));
}
template void matmul<float>(int64_t, int64_t, int64_t, const float*, const float*, float*);
template void matmul<double>(int64_t, int64_t, int64_t, const double*, const double*, double*);

}  // namespace genesis::cpu
