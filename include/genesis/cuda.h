// The CUDA backend: the same rules and reductions as genesis/cpu.h, as multi-tensor-apply
// kernels. Every pointer is device memory except where noted; `stream` is a cudaStream_t (null:
// the default stream) of the device that holds the arrays: each call makes that device current
// while it launches, whichever device the caller's thread had current. Nothing here
// synchronizes with the host, so a call can be captured in a CUDA graph.
#pragma once

#include <cstdint>

#include "genesis/cpu.h"

namespace genesis::cuda {

// Whether this build has the CUDA backend, and how many devices the driver reports (0 without
// a GPU or driver: the CPU path keeps working).
bool built();
int device_count();

// One update of `count` tensors. Unlike the CPU path, TensorSlots::step points to device
// memory: the kernels compute the bias corrections from it on the device and advance it only
// when the step is not skipped, so StepConfig::found_inf and grad_scale (device pointers too)
// are honoured without a host round trip, and a step can be captured in a CUDA graph.
#define GENESIS_CUDA_STEP(rule, Options, Class) \
  void step(const Options& options, const StepConfig& config, const TensorSlots* tensors, int64_t count, void* stream);
GENESIS_RULES(GENESIS_CUDA_STEP)
GENESIS_STAGE_RULES(GENESIS_CUDA_STEP)
#undef GENESIS_CUDA_STEP

// The per-rule names of the first releases.
inline void sgd_step(const SgdOptions& o, const StepConfig& c, const TensorSlots* t, int64_t n, void* s) {
  step(o, c, t, n, s);
}
inline void adam_step(AdamOptions o, bool decoupled, const StepConfig& c, const TensorSlots* t, int64_t n, void* s) {
  o.decoupled_weight_decay = decoupled;
  step(o, c, t, n, s);
}
inline void rmsprop_step(const RmspropOptions& o, const StepConfig& c, const TensorSlots* t, int64_t n, void* s) {
  step(o, c, t, n, s);
}

// Writes the norm of all buffers (as one vector) to *total (a device float64), in a fixed
// reduction order: the same inputs give the same bits on every run. `workspace` is device
// scratch memory of norm_workspace_size(buffers, count) float64s, taken from the caller's
// allocator (torch's caching allocator from Python), free again once the stream has run.
int64_t norm_workspace_size(const Buffer* buffers, int64_t count);
void global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count, double* total, double* workspace,
                 void* stream);
// clip_grad_norm_'s scale, reading the norm from the device: x *= min(max_norm/(*total+1e-6), 1).
void clip_by_norm(double max_norm, const double* total, DType dtype, const Buffer* buffers, int64_t count,
                  void* stream);
void clamp(double limit, DType dtype, const Buffer* buffers, int64_t count, void* stream);
// GradScaler: x *= *factor (a device float) in place; sets *found_inf (device float) to 1 if a
// result is inf or NaN. Pass factor null to only check.
void unscale(const float* factor, DType dtype, const Buffer* buffers, int64_t count, float* found_inf, void* stream);

}  // namespace genesis::cuda
