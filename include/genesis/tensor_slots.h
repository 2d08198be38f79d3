// How one tensor reaches an update rule: raw pointers to its parameter, gradient and state.
#pragma once

#include <cstdint>

#include "genesis/macros.h"

namespace genesis {

// The most state arrays any rule keeps per element (Adam with amsgrad: m, v, v_max), together
// with its per-tensor scalars (see TensorScalars).
constexpr int kMaxStates = 3;

// NOTE: [per-tensor scalars]
// Some rules keep scalars per tensor besides their arrays: NAdam's mu_product, ASGD's eta and
// mu (torch stores them as 0-dim float32 tensors in the parameter's state). They travel like
// the step counter: TensorSlots::state[Rule::kStates + j] points to scalar j (float32; device
// memory for CUDA), the driver reads them into a TensorScalars for Rule::coeffs and stores
// Rule::advance's result after the update, so the CUDA path needs no host round trip. A rule
// sees only values, never where they live.
constexpr int kMaxScalars = 2;
struct TensorScalars {
  float v[kMaxScalars];
};

// One parameter tensor of a step, as plain pointers: no framework types, so the same struct
// serves the Python bindings, the C++ API and the CUDA launcher. Every array holds
// `numel` contiguous elements; `param` and `grad` share the parameter dtype, `state` arrays the
// state dtype. A rule reads only as many state slots as it declares (Rule::kStates).
struct TensorSlots {
  void* param = nullptr;
  const void* grad = nullptr;
  void* state[kMaxStates] = {nullptr, nullptr, nullptr};  // the arrays, then the scalars
  int64_t numel = 0;
  // The parameter's last two dimensions when it has two or more (0 otherwise): the reduction
  // rules that factor a matrix read them (Adafactor; NOTE: [reduction rules] in reduce.h).
  int64_t rows = 0, cols = 0;
  // Step counter of this tensor (float32, as torch stores it), for rules that count steps:
  // host memory for the CPU backend, device memory for the CUDA one. CUDA only, for rules that
  // count no steps (SGD): if set, a device counter of the steps applied since the state was
  // created, which then decides `fresh` on the device (0: fresh) and advances with each step
  // that is not skipped, so a skipped first step leaves the next one first.
  float* step = nullptr;
  // True on the first step after the state was allocated: SGD's momentum buffer starts as the
  // gradient itself rather than decaying from zero. (CUDA: used when `step` is null.)
  bool fresh = false;
  // With master weights: a float32 copy of the parameter that the rule updates; `param` then
  // only receives the rounded result.
  float* master = nullptr;
  // With 8-bit state (StepConfig::state_dtype UInt8): state[k] holds uint8 codes and absmax[k]
  // the float32 scale of each block of kQuantBlock elements (include/genesis/quantized.h).
  float* absmax[kMaxStates] = {nullptr, nullptr, nullptr};
  // Identifies the tensor within its optimizer: with the step counter it keys the stochastic
  // rounding stream, so every tensor and every step draws independent bits.
  uint64_t id = 0;
};

// A contiguous array of `numel` elements: what the clip reductions read and rescale.
struct Buffer {
  void* data = nullptr;
  int64_t numel = 0;
};

// The state values of one element, as a rule sees them: references to three registers, indexed
// with compile-time constants. Not an array: an array would live in memory, and the CPU
// vectorizer treats its stores as scatters and gives up; these references stay registers.
template <typename T>
struct StateRegs {
  T& s0;
  T& s1;
  T& s2;
  GENESIS_HD T& operator[](int k) const { return k == 0 ? s0 : (k == 1 ? s1 : s2); }
};

}  // namespace genesis
