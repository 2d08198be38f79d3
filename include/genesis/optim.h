// The C++ API: genesis optimizers for C++ training programs, no Python involved.
//
//   genesis::ParamView w{weights, weight_grads, n, genesis::DType::Float32};
//   genesis::AdamW opt({w}, {/*lr=*/1e-3});
//   opt.step();                                  // same rule and numbers as genesis.optim.AdamW
//   opt.param_groups()[0].options.lr = 5e-4;     // schedules edit options between steps
//   opt.save("opt.gckpt");                       // loads in Python with genesis.load, and back
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "genesis/checkpoint.h"
#include "genesis/cpu.h"
#include "genesis/dtype.h"
#include "genesis/muon.h"
#include "genesis/quantized.h"
#include "genesis/rules/list.h"
#include "genesis/tensor_slots.h"

namespace genesis {

enum class Device : int8_t { CPU = 0, CUDA = 1 };

// A parameter: memory the caller owns. `data` is updated in place; `grad` (same dtype and
// size) is read; a null grad means "no gradient this step" and the parameter is skipped.
// float16/bfloat16 parameters keep their optimizer state in float32.
struct ParamView {
  void* data = nullptr;
  void* grad = nullptr;
  int64_t numel = 0;
  DType dtype = DType::Float32;
  Device device = Device::CPU;
  // The parameter's shape; empty means one dimension of `numel`. Rules that factor matrices
  // (Adafactor) need it; element-wise rules only use numel.
  std::vector<int64_t> shape = {};
};

template <typename Options>
struct ParamGroup {
  std::vector<ParamView> params;
  Options options;
  // 8-bit blockwise state (docs/low-bit-state.md, Python's state_dtype="int8") for parameters
  // of at least min_8bit_size elements (an empty one keeps float32 state); float64 parameters
  // are refused.
  bool int8_state = false;
  int64_t min_8bit_size = kDefaultMin8BitSize;
};

// Shared machinery: param groups, lazily created state, step, and state save/restore in the
// checkpoint format of genesis.save (the same layout as the Python optimizer's state_dict).
// Errors throw std::invalid_argument (bad options or parameters) or
// checkpoint::CheckpointError (a bad checkpoint); a failed load leaves the optimizer unchanged.
template <typename Options>
class Optimizer {
 public:
  using Group = ParamGroup<Options>;
  virtual ~Optimizer() = default;

  void step();
  // Zeroes every gradient buffer (C++ gradients are caller-owned memory, never freed here), and
  // discards a pending clip.
  void zero_grad();
  // Deferred clipping (docs/mixed-precision.md#fused-clipping): clip_grad_norm returns the total
  // norm of every gradient of every group, as genesis::clip_grad_norm does, but writes nothing:
  // the next step() multiplies each gradient by min(max_norm / (total + 1e-6), 1) as it loads
  // it (the same bits as genesis::clip_grad_norm followed by step() for float32/float64). The
  // gradient buffers keep their unclipped values before and after the step. clip_grad_value
  // clamps to [-clip_value, clip_value] in the same way (after the coefficient). Calling
  // clip_grad_norm twice before a step, or after clip_grad_value, throws std::logic_error; a
  // non-finite total with error_if_nonfinite throws std::domain_error and records nothing.
  // step() and zero_grad() discard what is pending.
  double clip_grad_norm(double max_norm, double norm_type = 2.0, bool error_if_nonfinite = false);
  void clip_grad_value(double clip_value);
  void add_param_group(Group group);
  std::vector<Group>& param_groups() { return groups_; }
  const std::vector<Group>& param_groups() const { return groups_; }

  checkpoint::Document state_dict() const;
  void load_state_dict(const checkpoint::Document& doc);
  void save(const std::string& path) const { checkpoint::save_file(state_dict(), path); }
  void load(const std::string& path) { load_state_dict(checkpoint::load_file(path)); }

 protected:
  Optimizer() = default;
  void init(std::vector<Group> groups);
  // The single group of the (params, options) constructors; an empty list is an error there,
  // as it is for torch.optim.
  static std::vector<Group> one_group(std::vector<ParamView> params, const Options& options) {
    if (params.empty()) throw std::invalid_argument("optimizer got an empty parameter list");
    return {Group{std::move(params), options}};
  }
  virtual bool counts_steps() const { return true; }
  // Checks an optimizer makes of a group beyond the common ones (Muon: 2-D parameters), when
  // the group is added (as group `index`) and again before each step; throws
  // std::invalid_argument.
  virtual void check_group(const Group&, size_t /*index*/) const {}
  virtual void run(const Options& o, const StepConfig& config, TensorSlots* tensors, int64_t count) const = 0;
  // Entries a param group carries in a state_dict beyond its Options fields.
  virtual void write_extra_options(checkpoint::Value&) const {}

 private:
  struct State {
    bool exists = false;
    bool fresh = false;
    bool quantized = false;  // 8-bit state: arrays hold uint8 codes, absmax their block scales
    float step = 0.0f;
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> shapes;  // of each array (a per-tensor scalar: {})
    std::vector<std::vector<unsigned char>> arrays;
    std::vector<std::vector<unsigned char>> absmax;  // parallel to arrays (empty for scalars)
  };
  State& state_of(size_t group, size_t index);
  void discard_clip();

  std::vector<Group> groups_;
  std::vector<std::vector<State>> state_;  // parallel to groups_[g].params
  // The pending deferred clip (StepConfig::clip_coef / clip_value).
  bool clip_pending_ = false;
  double clip_coef_ = 1.0;
  double clip_value_ = std::numeric_limits<double>::infinity();
};

// The optimizer of one rule (element-wise or reduction): state arrays, step counting and the CPU call come
// from its RuleSpec (include/genesis/rules/<rule>.h); every rule of rules/list.h gets one,
// named as torch names it: genesis::SGD, genesis::Adam, genesis::RMSprop, ...
template <typename Options>
class RuleOptimizer : public Optimizer<Options> {
 public:
  using Group = ParamGroup<Options>;
  explicit RuleOptimizer(std::vector<Group> groups) { this->init(std::move(groups)); }
  RuleOptimizer(std::vector<ParamView> params, Options options) {
    this->init(this->one_group(std::move(params), options));
  }

 protected:
  bool counts_steps() const override { return RuleSpec<Options>::kCountsSteps; }
  void run(const Options& o, const StepConfig& c, TensorSlots* t, int64_t n) const override { cpu::step(o, c, t, n); }
};

#define GENESIS_API_CLASS(rule, Options, Class) using Class = RuleOptimizer<Options>;
GENESIS_RULES(GENESIS_API_CLASS)
#undef GENESIS_API_CLASS

// AdamW's default weight decay is 0.01 (torch's); pass options to choose another.
inline AdamOptions adamw_defaults() {
  AdamOptions o;
  o.weight_decay = 0.01;
  o.decoupled_weight_decay = true;
  return o;
}

// Adam with decoupled weight decay in every group, whatever its options say (as
// torch.optim.AdamW is Adam(decoupled_weight_decay=True)).
class AdamW : public Adam {
 public:
  explicit AdamW(std::vector<Group> groups) : Adam(decoupled(std::move(groups))) {}
  AdamW(std::vector<ParamView> params, AdamOptions options = adamw_defaults())
      : Adam(std::move(params), decoupled(options)) {}

 protected:
  void run(const AdamOptions& o, const StepConfig& c, TensorSlots* t, int64_t n) const override {
    Adam::run(decoupled(o), c, t, n);
  }

 private:
  static AdamOptions decoupled(AdamOptions o) {
    o.decoupled_weight_decay = true;
    return o;
  }
  static std::vector<Group> decoupled(std::vector<Group> groups) {
    for (Group& g : groups) g.options.decoupled_weight_decay = true;
    return groups;
  }
};

// torch.optim.Muon (docs/cpp.md#muon): momentum, Newton-Schulz orthogonalization of each
// parameter's update, decoupled weight decay and the step, as genesis.optim.Muon with
// ns_dtype="float32" computes them. Newton-Schulz runs on the CPU in MuonOptions::ns_dtype
// (float32 or float64, not torch's bfloat16). Every parameter needs a 2-D ParamView::shape.
// State: "momentum_buffer" of the parameter's shape (float32 for 16-bit parameters).
class Muon : public Optimizer<MuonOptions> {
 public:
  explicit Muon(std::vector<Group> groups) { init(std::move(groups)); }
  Muon(std::vector<ParamView> params, MuonOptions options = {}) { init(one_group(std::move(params), options)); }

 protected:
  bool counts_steps() const override { return false; }
  void check_group(const Group& group, size_t index) const override;
  void run(const MuonOptions& o, const StepConfig& c, TensorSlots* t, int64_t n) const override;
};

}  // namespace genesis
