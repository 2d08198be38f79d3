// One element of an update, shared by the CPU loop and the CUDA kernel: widen the stored values
// into registers, apply the rule, round and store. Callers pass references to wherever the
// element lives (memory on the CPU, a register tile on the GPU); arrays a variant does not use
// are never touched, so callers may pass any scratch variable for them.
#pragma once

#include "genesis/dtype.h"
#include "genesis/random.h"
#include "genesis/tensor_slots.h"

namespace genesis {

// How an update stores the parameter: rounded to nearest, through a float32 master copy that
// the rule updates, or (bfloat16 only) rounded stochastically.
enum class ParamStore { Nearest, Master, Stochastic };

template <typename Rule, ParamStore kStore, typename P, typename S, typename T>
GENESIS_HD void update_element(P& param, const P& grad, float& master, S& s0, S& s1, S& s2, int64_t index,
                               const typename Rule::template Coeffs<T>& c, T grad_scale, uint32_t rng_key) {
  constexpr int K = Rule::kStates;
  T p = kStore == ParamStore::Master ? T(master) : load<T>(param);
  T v0 = K > 0 ? load<T>(s0) : T(0);
  T v1 = K > 1 ? load<T>(s1) : T(0);
  T v2 = K > 2 ? load<T>(s2) : T(0);
  Rule::apply(p, load<T>(grad) * grad_scale, StateRegs<T>{v0, v1, v2}, c);
  if constexpr (kStore == ParamStore::Master) master = static_cast<float>(p);
  if constexpr (kStore == ParamStore::Stochastic) {
    param.bits = float_to_bfloat16_stochastic(static_cast<float>(p), random_bits(rng_key, uint64_t(index)));
  } else {
    store(param, p);
  }
  if constexpr (K > 0) store(s0, v0);
  if constexpr (K > 1) store(s1, v1);
  if constexpr (K > 2) store(s2, v2);
}

}  // namespace genesis
