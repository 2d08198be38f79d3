// Global gradient norm (the reduction behind clip_grad_norm_) and the clip element operations.
#pragma once

#include <cmath>
#include <cstdint>

#include "genesis/macros.h"
#include "genesis/rules/pow.h"

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
    // An integer p takes portable_pow (as fast as the C library's pow() for these exponents,
    // and the same bits on CUDA, whose pow() rounds otherwise); any other p the C library's or
    // CUDA's own pow(): portable_pow's exp(p log a) costs 5x more (54 against 11 ns an element).
    if constexpr (K == NormKind::Lp) return p == std::floor(p) ? portable_pow(a, p) : std::pow(a, p);
    return a;
  }
  // A sum, except for the max norm, where NaN must win just as it does in a sum.
  GENESIS_HD double combine(double acc, double c) const {
    if constexpr (K == NormKind::Inf) return (c > acc || c != c) ? c : acc;
    return acc + c;
  }
  GENESIS_HD double finish(double acc) const {
    if constexpr (K == NormKind::L2) return std::sqrt(acc);
    if constexpr (K == NormKind::Lp) return portable_pow(acc, 1.0 / p);
    return acc;
  }
};

// NOTE: [norm order]
// The order in which a global norm combines its contributions, the same on the CPU
// (csrc/cpu/clip.cpp) and on CUDA (csrc/cuda/clip.cu), so that both give the same bits. Each
// tensor is cut into chunks of kNormChunk elements. In a chunk, lane l of kNormLanes combines
// the elements at offsets l, l + kNormLanes, l + 2 kNormLanes, ... in that order, starting from
// 0; value i of kNormValues combines lanes kNormLaneGroup * i, ... in order (on CUDA: thread i
// and the accumulators of its 16-byte packs); the values go through norm_tree. The chunks'
// partials, every tensor's in order, are combined the same way: partial j into value j mod
// kNormValues in order, then norm_tree; then finish. Combining with 0 changes no value (the
// contributions are >= +0 or NaN, and sums and maxima of them too), so lanes and values with no
// element are zeros that the CPU may skip. A p-norm's root, and its powers for an integer p,
// are portable_pow's (pow.h): the C library's pow() and CUDA's round differently. So the norm
// has the same bits on both for p = 1, 2, inf and every integer p; for another p the powers
// may differ in their last bit, and the norms by about that.
constexpr int64_t kNormChunk = int64_t(1) << 16;
constexpr int kNormValues = 512;
constexpr int kNormLaneGroup = 4;
constexpr int kNormLanes = kNormValues * kNormLaneGroup;

// The halving tree of NOTE: [norm order] over v[0, kNormValues): v[i] = v[i] (+) v[i + half] for
// half = kNormValues / 2, ..., 1, then v[0]. Only v[0, n) are given (the rest are zeros): pairs
// with a zero partner are skipped, so a short chunk costs O(n).
template <typename Op>
double norm_tree(const Op& op, double* v, int n) {
  for (int half = kNormValues / 2; half > 0; half /= 2) {
    for (int i = 0; i + half < n; ++i) v[i] = op.combine(v[i], v[i + half]);
    n = n < half ? n : half;
  }
  return n > 0 ? v[0] : 0.0;
}

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
