// Global gradient norm (the reduction behind clip_grad_norm_) and the clip element operations.
#pragma once

#include <cmath>
#include <cstdint>

#include "genesis/macros.h"

namespace genesis {

enum class NormKind : int8_t { L1, L2, Lp, Inf };

// How one element contributes to the norm, how contributions combine, and how the combined
// value becomes the norm. The kind is a template parameter so the inner loops stay branch-free
// and vectorize. Partials accumulate in double: sums over hundreds of millions of float32
// squares would lose most of their digits in float.
template <NormKind K>
struct NormOp {
  double p;  // the exponent, read only by NormKind::Lp

  GENESIS_HD double contribution(double x) const {
    const double a = std::fabs(x);
    if constexpr (K == NormKind::L2) return a * a;
    if constexpr (K == NormKind::Lp) return std::pow(a, p);
    return a;
  }
  // A sum, except for the max norm, where NaN must win just as it does in a sum.
  GENESIS_HD double combine(double acc, double c) const {
    if constexpr (K == NormKind::Inf) return (c > acc || c != c) ? c : acc;
    return acc + c;
  }
  GENESIS_HD double finish(double acc) const {
    if constexpr (K == NormKind::L2) return std::sqrt(acc);
    if constexpr (K == NormKind::Lp) return std::pow(acc, 1.0 / p);
    return acc;
  }
};

// Calls fn(NormOp<K>{p}) for the kind that `norm_type` names: 1, 2, inf, or any other p > 0.
template <typename Fn>
decltype(auto) dispatch_norm(double norm_type, Fn&& fn) {
  if (norm_type == 1.0) return fn(NormOp<NormKind::L1>{1.0});
  if (norm_type == 2.0) return fn(NormOp<NormKind::L2>{2.0});
  if (std::isinf(norm_type)) return fn(NormOp<NormKind::Inf>{norm_type});
  return fn(NormOp<NormKind::Lp>{norm_type});
}

// g <- clamp(g, -c, c); NaN stays NaN, as in torch.clamp.
template <typename T>
GENESIS_HD T clamp_symmetric(T g, T c) {
  return g < -c ? -c : (g > c ? c : g);
}

}  // namespace genesis
