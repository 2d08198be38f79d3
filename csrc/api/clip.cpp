// Gradient clipping over buffers of mixed dtypes, on the CPU core.
#include "genesis/clip.h"

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>

#include "genesis/cpu.h"
#include "genesis/optim.h"

namespace genesis {

namespace {

// The core works on one dtype per call: split the buffers by dtype, keeping their order.
std::array<std::vector<Buffer>, kNumDTypes> by_dtype(const std::vector<TypedBuffer>& buffers) {
  std::array<std::vector<Buffer>, kNumDTypes> out;
  for (const TypedBuffer& b : buffers) out[static_cast<int>(b.dtype)].push_back({b.data, b.numel});
  return out;
}

std::vector<TypedBuffer> grads_of(const std::vector<ParamView>& params) {
  std::vector<TypedBuffer> out;
  for (const ParamView& p : params) {
    if (!p.grad) continue;
    if (p.device != Device::CPU)
      throw std::invalid_argument("clip: CUDA gradients need genesis built with CUDA support");
    out.push_back({p.grad, p.numel, p.dtype});
  }
  return out;
}

}  // namespace

DType norm_dtype(const std::vector<TypedBuffer>& buffers) {
  if (buffers.empty()) return DType::Float32;
  DType d = buffers[0].dtype;
  for (const TypedBuffer& b : buffers) {
    if (b.dtype == d) continue;
    d = (b.dtype == DType::Float64 || d == DType::Float64) ? DType::Float64 : DType::Float32;
  }
  return d;
}

namespace {

// The norm over buffers of several dtypes: one core call per dtype (norm_of(dtype, buffers,
// count)), then the norm of those norms, which is the norm of everything (true for every p-norm
// and max).
template <typename NormOf>
double norm_by_dtype(const std::vector<TypedBuffer>& buffers, double norm_type, NormOf&& norm_of) {
  if (!(norm_type > 0))
    throw std::invalid_argument("norm_type must be positive or infinity, got " + std::to_string(norm_type));
  const auto buckets = by_dtype(buffers);
  std::vector<double> per_dtype;
  for (int d = 0; d < kNumDTypes; ++d)
    if (!buckets[d].empty()) per_dtype.push_back(norm_of(static_cast<DType>(d), buckets[d].data(), buckets[d].size()));
  if (per_dtype.size() <= 1) return per_dtype.empty() ? 0.0 : per_dtype[0];
  const Buffer all{per_dtype.data(), static_cast<int64_t>(per_dtype.size())};
  return cpu::global_norm(norm_type, DType::Float64, &all, 1);
}

}  // namespace

double total_norm(const std::vector<TypedBuffer>& buffers, double norm_type) {
  return norm_by_dtype(buffers, norm_type,
                       [&](DType d, const Buffer* b, int64_t n) { return cpu::global_norm(norm_type, d, b, n); });
}

std::pair<double, bool> total_norm_scaled(const std::vector<TypedBuffer>& buffers, double norm_type, double factor) {
  bool nonfinite = false;
  const double total = norm_by_dtype(buffers, norm_type, [&](DType d, const Buffer* b, int64_t n) {
    bool bad = false;
    const double norm = cpu::global_norm(norm_type, d, b, n, factor, &bad);
    nonfinite |= bad;
    return norm;
  });
  return {total, nonfinite};
}

void scale_all(const std::vector<TypedBuffer>& buffers, double factor) { unscale_all(buffers, factor); }

bool unscale_all(const std::vector<TypedBuffer>& buffers, double factor) {
  const auto buckets = by_dtype(buffers);
  bool nonfinite = false;
  for (int d = 0; d < kNumDTypes; ++d)
    if (!buckets[d].empty())
      nonfinite |= cpu::unscale(factor, static_cast<DType>(d), buckets[d].data(), buckets[d].size());
  return nonfinite;
}

bool any_nonfinite(const std::vector<TypedBuffer>& buffers) {
  const auto buckets = by_dtype(buffers);
  bool nonfinite = false;
  for (int d = 0; d < kNumDTypes; ++d)
    if (!buckets[d].empty())
      nonfinite |= cpu::has_nonfinite(static_cast<DType>(d), buckets[d].data(), buckets[d].size());
  return nonfinite;
}

void clamp_all(const std::vector<TypedBuffer>& buffers, double limit) {
  const auto buckets = by_dtype(buffers);
  for (int d = 0; d < kNumDTypes; ++d)
    if (!buckets[d].empty()) cpu::clamp(limit, static_cast<DType>(d), buckets[d].data(), buckets[d].size());
}

double clip_grad_norm(const std::vector<ParamView>& params, double max_norm, double norm_type,
                      bool error_if_nonfinite) {
  const std::vector<TypedBuffer> grads = grads_of(params);
  const double total = total_norm(grads, norm_type);
  if (error_if_nonfinite && !std::isfinite(total))
    throw std::domain_error("the total norm of order " + std::to_string(norm_type) +
                            " of the gradients is non-finite, so it cannot be clipped");
  const double coef = max_norm / (total + 1e-6);
  if (!(coef >= 1.0)) scale_all(grads, coef);  // NaN scales too, as in torch
  return total;
}

void clip_grad_value(const std::vector<ParamView>& params, double clip_value) {
  clamp_all(grads_of(params), clip_value);
}

}  // namespace genesis
