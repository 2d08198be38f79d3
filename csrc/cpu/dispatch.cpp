// Picks the CPU kernel variant once per process: the widest one the CPU runs, of baseline x86-64,
// AVX2+FMA+F16C (the 16-bit conversions and the wider vectors roughly halve the compute of the
// 16-bit paths) and AVX-512 F/BW/DQ/VL (its mask registers, byte narrowing and three-input logic
// take AdamW with 8-bit state from 36 to 31 ms on 50M parameters and Adafactor from 59 to 53 ms
// on 50 x 1M; docs/performance.md#cpu-kernel-variants).
// GENESIS_CPU_ISA=baseline or =avx2 caps the choice. Every variant is compiled without
// floating-point contraction, so they all give the same bits.
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
#ifdef GENESIS_CPU_AVX512
#define GENESIS_CPU_VARIANT avx512
#include "kernels.h"
#undef GENESIS_CPU_VARIANT
#endif

namespace genesis::cpu {

namespace {
enum class Variant { Baseline, Avx2, Avx512 };

// The widest variant both built and run by this CPU, at most `cap`. __builtin_cpu_supports
// also checks that the OS saves the wider registers.
Variant widest_supported(Variant cap) {
#ifdef GENESIS_CPU_AVX2  // x86-64: __builtin_cpu_supports exists
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#ifdef GENESIS_CPU_AVX512
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (cap == Variant::Avx512 && avx512) return Variant::Avx512;
#endif
  if (cap != Variant::Baseline && avx2) return Variant::Avx2;
#endif
  (void)cap;
  return Variant::Baseline;
}

Variant variant() {
  static const Variant chosen = [] {
    const char* forced = std::getenv("GENESIS_CPU_ISA");
    Variant cap = Variant::Avx512;
    if (forced && std::strcmp(forced, "avx2") == 0) cap = Variant::Avx2;
    if (forced && std::strcmp(forced, "baseline") == 0) cap = Variant::Baseline;
    return widest_supported(cap);
  }();
  return chosen;
}
}  // namespace

const char* isa() {
  switch (variant()) {
    case Variant::Avx512:
      return "avx512";
    case Variant::Avx2:
      return "avx2";
    case Variant::Baseline:
      break;
  }
  return "baseline";
}

// NOTE: [prefetch by vendor]
// Adafactor's first pass reads from memory and does little else (p and g until 2026-12-05, g
// alone since: NOTE: [p^2 in pass 2] in include/genesis/rules/adafactor.h), so it runs at the
// rate one thread's reads reach (docs/performance.md#adafactors-reads-2026-12-03). Measured
// on 2-core VMs, 50 x 1000 x 1000 float32, 2 threads: on an Intel Xeon the hardware prefetchers left a
// two-array read at 15-23 GB/s and a software prefetch of every line 2 KB ahead raised it to
// 25-27 (the step 51 -> 45 ms); on an AMD EPYC (Zen 4) the same read runs at 27-28 GB/s
// without help, and the software prefetch took the step from 26-28 to 33-36 ms (spread over
// the round instead of in one burst before it: 29-31 ms). So: Intel on, every other CPU off,
// GENESIS_CPU_PREFETCH=0 or =1 to decide otherwise (to measure a new CPU).
bool software_prefetch() {
  static const bool on = [] {
    const char* forced = std::getenv("GENESIS_CPU_PREFETCH");
    if (forced && std::strcmp(forced, "0") == 0) return false;
    if (forced && std::strcmp(forced, "1") == 0) return true;
#ifdef GENESIS_CPU_AVX2  // x86-64: __builtin_cpu_is exists
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
#else
    return false;
#endif
  }();
  return on;
}

const char* built_isas() {
#if defined(GENESIS_CPU_AVX512)
  return "baseline avx2 avx512";
#elif defined(GENESIS_CPU_AVX2)
  return "baseline avx2";
#else
  return "baseline";
#endif
}

#if defined(GENESIS_CPU_AVX512)
#define GENESIS_DISPATCH(call) \
  switch (variant()) {         \
    case Variant::Avx512:      \
      return avx512::call;     \
    case Variant::Avx2:        \
      return avx2::call;       \
    case Variant::Baseline:    \
      break;                   \
  }                            \
  return baseline::call
#elif defined(GENESIS_CPU_AVX2)
#define GENESIS_DISPATCH(call) return variant() == Variant::Avx2 ? avx2::call : baseline::call
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
