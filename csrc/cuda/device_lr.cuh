// The learning rate of a capturable step read on the device (StepConfig::lr): the kernels
// substitute it into their copy of the rule's options before computing its coefficients, so
// the rule's math (include/genesis/rules) is unchanged and never sees where the value lives.
// See docs/semantics.md#capturable-steps.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "genesis/cpu.h"
#include "genesis/reduce.h"

namespace genesis::cuda {

// Options whose learning rate is the plain field `lr` (every element-wise rule that has one).
template <typename O, typename = void>
struct HasLr : std::false_type {};
template <typename O>
struct HasLr<O, std::void_t<decltype(std::declval<O&>().lr = 0.0)>> : std::true_type {};

// `options` with lr read from `lr` (a device float32, or float64), or unchanged when null.
template <typename Options>
__device__ Options with_device_lr(Options options, const void* lr, bool lr_is_double) {
  if constexpr (HasLr<Options>::value) {
    if (lr) options.lr = lr_is_double ? *static_cast<const double*>(lr) : double(*static_cast<const float*>(lr));
  }
  return options;
}

// Refuses a device lr that the launcher of these options would not read (a rule without an lr
// field, or a reduction rule, whose passes take their options as given): before any launch.
template <typename Options>
void check_device_lr(const Options&, const StepConfig& config, const char* rule) {
  if (config.lr && (!HasLr<Options>::value || IsReduction<Options>::value))
    throw std::invalid_argument(std::string(rule) +
                                ": a learning rate on the device (capturable=True) is not "
                                "supported by this rule");
}

}  // namespace genesis::cuda
