// The CPU backend: one call updates a whole list of tensors of one dtype in one OpenMP region.
#pragma once

#include <cstdint>

#include "genesis/dtype.h"
#include "genesis/rules/adam.h"
#include "genesis/rules/rmsprop.h"
#include "genesis/rules/sgd.h"
#include "genesis/tensor_slots.h"

namespace genesis::cpu {

// Each call reads every parameter, gradient and state element once and writes each parameter
// and state element once. Rules that count steps increment *tensors[i].step first (torch
// semantics: the bias correction of the first update uses t = 1). All tensors share `dtype`.
void sgd_step(const SgdOptions& options, DType dtype, TensorSlots* tensors, int64_t count);
void adam_step(const AdamOptions& options, bool decoupled, DType dtype, TensorSlots* tensors,
               int64_t count);
void rmsprop_step(const RmspropOptions& options, DType dtype, TensorSlots* tensors, int64_t count);

// The norm of the concatenation of all buffers (norm_type 1, 2, inf, or any p > 0). The result
// is deterministic: the same inputs give the same bits for any thread count.
double global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count);
// x *= factor, and x = clamp(x, -limit, limit), over every element of every buffer.
void scale(double factor, DType dtype, const Buffer* buffers, int64_t count);
void clamp(double limit, DType dtype, const Buffer* buffers, int64_t count);

// Threads used by every call above (OpenMP's setting, default: all cores).
int num_threads();
void set_num_threads(int n);

}  // namespace genesis::cpu
