// torch's lerp, shared by the rules whose state torch updates with Tensor.lerp_ (Adafactor's
// factored moments, Muon's momentum).
#pragma once

#include <cmath>

#include "genesis/macros.h"

namespace genesis {

// torch's lerp(start, end, w), bit for bit: its CPU and CUDA kernels compute
// start + w * (end - start) for |w| < 0.5 and end + (w - 1) * (end - start) otherwise, each as
// one fused multiply-add. Muon rounds its NS input to bfloat16, which turns any last-bit
// difference here into a visible one, so lerp is where genesis uses fma on purpose (the cores
// are otherwise built without contraction): the same bits as torch, CPU and CUDA.
template <typename T>
GENESIS_HD T torch_lerp(T start, T end, T w) {
  const T diff = end - start;
  return std::fabs(w) < T(0.5) ? std::fma(w, diff, start) : std::fma(w - T(1), diff, end);
}

}  // namespace genesis
