// The element access both backends hand a reduction rule's passes (NOTE: [reduction rules] in
// include/genesis/reduce.h): the same loads and stores as the element-wise rules.
#pragma once

#include <cstdint>
#include <type_traits>

#include "genesis/reduce.h"
#include "genesis/update_element.h"

namespace genesis {

// One tensor of a reduction step, as a rule's passes see it: typed element access through the
// same loads and stores as the element-wise rules (update_element.h), the step t of this step,
// and the tensor's double scratch.
// GX: the gradient transform's type, GradTransform<T> or PlainGrad (update_element.h).
template <typename P, typename S, ParamStore kStore, typename GX = GradTransform<MathType<P>>>
struct TensorRef {
  using T = MathType<P>;
  // The parameter dtype's machine epsilon (torch.finfo(dtype).eps).
  static constexpr double kParamEpsilon = std::is_same_v<P, double>     ? 0x1p-52
                                          : std::is_same_v<P, Half>     ? 0x1p-10
                                          : std::is_same_v<P, BFloat16> ? 0x1p-7
                                                                        : 0x1p-23;
  P* param;
  const P* grad;
  float* master;  // null unless kStore == Master
  S* state[kMaxStates];
  TensorShape shape;
  GX grad_transform;  // NOTE: [gradient transform]
  uint32_t rng_key;   // stochastic rounding stream of this tensor and step
  double t;           // this step's count (after the increment) for rules that count steps
  double* scratch;
  T* kept = nullptr;  // NOTE: [kept values]: one value per element, or null

  GENESIS_HD T p(int64_t i) const {
    if constexpr (kStore == ParamStore::Master) return load_param<kStore, T>(param[i], master[i]);
    const float unused = 0.0f;
    return load_param<kStore, T>(param[i], unused);
  }
  GENESIS_HD T g(int64_t i) const { return load_grad<T>(grad[i], grad_transform); }
  GENESIS_HD T s(int k, int64_t i) const { return load<T>(state[k][i]); }
  // Stores a state value and returns it as stored (rounded to the state dtype), so that what a
  // pass computes from it equals what a later pass reloads.
  GENESIS_HD T set_s(int k, int64_t i, T v) const {
    store(state[k][i], v);
    if constexpr (std::is_same_v<S, T>) return v;  // nothing to round (and no reload in the loop)
    return load<T>(state[k][i]);
  }
  // NOTE: [prefetch]: a hint that element i's parameter (and master weight) or gradient will be
  // read soon. Host only; nothing on the device. i may lie past the array's end, so the address
  // is computed as an integer (a pointer out of bounds would be undefined) and never read: a
  // prefetch does not fault.
  GENESIS_HD void prefetch_p(int64_t i) const {
#ifndef __CUDA_ARCH__
    prefetch_at(param, i);
    if constexpr (kStore == ParamStore::Master) prefetch_at(master, i);
#endif
  }
  GENESIS_HD void prefetch_g(int64_t i) const {
#ifndef __CUDA_ARCH__
    prefetch_at(grad, i);
#endif
  }
  template <typename E>
  GENESIS_HD static void prefetch_at(const E* base, int64_t i) {
#ifndef __CUDA_ARCH__
    __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(base) + uintptr_t(i) * sizeof(E)));
#endif
  }
  GENESIS_HD void set_p(int64_t i, T v) const {
    float unused = 0.0f;
    const uint32_t key = kStore == ParamStore::Stochastic ? block_key(rng_key, uint64_t(i) >> 32) : 0u;
    store_param<kStore>(param[i], kStore == ParamStore::Master ? master[i] : unused, v, uint32_t(i), key);
  }
};

}  // namespace genesis
