// CPU entry point for RMSprop: picks the compile-time variant, then runs the shared driver.
#include "kernels.h"
#include "update_driver.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

namespace {
template <bool kCentered>
void rmsprop_variant(const RmspropOptions& o, const StepConfig& config, TensorSlots* tensors,
                     int64_t count) {
  const char* op = "RMSprop step";
  if (o.momentum > 0.0)
    return dispatch_update<RmspropRule<kCentered, true>>(op, o, config, tensors, count);
  dispatch_update<RmspropRule<kCentered, false>>(op, o, config, tensors, count);
}
}  // namespace

void rmsprop_step(const RmspropOptions& o, const StepConfig& config, TensorSlots* tensors,
                  int64_t count) {
  if (o.centered) return rmsprop_variant<true>(o, config, tensors, count);
  rmsprop_variant<false>(o, config, tensors, count);
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
