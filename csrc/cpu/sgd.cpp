// CPU entry point for SGD: picks the compile-time variant, then runs the shared driver.
#include "kernels.h"
#include "update_driver.h"

namespace genesis::cpu::GENESIS_CPU_VARIANT {

void sgd_step(const SgdOptions& o, const StepConfig& config, TensorSlots* tensors, int64_t count) {
  const char* op = "SGD step";
  if (o.momentum == 0.0) return dispatch_update<SgdRule<false, false>>(op, o, config, tensors, count);
  if (o.nesterov) return dispatch_update<SgdRule<true, true>>(op, o, config, tensors, count);
  dispatch_update<SgdRule<true, false>>(op, o, config, tensors, count);
}

}  // namespace genesis::cpu::GENESIS_CPU_VARIANT
