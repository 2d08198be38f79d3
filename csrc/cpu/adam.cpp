// CPU entry point for Adam and AdamW: picks the compile-time variant, then runs the shared driver.
#include "kernels.h"
#include "update_driver.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

namespace {
template <bool kDecoupled>
void adam_variant(const char* op, const AdamOptions& o, const StepConfig& config,
                  TensorSlots* tensors, int64_t count) {
  if (o.amsgrad) return dispatch_update<AdamRule<kDecoupled, true>>(op, o, config, tensors, count);
  dispatch_update<AdamRule<kDecoupled, false>>(op, o, config, tensors, count);
}
}  // namespace

void adam_step(const AdamOptions& o, bool decoupled, const StepConfig& config, TensorSlots* tensors,
               int64_t count) {
  if (decoupled) return adam_variant<true>("AdamW step", o, config, tensors, count);
  adam_variant<false>("Adam step", o, config, tensors, count);
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
