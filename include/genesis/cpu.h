// The CPU backend: one call updates a whole list of tensors stored alike (parameter and state
// dtypes, master weights) in one OpenMP region. StepConfig is shared with the CUDA backend.
#pragma once

#include <cstdint>
#include <limits>

#include "genesis/dtype.h"
#include "genesis/rules/list.h"
#include "genesis/tensor_slots.h"

namespace genesis {

// How the tensors of one update call are stored, and the mixed-precision inputs of the step.
struct StepConfig {
  DType param_dtype = DType::Float32;  // parameters and gradients
  DType state_dtype = DType::Float32;  // optimizer state arrays
  // Every tensor carries a float32 master copy (TensorSlots::master) that the rule updates.
  bool master_weights = false;
  // GradScaler: gradients are multiplied by *grad_scale (1/scale) as they are loaded, so no
  // separate unscale pass is needed; if *found_inf is non-zero the call changes nothing at all.
  const float* grad_scale = nullptr;
  const float* found_inf = nullptr;
  // Deferred clipping (optimizer.clip_grad_norm_ / clip_grad_value_, docs/mixed-precision.md):
  // each loaded gradient is also multiplied by *clip_coef (after 1/scale) and clamped to
  // [-clip_value, clip_value]. Null / infinity: no clipping. See GradTransform.
  const double* clip_coef = nullptr;
  double clip_value = std::numeric_limits<double>::infinity();
  // bfloat16 parameters without master weights: round each update stochastically, drawing from
  // a counter-based generator keyed by (seed, tensor id, counter). Same inputs, same bits.
  bool stochastic_rounding = false;
  uint64_t seed = 0;
  uint64_t counter = 0;
  // CUDA only (capturable=True with a CUDA tensor lr, docs/semantics.md#capturable-steps): the
  // learning rate as a device scalar, float32 (float64 if lr_is_double), that the kernels read
  // in place of Options::lr, so a step captured in a CUDA graph uses whatever was last written
  // into it. Null: Options::lr. The CPU backend never reads it.
  const void* lr = nullptr;
  bool lr_is_double = false;
};

// The (parameter, state) dtype pairs the core implements: float64 state with float64
// parameters only; otherwise float32 or bfloat16 state (float16 state is refused: Adam's second
// moment, a square, overflows and underflows it).
constexpr bool supported_storage(DType param, DType state) {
  if (param == DType::Float64 || state == DType::Float64) return param == state;
  return state != DType::Float16;
}

}  // namespace genesis

namespace genesis::cpu {

// One step of a rule (every rule of include/genesis/rules/list.h has an overload, chosen by
// its options type). Each call reads every parameter, gradient and state element once and
// writes each parameter and state element once. Rules that count steps increment
// *tensors[i].step first (torch semantics: the bias correction of the first update uses t = 1).
#define GENESIS_CPU_STEP(rule, Options, Class) \
  void step(const Options& options, const StepConfig& config, TensorSlots* tensors, int64_t count);
GENESIS_RULES(GENESIS_CPU_STEP)
GENESIS_STAGE_RULES(GENESIS_CPU_STEP)
#undef GENESIS_CPU_STEP

// The per-rule names of the first releases.
inline void sgd_step(const SgdOptions& o, const StepConfig& c, TensorSlots* t, int64_t n) { step(o, c, t, n); }
inline void adam_step(AdamOptions o, bool decoupled, const StepConfig& c, TensorSlots* t, int64_t n) {
  o.decoupled_weight_decay = decoupled;
  step(o, c, t, n);
}
inline void rmsprop_step(const RmspropOptions& o, const StepConfig& c, TensorSlots* t, int64_t n) { step(o, c, t, n); }

// The norm of the concatenation of all buffers (norm_type 1, 2, inf, or any p > 0). The result
// is deterministic: the same inputs give the same bits for any thread count.
double global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count);
// The norm of every element times `factor` (rounded as the update rounds it, NOTE: [fused
// clip norm]) and, in *nonfinite, whether any such value is inf or NaN: one read serves
// the deferred clip and GradScaler's inf check.
double global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count, double factor, bool* nonfinite);
// x = clamp(x, -limit, limit) over every element of every buffer.
void clamp(double limit, DType dtype, const Buffer* buffers, int64_t count);
// x *= factor in place (clip_grad_norm_'s scale, GradScaler's unscale); returns true if any
// scaled element is inf or NaN. has_nonfinite checks without writing.
bool unscale(double factor, DType dtype, const Buffer* buffers, int64_t count);
bool has_nonfinite(DType dtype, const Buffer* buffers, int64_t count);

// The instruction-set variant the calls above run: "avx512", "avx2" or "baseline"; and those built
// into this library (the choice is the widest one the CPU runs, see csrc/cpu/dispatch.cpp).
const char* isa();
const char* built_isas();

// Whether the reduction rules' software prefetch (NOTE: [prefetch] in genesis/reduce.h) runs on
// this CPU: by default on Intel CPUs only, where it raised the read rate of one thread, and not
// on AMD's, where it lowered it (csrc/cpu/dispatch.cpp); GENESIS_CPU_PREFETCH=0 or =1 decides
// instead. Chosen once per process; a prefetch is a hint, so either way gives the same bits.
bool software_prefetch();

// Threads used by every call above, for the whole process (as torch.set_num_threads); until set,
// OpenMP's default (OMP_NUM_THREADS, else all cores). A process forked after genesis ran on
// several threads runs on one and refuses more (std::runtime_error): OpenMP's threads do not
// survive fork(). n < 1: std::invalid_argument.
int num_threads();
void set_num_threads(int n);

}  // namespace genesis::cpu
