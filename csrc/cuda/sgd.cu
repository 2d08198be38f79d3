// CUDA entry point for SGD: picks the compile-time variant, then launches the shared kernel.
#include "update_kernel.cuh"

namespace genesis::cuda {

void sgd_step(const SgdOptions& o, const StepConfig& config, const TensorSlots* tensors, int64_t count,
              void* stream) {
  const char* op = "SGD step";
  if (o.momentum == 0.0) return dispatch_update<SgdRule<false, false>>(op, o, config, tensors, count, stream);
  if (o.nesterov) return dispatch_update<SgdRule<true, true>>(op, o, config, tensors, count, stream);
  dispatch_update<SgdRule<true, false>>(op, o, config, tensors, count, stream);
}

}  // namespace genesis::cuda
