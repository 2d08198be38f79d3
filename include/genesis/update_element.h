// One element of an update, shared by the CPU loop and the CUDA kernel: widen the stored values
// into registers, apply the rule, round and store. Callers pass references to wherever the
// element lives (memory on the CPU, a register tile on the GPU); arrays a variant does not use
// are never touched, so callers may pass any scratch variable for them. `index` is the lower 32
// bits of the element's index and `rng_key` the stochastic rounding key for its upper bits
// (random.h); both matter only with ParamStore::Stochastic.
#pragma once

#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "genesis/cpu.h"
#include "genesis/dtype.h"
#include "genesis/random.h"
#include "genesis/rules/norm.h"
#include "genesis/tensor_slots.h"

namespace genesis {

// How an update stores the parameter: rounded to nearest, through a float32 master copy that
// the rule updates, or (bfloat16 only) rounded stochastically.
enum class ParamStore { Nearest, Master, Stochastic };

// How many per-tensor scalars a rule keeps (Rule::kScalars, 0 when it declares none), and its
// coefficients from the step, freshness and those scalars. See NOTE: [per-tensor scalars].
template <typename Rule, typename = void>
struct ScalarCount : std::integral_constant<int, 0> {};
template <typename Rule>
struct ScalarCount<Rule, std::void_t<decltype(Rule::kScalars)>> : std::integral_constant<int, Rule::kScalars> {};

template <typename Rule, typename T>
GENESIS_HD typename Rule::template Coeffs<T> rule_coeffs(const typename Rule::Options& o, double step, bool fresh,
                                                         const TensorScalars& scalars) {
  if constexpr (ScalarCount<Rule>::value > 0) {
    return Rule::template coeffs<T>(o, step, fresh, scalars);
  } else {
    (void)scalars;
    return Rule::template coeffs<T>(o, step, fresh);
  }
}

// Reads a tensor's scalars (float32 pointers after its kStates arrays) and, after its update,
// writes their advanced values (Rule::advance, from this step's t).
template <typename Rule>
GENESIS_HD TensorScalars load_scalars(void* const* state) {
  TensorScalars s{};
  for (int j = 0; j < ScalarCount<Rule>::value; ++j) s.v[j] = *static_cast<const float*>(state[Rule::kStates + j]);
  return s;
}
template <typename Rule>
GENESIS_HD void advance_scalars(const typename Rule::Options& o, double step, void* const* state) {
  if constexpr (ScalarCount<Rule>::value > 0) {
    const TensorScalars next = Rule::advance(o, step, load_scalars<Rule>(state));
    for (int j = 0; j < ScalarCount<Rule>::value; ++j) *static_cast<float*>(state[Rule::kStates + j]) = next.v[j];
  }
}

// NOTE: [gradient transform]
// What every update does to a gradient as it loads it: GradScaler's 1/scale, then the deferred
// clip_grad_norm_ coefficient, then the deferred clip_grad_value_ clamp, in registers. The two
// products are rounded to T one after the other, exactly as the eager passes (unscale_, then
// clip_grad_norm_'s scale, each storing float32 gradients) round them, so for float32 and
// float64 gradients the fused step gives the eager sequence's bits (16-bit gradients skip the
// eager passes' two 16-bit roundings). With no scaler and no clip the factors are 1 and the
// limit infinite: the gradient passes through unchanged, bit for bit (NaN included).
// Every driver's gradient load goes through load_grad (docs/mixed-precision.md#fused-clipping).
template <typename T>
struct GradTransform {
  T scale;  // 1/scale
  T coef;   // clip_grad_norm_'s min(max_norm / (norm + 1e-6), 1)
  T limit;  // clip_grad_value_'s bound
};

// The transform of one step (its pointers are device memory on CUDA, read where it runs).
template <typename T>
GENESIS_HD GradTransform<T> grad_transform(const StepConfig& config) {
  return {config.grad_scale ? T(*config.grad_scale) : T(1), config.clip_coef ? T(*config.clip_coef) : T(1),
          T(config.clip_value)};
}

template <typename T, typename P>
GENESIS_HD T load_grad(const P& grad, const GradTransform<T>& x) {
  const T scaled = load<T>(grad) * x.scale;
  return clamp_symmetric(T(scaled * x.coef), x.limit);
}

// The transform of a step with no scaler and no clip, as a type: the gradient as stored. Its
// bits equal GradTransform's with factors 1 and an infinite limit (above), but the loop has no
// products and no clamp to run: a cache-resident float32 AdamW step took about a fifth less
// time on the CPU without them. The CPU drivers pick it once per step (with_grad_transform in
// csrc/cpu/update_driver.h); CUDA's loops are bound by memory and keep GradTransform.
struct PlainGrad {};

template <typename T, typename P>
GENESIS_HD T load_grad(const P& grad, PlainGrad) {
  return load<T>(grad);
}

template <typename T>
bool is_plain(const GradTransform<T>& x) {
  return x.scale == T(1) && x.coef == T(1) && x.limit == std::numeric_limits<T>::infinity();
}

// The loads and stores every rule's elements go through, with load_grad above: the element-wise
// update below and the passes of the reduction rules (include/genesis/reduce.h), so that a
// change to how gradients or parameters are read applies to every rule.
template <ParamStore kStore, typename T, typename P>
GENESIS_HD T load_param(const P& param, const float& master) {
  if constexpr (kStore == ParamStore::Master) {
    // NOTE: [master re-seed]
    // After every step the parameter holds exactly the rounding of its master copy. An element
    // that does not was written by the user since (model.load_state_dict, an in-place edit):
    // the user's value wins and becomes the new master value, instead of being silently undone.
    P rounded;
    store(rounded, master);
    return rounded.bits == param.bits ? T(master) : load<T>(param);
  } else {
    (void)master;
    return load<T>(param);
  }
}

template <ParamStore kStore, typename P, typename T>
GENESIS_HD void store_param(P& param, float& master, T p, uint32_t index, uint32_t rng_key) {
  if constexpr (kStore == ParamStore::Master) master = static_cast<float>(p);
  if constexpr (kStore == ParamStore::Stochastic) {
    param.bits = float_to_bfloat16_stochastic(static_cast<float>(p), random_bits(rng_key, index));
  } else {
    (void)index, (void)rng_key;
    store(param, p);
  }
}

// GX: GradTransform<T> or PlainGrad (above).
template <typename Rule, ParamStore kStore, typename P, typename S, typename T, typename GX>
GENESIS_HD void update_element(P& param, const P& grad, float& master, S& s0, S& s1, S& s2, uint32_t index,
                               const typename Rule::template Coeffs<T>& c, const GX& gx, uint32_t rng_key) {
  constexpr int K = Rule::kStates;
  T p = load_param<kStore, T>(param, master);
  T v0 = K > 0 ? load<T>(s0) : T(0);
  T v1 = K > 1 ? load<T>(s1) : T(0);
  T v2 = K > 2 ? load<T>(s2) : T(0);
  Rule::apply(p, load_grad<T>(grad, gx), StateRegs<T>{v0, v1, v2}, c);
  store_param<kStore>(param, master, p, index, rng_key);
  if constexpr (K > 0) store(s0, v0);
  if constexpr (K > 1) store(s1, v1);
  if constexpr (K > 2) store(s2, v2);
}

// Checks a StepConfig and calls fn(P{}, S{}, std::integral_constant<ParamStore, kStore>{}) for
// its parameter storage P, state storage S and parameter store: the one place every backend
// learns which combinations exist (only those are instantiated).
template <typename Fn>
void dispatch_storage(const char* op, const StepConfig& config, Fn&& fn) {
  if (!supported_storage(config.param_dtype, config.state_dtype))
    throw std::invalid_argument(std::string(op) + ": state dtype " + dtype_name(config.state_dtype) +
                                " is not supported for " + dtype_name(config.param_dtype) + " parameters");
  const bool half_param = config.param_dtype == DType::Float16 || config.param_dtype == DType::BFloat16;
  if (config.master_weights && !half_param)
    throw std::invalid_argument(std::string(op) + ": master weights are for float16/bfloat16 parameters");
  if (config.stochastic_rounding && (config.param_dtype != DType::BFloat16 || config.master_weights))
    throw std::invalid_argument(std::string(op) +
                                ": stochastic rounding is for bfloat16 parameters without master weights");
  using Nearest = std::integral_constant<ParamStore, ParamStore::Nearest>;
  using Master = std::integral_constant<ParamStore, ParamStore::Master>;
  using Stochastic = std::integral_constant<ParamStore, ParamStore::Stochastic>;
  dispatch_dtype(config.param_dtype, op, [&](auto param_tag) {
    using P = decltype(param_tag);
    dispatch_dtype(config.state_dtype, op, [&](auto state_tag) {
      using S = decltype(state_tag);
      if constexpr (supported_storage(dtype_of<P>(), dtype_of<S>())) {
        if constexpr (std::is_same_v<P, Half> || std::is_same_v<P, BFloat16>) {
          if (config.master_weights) return fn(P{}, S{}, Master{});
        }
        if constexpr (std::is_same_v<P, BFloat16>) {
          if (config.stochastic_rounding) return fn(P{}, S{}, Stochastic{});
        }
        fn(P{}, S{}, Nearest{});
      }
    });
  });
}

}  // namespace genesis
