// CPU global norm, scaling and clamping over many buffers (clip_grad_norm_ / clip_grad_value_).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "flat_partition.h"
#include "genesis/rules/norm.h"
#include "kernels.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

namespace {

// One chunk's partial (NOTE: [norm order]): lane l combines offsets l, l + kNormLanes, ... (a
// round is a vertical operation over all lanes: it vectorizes without reordering anything),
// value i the lanes of group i, then the tree. `value` turns an element into the double whose
// contribution counts (the element itself, or the element as the fused clip's unscale would
// have stored it).
template <typename Op, typename S, typename Value>
double chunk_partial(const Op& op, const Value& value, const S* GENESIS_RESTRICT x, int64_t len) {
  double lane[kNormLanes];
  const int used = static_cast<int>(len < kNormLanes ? len : kNormLanes);
  for (int l = 0; l < used; ++l) lane[l] = op.combine(0.0, op.contribution(value(x[l])));
  int64_t r = kNormLanes;
  for (; r + kNormLanes <= len; r += kNormLanes)
    for (int l = 0; l < kNormLanes; ++l) lane[l] = op.combine(lane[l], op.contribution(value(x[r + l])));
  for (int l = 0; r + l < len; ++l) lane[l] = op.combine(lane[l], op.contribution(value(x[r + l])));
  double v[kNormValues];
  const int values = (used + kNormLaneGroup - 1) / kNormLaneGroup;
  for (int i = 0; i < values; ++i) {
    double a = lane[kNormLaneGroup * i];
    for (int k = 1; k < kNormLaneGroup && kNormLaneGroup * i + k < used; ++k)
      a = op.combine(a, lane[kNormLaneGroup * i + k]);
    v[i] = a;
  }
  return norm_tree(op, v, values);
}

template <typename Op, typename S, typename Value>
double norm_of(const Op& op, const Value& value, const Buffer* buffers, int64_t count) {
  // The chunks of NOTE: [norm order], tensor by tensor: tensor t's are [first[t], first[t + 1]).
  std::vector<int64_t> first(static_cast<size_t>(count) + 1, 0);
  int64_t elements = 0;
  for (int64_t t = 0; t < count; ++t) {
    first[t + 1] = first[t] + (buffers[t].numel + kNormChunk - 1) / kNormChunk;
    elements += buffers[t].numel;
  }
  const int64_t chunks = first[count];
  std::vector<double> partial(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static) num_threads(region_threads(elements >= kParallelThreshold))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t t = std::upper_bound(first.begin(), first.end(), c) - first.begin() - 1;
    const int64_t lo = (c - first[t]) * kNormChunk;
    const int64_t len = std::min(kNormChunk, buffers[t].numel - lo);
    partial[c] = chunk_partial(op, value, static_cast<const S*>(buffers[t].data) + lo, len);
  }
  double v[kNormValues];
  const int values = static_cast<int>(std::min<int64_t>(chunks, kNormValues));
  for (int i = 0; i < values; ++i) v[i] = op.combine(0.0, partial[i]);
  for (int64_t j = kNormValues; j < chunks; ++j) v[j % kNormValues] = op.combine(v[j % kNormValues], partial[j]);
  return op.finish(norm_tree(op, v, values));
}

// Applies fn to every element of every buffer in one parallel region, storing the result when
// kWrite. Returns true if any result is inf or NaN: GradScaler's check rides along for free.
template <typename S, bool kWrite, typename Fn>
bool transform_all(const Buffer* buffers, int64_t count, Fn fn) {
  using M = MathType<S>;
  std::atomic<bool> nonfinite{false};
  const FlatIndex index(count, [&](int64_t t) { return buffers[t].numel; });
  index.parallel_for_each_piece([&](int64_t t, int64_t begin, int64_t end) {
    S* GENESIS_RESTRICT x = static_cast<S*>(buffers[t].data);
    unsigned bad = 0;
    for (int64_t i = begin; i < end; ++i) {
      const M y = fn(load<M>(x[i]));
      if constexpr (kWrite) store(x[i], y);
      bad |= !(y - y == M(0));  // inf - inf and NaN - NaN are NaN
    }
    if (bad) nonfinite.store(true, std::memory_order_relaxed);
  });
  return nonfinite.load();
}

}  // namespace

double global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count) {
  return dispatch_dtype(dtype, "global norm", [&](auto tag) {
    using S = decltype(tag);
    const auto value = [](const S& x) { return load<double>(x); };
    return dispatch_norm(norm_type, [&](auto op) { return norm_of<decltype(op), S>(op, value, buffers, count); });
  });
}

// NOTE: [fused clip norm] The norm of x * factor as GradScaler's unscale_ would store it (rounded
// to the gradients' math type, as the update's load_grad rounds it), and whether any of those
// values is inf or NaN: the one read of the gradients that the fused clip needs. The flag comes
// from the norm itself where that is exact: an inf or NaN value makes the 1-, 2- or max-norm
// inf or NaN, and float32 or 16-bit values cannot overflow the double sums (2^63 squares of
// float32's largest value stay below 1e97). Otherwise (float64 values, other p) a second,
// read-only pass checks the elements, only when the norm is not finite.
double global_norm(double norm_type, DType dtype, const Buffer* buffers, int64_t count, double factor,
                   bool* nonfinite) {
  return dispatch_dtype(dtype, "global norm", [&](auto tag) {
    using S = decltype(tag);
    using M = MathType<S>;
    const M f = static_cast<M>(factor);
    const auto value = [f](const S& x) { return static_cast<double>(M(load<M>(x) * f)); };
    const double total =
        dispatch_norm(norm_type, [&](auto op) { return norm_of<decltype(op), S>(op, value, buffers, count); });
    const bool exact = dtype != DType::Float64 && (norm_type == 1.0 || norm_type == 2.0 || std::isinf(norm_type));
    *nonfinite =
        !std::isfinite(total) && (exact || transform_all<S, false>(buffers, count, [f](M x) { return M(x * f); }));
    return total;
  });
}

bool unscale(double factor, DType dtype, const Buffer* buffers, int64_t count) {
  return dispatch_dtype(dtype, "scale", [&](auto tag) {
    using S = decltype(tag);
    const MathType<S> f = static_cast<MathType<S>>(factor);
    return transform_all<S, true>(buffers, count, [f](MathType<S> x) { return x * f; });
  });
}

bool has_nonfinite(DType dtype, const Buffer* buffers, int64_t count) {
  return dispatch_dtype(dtype, "finite check", [&](auto tag) {
    using S = decltype(tag);
    return transform_all<S, false>(buffers, count, [](MathType<S> x) { return x; });
  });
}

void clamp(double limit, DType dtype, const Buffer* buffers, int64_t count) {
  dispatch_dtype(dtype, "clip value", [&](auto tag) {
    using S = decltype(tag);
    const MathType<S> c = static_cast<MathType<S>>(limit);
    transform_all<S, true>(buffers, count, [c](MathType<S> x) { return clamp_symmetric(x, c); });
  });
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
