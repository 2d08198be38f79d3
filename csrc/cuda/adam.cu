// CUDA entry point for Adam and AdamW: picks the compile-time variant, then launches the kernel.
#include "update_kernel.cuh"

namespace genesis::cuda {

namespace {
template <bool kDecoupled>
void adam_variant(const char* op, const AdamOptions& o, const StepConfig& config, const TensorSlots* tensors,
                  int64_t count, void* stream) {
  if (o.amsgrad) return dispatch_update<AdamRule<kDecoupled, true>>(op, o, config, tensors, count, stream);
  dispatch_update<AdamRule<kDecoupled, false>>(op, o, config, tensors, count, stream);
}
}  // namespace

void adam_step(const AdamOptions& o, bool decoupled, const StepConfig& config, const TensorSlots* tensors,
               int64_t count, void* stream) {
  if (decoupled) return adam_variant<true>("AdamW step", o, config, tensors, count, stream);
  adam_variant<false>("Adam step", o, config, tensors, count, stream);
}

}  // namespace genesis::cuda
