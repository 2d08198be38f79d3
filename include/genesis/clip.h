// Gradient clipping: the same reductions behind genesis.nn.utils and the C++ API.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "genesis/dtype.h"

namespace genesis {

struct ParamView;

// A contiguous gradient of any supported dtype.
struct TypedBuffer {
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::Float32;
};

// The dtype of the total norm of these buffers, as torch promotes it: their common dtype;
// float64 if any is float64; float32 for any other mix.
DType norm_dtype(const std::vector<TypedBuffer>& buffers);

// The norm (norm_type 1, 2, any p > 0, or INFINITY) of all buffers taken together, as if they
// were one vector, accumulated and returned in double. Deterministic: the same inputs give the
// same bits for any thread count.
double total_norm(const std::vector<TypedBuffer>& buffers, double norm_type);
// The same norm of every element times `factor` (as GradScaler's unscale_ would store it), and
// whether any of those values is inf or NaN: the single read of the fused clip.
std::pair<double, bool> total_norm_scaled(const std::vector<TypedBuffer>& buffers, double norm_type, double factor);
// x *= factor and x = clamp(x, -limit, limit) over every element of every buffer.
void scale_all(const std::vector<TypedBuffer>& buffers, double factor);
void clamp_all(const std::vector<TypedBuffer>& buffers, double limit);
// GradScaler: x *= factor in place, and whether any buffer holds an inf or NaN (after scaling).
bool unscale_all(const std::vector<TypedBuffer>& buffers, double factor);
bool any_nonfinite(const std::vector<TypedBuffer>& buffers);

// C++ API. Scales every gradient by min(max_norm / (total + 1e-6), 1), where total is the norm
// of all gradients together; parameters with a null grad are ignored. Returns the total norm
// before clipping. With error_if_nonfinite, a NaN or infinite total throws std::domain_error
// and leaves the gradients unchanged.
double clip_grad_norm(const std::vector<ParamView>& params, double max_norm, double norm_type = 2.0,
                      bool error_if_nonfinite = false);

// C++ API. Clamps every gradient element to [-clip_value, clip_value].
void clip_grad_value(const std::vector<ParamView>& params, double clip_value);

}  // namespace genesis
