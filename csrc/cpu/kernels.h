// The CPU kernels of one instruction-set variant, in namespace genesis::cpu::GENESIS_CPU_VARIANT.
// The same sources are compiled once per variant (baseline x86-64/any CPU, and AVX2+FMA+F16C and
// AVX-512 where the compiler targets x86-64); dispatch.cpp picks one at run time. No include guard on
// purpose: dispatch.cpp includes this once per variant.
#include "genesis/cpu.h"

#ifndef GENESIS_CPU_VARIANT
#error "GENESIS_CPU_VARIANT names the instruction-set variant being compiled"
#endif

namespace genesis::cpu::GENESIS_CPU_VARIANT {

#define GENESIS_CPU_STEP(rule, Options, Class) \
  void step(const Options& options, const StepConfig& config, TensorSlots* tensors, int64_t count);
GENESIS_RULES(GENESIS_CPU_STEP)
GENESIS_STAGE_RULES(GENESIS_CPU_STEP)
#undef GENESIS_CPU_STEP
double global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count);
double global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count, double factor, bool* nonfinite);
void clamp(double limit, DType dtype, const Buffer* buffers, int64_t count);
bool unscale(double factor, DType dtype, const Buffer* buffers, int64_t count);
bool has_nonfinite(DType dtype, const Buffer* buffers, int64_t count);
template <typename T>
void matmul(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c);  // csrc/cpu/matmul.cpp

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
