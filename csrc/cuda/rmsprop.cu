// CUDA entry point for RMSprop: picks the compile-time variant, then launches the shared kernel.
#include "update_kernel.cuh"

namespace genesis::cuda {

namespace {
template <bool kCentered>
void rmsprop_variant(const RmspropOptions& o, const StepConfig& config, const TensorSlots* tensors,
                     int64_t count, void* stream) {
  const char* op = "RMSprop step";
  if (o.momentum > 0.0)
    return dispatch_update<RmspropRule<kCentered, true>>(op, o, config, tensors, count, stream);
  dispatch_update<RmspropRule<kCentered, false>>(op, o, config, tensors, count, stream);
}
}  // namespace

void rmsprop_step(const RmspropOptions& o, const StepConfig& config, const TensorSlots* tensors,
                  int64_t count, void* stream) {
  if (o.centered) return rmsprop_variant<true>(o, config, tensors, count, stream);
  rmsprop_variant<false>(o, config, tensors, count, stream);
}

}  // namespace genesis::cuda
