// genesis::Muon (include/genesis/optim.h): genesis.optim.Muon's step (genesis/optim/muon.py) in
// C++. The two element-wise stages are the core's rules (include/genesis/rules/muon.h), called
// with the slots mapped as that header says; Newton-Schulz runs between them per matrix
// (csrc/api/newton_schulz.cpp).
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "genesis/newton_schulz.h"
#include "genesis/optim.h"

namespace genesis {

namespace {

// Python's repr of a shape tuple, as genesis.optim.Muon names a NumPy parameter's size.
std::string shape_repr(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// The NS input U (rows x cols, stored as S) replaced by its orthogonalization, computed in W:
// U widened or rounded to W, NS, the result rounded to S, as Python casts U to ns_dtype and
// the result to the parameter's dtype.
template <typename W>
void orthogonalize(const MuonOptions& o, DType dtype, int64_t rows, int64_t cols, void* u) {
  const int64_t n = rows * cols;
  std::vector<W> in(static_cast<size_t>(n)), out(static_cast<size_t>(n));
  dispatch_dtype(dtype, "Muon", [&](auto tag) {
    using S = decltype(tag);
    S* values = static_cast<S*>(u);
    for (int64_t i = 0; i < n; ++i) in[i] = load<W>(values[i]);
    newton_schulz(in.data(), rows, cols, o.ns_coefficients, o.ns_steps, o.eps, out.data());
    for (int64_t i = 0; i < n; ++i) store(values[i], out[i]);
  });
}

}  // namespace

void Muon::check_group(const Group& group, size_t) const {
  if (group.int8_state)
    throw std::invalid_argument("Muon: 8-bit state is for the element-wise rules (docs/low-bit-state.md)");
  for (const ParamView& p : group.params) {
    const std::vector<int64_t> shape = p.shape.empty() ? std::vector<int64_t>{p.numel} : p.shape;
    if (shape.size() != 2)  // torch's message
      throw std::invalid_argument("Muon only supports 2D parameters whereas we found a parameter with size: " +
                                  shape_repr(shape));
  }
}

void Muon::run(const MuonOptions& o, const StepConfig& config, TensorSlots* tensors, int64_t count) const {
  const DType dtype = config.param_dtype;
  // 1. B = lerp(B, G, 1 - momentum) and U, into a scratch array of the parameter's dtype per
  // tensor; the deferred clip (config.clip_coef, clip_value) applies here, to the gradients.
  std::vector<std::vector<unsigned char>> inputs(static_cast<size_t>(count));
  std::vector<TensorSlots> momentum(tensors, tensors + count);
  for (int64_t i = 0; i < count; ++i) {
    inputs[i].resize(static_cast<size_t>(tensors[i].numel) * dtype_size(dtype));
    momentum[i].param = inputs[i].data();
    momentum[i].master = nullptr;
  }
  cpu::step(MuonMomentumOptions{o.momentum, o.nesterov}, config, momentum.data(), count);

  // 2. U -> O = NS(U), in place, one matrix at a time (the products use every thread).
  for (int64_t i = 0; i < count; ++i) {
    if (o.ns_dtype == DType::Float64) {
      orthogonalize<double>(o, dtype, tensors[i].rows, tensors[i].cols, inputs[i].data());
    } else {
      orthogonalize<float>(o, dtype, tensors[i].rows, tensors[i].cols, inputs[i].data());
    }
  }

  // 3. P = P * (1 - lr * weight_decay) - adjusted_lr * O: one call per adjusted learning rate
  // (the matrices' aspect ratios decide it; a model has a few). Both factors in double from
  // the options, as Python computes them from floats. O is never clipped.
  StepConfig update = config;
  update.clip_coef = nullptr;
  update.clip_value = std::numeric_limits<double>::infinity();
  std::vector<std::pair<double, std::vector<TensorSlots>>> by_lr;
  for (int64_t i = 0; i < count; ++i) {
    const double adjusted = muon_adjusted_lr(o.lr, o.adjust_lr_fn, tensors[i].rows, tensors[i].cols);
    size_t k = 0;
    while (k < by_lr.size() && by_lr[k].first != adjusted) ++k;
    if (k == by_lr.size()) by_lr.emplace_back(adjusted, std::vector<TensorSlots>{});
    TensorSlots t;
    t.param = tensors[i].param;
    t.grad = inputs[i].data();
    t.numel = tensors[i].numel;
    t.master = tensors[i].master;
    t.id = tensors[i].id;
    by_lr[k].second.push_back(t);
  }
  const double decay = 1 - o.lr * o.weight_decay;
  for (auto& [adjusted, slots] : by_lr)
    cpu::step(MuonUpdateOptions{decay, adjusted}, update, slots.data(), static_cast<int64_t>(slots.size()));
}

}  // namespace genesis
