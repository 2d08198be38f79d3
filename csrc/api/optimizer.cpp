// The C++ API optimizers: state ownership and checkpoints around the same CPU core that the
// Python extension calls.
#include "genesis/optim.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <unordered_set>

#include "genesis/clip.h"
#include "genesis/cpu.h"
#include "genesis/validate.h"

namespace genesis {

namespace {

using checkpoint::CheckpointError;
using checkpoint::Value;

std::string where(size_t group, size_t index) {
  return "parameter " + std::to_string(index) + " of param group " + std::to_string(group);
}

// Copies `count` elements from a saved array into state memory of dtype `to`, converting
// float32 <-> float64 as torch's load_state_dict casts state to the parameter's dtype.
void copy_cast(const checkpoint::Array& src, DType to, unsigned char* dst) {
  const int64_t n = src.numel();
  if (src.dtype == to) {
    std::memcpy(dst, src.bytes.data(), src.bytes.size());
    return;
  }
  dispatch_dtype(src.dtype, "checkpoint load", [&](auto from_tag) {
    using From = decltype(from_tag);
    const From* in = reinterpret_cast<const From*>(src.bytes.data());
    dispatch_dtype(to, "checkpoint load", [&](auto to_tag) {
      using To = decltype(to_tag);
      To* out = reinterpret_cast<To*>(dst);
      for (int64_t i = 0; i < n; ++i) store(out[i], load<double>(in[i]));
    });
  });
}

// State of 16-bit parameters is kept in float32 (docs/mixed-precision.md's default policy).
DType state_dtype_for(DType param) {
  return param == DType::Float16 || param == DType::BFloat16 ? DType::Float32 : param;
}

// Whether `name` is one of the per-tensor scalars of the rule with these options.
template <typename O> bool is_scalar(const O& o, const std::string& name) {
  for (const auto& scalar : scalar_state(o))
    if (scalar.first == name) return true;
  return false;
}

// The shape of a parameter: ParamView::shape, or one dimension of numel.
std::vector<int64_t> shape_of(const ParamView& p) {
  return p.shape.empty() ? std::vector<int64_t>{p.numel} : p.shape;
}
int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void put_flag(Value& group, const char* key, bool v) { group.set(Value::of(std::string(key)), Value::of(v)); }

// Each option of an Options struct with its state_dict key, in torch's param_group order: the
// rule's schema (RuleSpec::fields) serves both directions (OptionWriter, OptionReader).
template <typename O, typename F> void visit_options(O& o, F&& f) { RuleSpec<O>::fields(o, f); }

struct OptionWriter {
  Value& group;
  void operator()(const char* key, double v) const { group.set(Value::of(std::string(key)), Value::of(v)); }
  void operator()(const char* key, bool v) const { put_flag(group, key, v); }
  void operator()(const char* key, double a, double b) const {
    Value pair = Value::list(Value::Kind::Tuple);
    pair.items = {Value::of(a), Value::of(b)};
    group.set(Value::of(std::string(key)), std::move(pair));
  }
  // A pair whose first entry may be None (Adafactor's eps).
  void operator()(const char* key, const std::optional<double>& a, double b) const {
    Value pair = Value::list(Value::Kind::Tuple);
    pair.items = {a ? Value::of(*a) : Value::none(), Value::of(b)};
    group.set(Value::of(std::string(key)), std::move(pair));
  }
};

// Reads the options a saved group has; the others keep their current values.
struct OptionReader {
  const Value& group;
  const Value* find(const char* key) const { return group.find(std::string(key)); }
  void operator()(const char* key, double& v) const {
    if (const Value* x = find(key)) v = x->as_number(std::string("param group option '") + key + "'");
  }
  void operator()(const char* key, bool& v) const {
    if (const Value* x = find(key)) v = x->as_number(std::string("param group option '") + key + "'") != 0.0;
  }
  void operator()(const char* key, double& a, double& b) const {
    const Value* x = find(key);
    if (!x) return;
    if (x->items.size() != 2) throw CheckpointError(std::string("param group option '") + key + "' must be a pair");
    a = x->items[0].as_number(key);
    b = x->items[1].as_number(key);
  }
  void operator()(const char* key, std::optional<double>& a, double& b) const {
    const Value* x = find(key);
    if (!x) return;
    if (x->items.size() != 2) throw CheckpointError(std::string("param group option '") + key + "' must be a pair");
    a = x->items[0].kind == Value::Kind::None ? std::nullopt : std::optional<double>(x->items[0].as_number(key));
    b = x->items[1].as_number(key);
  }
};

}  // namespace

// --- Optimizer<Options> --------------------------------------------------------------------

template <typename O> void Optimizer<O>::init(std::vector<Group> groups) {
  if (groups.empty()) throw std::invalid_argument("optimizer got an empty parameter list");
  for (Group& g : groups) add_param_group(std::move(g));
}

template <typename O> void Optimizer<O>::add_param_group(Group group) {
  validate(group.options);
  std::unordered_set<const void*> seen;
  for (const Group& g : groups_)
    for (const ParamView& p : g.params) seen.insert(p.data);
  const size_t gi = groups_.size();
  for (size_t i = 0; i < group.params.size(); ++i) {
    const ParamView& p = group.params[i];
    if (static_cast<int>(p.dtype) < 0 || static_cast<int>(p.dtype) >= kNumDTypes)
      throw std::invalid_argument(where(gi, i) + " has an unknown dtype code " + std::to_string(int(p.dtype)));
    if (p.device != Device::CPU)
      throw std::invalid_argument(where(gi, i) + " is on CUDA; this genesis build updates CPU parameters only");
    if (p.numel < 0 || (p.numel > 0 && !p.data))
      throw std::invalid_argument(where(gi, i) + " has no data or a negative size");
    if (!p.shape.empty() && numel_of(p.shape) != p.numel)
      throw std::invalid_argument(where(gi, i) + " has a shape of " + std::to_string(numel_of(p.shape)) +
                                  " elements but numel " + std::to_string(p.numel));
    if (p.numel > 0 && !seen.insert(p.data).second)
      throw std::invalid_argument(where(gi, i) + " appears more than once in the optimizer");
  }
  state_.emplace_back(group.params.size());
  groups_.push_back(std::move(group));
}

template <typename O> typename Optimizer<O>::State& Optimizer<O>::state_of(size_t g, size_t i) {
  State& s = state_[g][i];
  const ParamView& p = groups_[g].params[i];
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  for (const StateArray& a : state_arrays(groups_[g].options, shape_of(p))) {
    names.push_back(a.name);
    shapes.push_back(a.shape);
  }
  const auto scalars = scalar_state(groups_[g].options);
  for (const auto& scalar : scalars) {
    names.push_back(scalar.first);
    shapes.push_back({});
  }
  if (s.exists && s.names == names) return s;
  // Create the arrays these options need, keeping any that already exist by name (so turning
  // on amsgrad mid-run adds max_exp_avg_sq and keeps the moments). The per-tensor scalars
  // follow the arrays, one float32 each, starting at their initial values.
  std::vector<std::vector<unsigned char>> arrays;
  const size_t first_scalar = names.size() - scalars.size();
  for (size_t n = 0; n < names.size(); ++n) {
    std::vector<unsigned char> a;
    for (size_t k = 0; k < s.names.size(); ++k)
      if (s.names[k] == names[n]) a = std::move(s.arrays[k]);
    if (a.empty() && n >= first_scalar) {
      const float initial = static_cast<float>(scalars[n - first_scalar].second);
      a.resize(sizeof(float));
      std::memcpy(a.data(), &initial, sizeof(float));
    } else if (a.empty()) {
      a.assign(static_cast<size_t>(numel_of(shapes[n])) * dtype_size(state_dtype_for(p.dtype)), 0);
      s.fresh = true;
    }
    arrays.push_back(std::move(a));
  }
  s.names = names;
  s.shapes = shapes;
  s.arrays = std::move(arrays);
  s.exists = true;
  return s;
}

template <typename O> void Optimizer<O>::step() {
  // Options may have been edited since the last step: check them all before touching anything.
  for (const Group& g : groups_) validate(g.options);
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const Group& group = groups_[gi];
    std::array<std::vector<TensorSlots>, kNumDTypes> buckets;
    std::vector<State*> used;
    for (size_t i = 0; i < group.params.size(); ++i) {
      const ParamView& p = group.params[i];
      if (!p.grad) continue;
      State& s = state_of(gi, i);
      TensorSlots t;
      t.param = p.data;
      t.grad = p.grad;
      t.numel = p.numel;
      if (p.shape.size() >= 2) {
        t.rows = p.shape[p.shape.size() - 2];
        t.cols = p.shape[p.shape.size() - 1];
      }
      for (size_t k = 0; k < s.arrays.size(); ++k) t.state[k] = s.arrays[k].data();
      t.step = counts_steps() ? &s.step : nullptr;
      t.fresh = s.fresh;
      buckets[static_cast<int>(p.dtype)].push_back(t);
      used.push_back(&s);
    }
    for (int d = 0; d < kNumDTypes; ++d) {
      if (buckets[d].empty()) continue;
      StepConfig config;
      config.param_dtype = static_cast<DType>(d);
      config.state_dtype = state_dtype_for(config.param_dtype);
      config.clip_coef = clip_pending_ ? &clip_coef_ : nullptr;
      config.clip_value = clip_value_;
      run(group.options, config, buckets[d].data(), buckets[d].size());
    }
    for (State* s : used) s->fresh = false;
  }
  discard_clip();
}

template <typename O> void Optimizer<O>::discard_clip() {
  clip_pending_ = false;
  clip_coef_ = 1.0;
  clip_value_ = std::numeric_limits<double>::infinity();
}

template <typename O> double Optimizer<O>::clip_grad_norm(double max_norm, double norm_type, bool error_if_nonfinite) {
  if (clip_pending_) throw std::logic_error("clip_grad_norm: already called since the last step (clip once per step)");
  if (clip_value_ != std::numeric_limits<double>::infinity())
    throw std::logic_error("clip_grad_norm: called after clip_grad_value (call it first)");
  std::vector<TypedBuffer> grads;
  for (const Group& g : groups_)
    for (const ParamView& p : g.params) {
      if (!p.grad) continue;
      if (p.device != Device::CPU) throw std::invalid_argument("clip_grad_norm: the C++ API clips CPU gradients");
      grads.push_back({p.grad, p.numel, p.dtype});
    }
  const double total = total_norm(grads, norm_type);
  if (error_if_nonfinite && !std::isfinite(total))
    throw std::domain_error("the total norm of order " + std::to_string(norm_type) +
                            " of the gradients is non-finite, so it cannot be clipped");
  const double coef = max_norm / (total + 1e-6);
  clip_coef_ = coef >= 1.0 ? 1.0 : coef;  // NaN stays NaN, as in torch
  clip_pending_ = true;
  return total;
}

template <typename O> void Optimizer<O>::clip_grad_value(double clip_value) {
  if (!(clip_value >= 0)) throw std::invalid_argument("clip_grad_value: clip_value must be >= 0");
  clip_value_ = std::min(clip_value_, clip_value);
}

template <typename O> void Optimizer<O>::zero_grad() {
  discard_clip();
  for (const Group& g : groups_)
    for (const ParamView& p : g.params)
      if (p.grad) std::memset(p.grad, 0, static_cast<size_t>(p.numel) * dtype_size(p.dtype));
}

template <typename O> checkpoint::Document Optimizer<O>::state_dict() const {
  checkpoint::Document doc;
  Value state = Value::dict(), groups = Value::list();
  int64_t index = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    Value group = Value::dict();
    O options = groups_[gi].options;
    visit_options(options, OptionWriter{group});
    write_extra_options(group);
    Value params = Value::list();
    for (size_t i = 0; i < groups_[gi].params.size(); ++i, ++index) {
      params.items.push_back(Value::of(index));
      const State& s = state_[gi][i];
      if (!s.exists) continue;
      const ParamView& p = groups_[gi].params[i];
      Value entry = Value::dict();
      if (counts_steps()) entry.set(Value::of(std::string("step")), Value::of(double(s.step)));
      for (size_t k = 0; k < s.names.size(); ++k) {
        entry.set(Value::of(s.names[k]), Value::array_ref(static_cast<int64_t>(doc.arrays.size())));
        // A per-tensor scalar is a 0-dim float32 array, as torch stores it.
        if (is_scalar(groups_[gi].options, s.names[k]))
          doc.arrays.push_back({DType::Float32, {}, s.arrays[k]});
        else
          doc.arrays.push_back({state_dtype_for(p.dtype), s.shapes[k], s.arrays[k]});
      }
      state.set(Value::of(index), std::move(entry));
    }
    group.set(Value::of(std::string("params")), std::move(params));
    groups.items.push_back(std::move(group));
  }
  doc.root = Value::dict();
  doc.root.set(Value::of(std::string("state")), std::move(state));
  doc.root.set(Value::of(std::string("param_groups")), std::move(groups));
  return doc;
}

template <typename O> void Optimizer<O>::load_state_dict(const checkpoint::Document& doc) {
  const Value* saved_state = doc.root.find(std::string("state"));
  const Value* saved_groups = doc.root.find(std::string("param_groups"));
  if (doc.root.kind != Value::Kind::Dict || !saved_state || !saved_groups ||
      saved_state->kind != Value::Kind::Dict || saved_groups->kind != Value::Kind::List)
    throw CheckpointError("state dict must be a dict with 'state' and 'param_groups'");
  if (saved_groups->items.size() != groups_.size())
    throw std::invalid_argument("loaded state dict has a different number of parameter groups");
  // Build the new options and state on the side; commit only when everything is valid.
  std::vector<O> options;
  std::vector<std::vector<State>> state(groups_.size());
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const Value& saved = saved_groups->items[gi];
    const Value* params = saved.find(std::string("params"));
    if (saved.kind != Value::Kind::Dict || !params || params->items.size() != groups_[gi].params.size())
      throw std::invalid_argument("loaded state dict contains a parameter group that doesn't match the size of optimizer's group");
    options.push_back(groups_[gi].options);
    visit_options(options.back(), OptionReader{saved});
    validate(options.back());
    state[gi].resize(groups_[gi].params.size());
    for (size_t i = 0; i < params->items.size(); ++i) {
      const Value& key = params->items[i];
      const Value* entry = key.kind == Value::Kind::Int ? saved_state->find(key.integer) : nullptr;
      if (!entry) continue;
      if (entry->kind != Value::Kind::Dict)
        throw CheckpointError("state of " + where(gi, i) + " must be a dict");
      const ParamView& p = groups_[gi].params[i];
      State& s = state[gi][i];
      s.exists = true;
      for (size_t k = 0; k < entry->keys.size(); ++k) {
        const Value& name = entry->keys[k];
        const Value& v = entry->items[k];
        if (name.kind != Value::Kind::String) throw CheckpointError("state names must be strings");
        const checkpoint::Array* array = v.kind == Value::Kind::Array ? &doc.arrays.at(v.array) : nullptr;
        if (name.text == "step") {
          // A Python checkpoint of torch parameters stores the step as a 0-dim tensor.
          if (array && array->numel() != 1) throw CheckpointError("state 'step' must be a single number");
          double step = 0.0;
          if (array) copy_cast(*array, DType::Float64, reinterpret_cast<unsigned char*>(&step));
          s.step = static_cast<float>(array ? step : v.as_number("state 'step'"));
          if (!(s.step >= 0)) throw CheckpointError("state 'step' of " + where(gi, i) + " must be a non-negative count");
          continue;
        }
        if (is_scalar(options.back(), name.text)) {
          if (array && array->numel() != 1) throw CheckpointError("state '" + name.text + "' must be a single number");
          double value = 0.0;
          if (array) copy_cast(*array, DType::Float64, reinterpret_cast<unsigned char*>(&value));
          const float f = static_cast<float>(array ? value : v.as_number("state '" + name.text + "'"));
          s.names.push_back(name.text);
          s.shapes.push_back({});
          s.arrays.emplace_back(sizeof(float));
          std::memcpy(s.arrays.back().data(), &f, sizeof(float));
          continue;
        }
        if (!array) throw CheckpointError("state '" + name.text + "' of " + where(gi, i) + " must be an array");
        std::vector<int64_t> shape = shape_of(p);
        for (const StateArray& a : state_arrays(options.back(), shape_of(p)))
          if (a.name == name.text) shape = a.shape;
        if (array->numel() != numel_of(shape))
          throw std::invalid_argument("state '" + name.text + "' of " + where(gi, i) + " has " +
                                      std::to_string(array->numel()) + " elements, the parameter's needs " +
                                      std::to_string(numel_of(shape)));
        s.names.push_back(name.text);
        s.shapes.push_back(shape);
        const DType state_dtype = state_dtype_for(p.dtype);
        s.arrays.emplace_back(static_cast<size_t>(numel_of(shape)) * dtype_size(state_dtype));
        copy_cast(*array, state_dtype, s.arrays.back().data());
      }
    }
  }
  for (size_t gi = 0; gi < groups_.size(); ++gi) groups_[gi].options = options[gi];
  state_ = std::move(state);
}

#define GENESIS_INSTANTIATE(rule, Options, Class) template class Optimizer<Options>;
GENESIS_RULES(GENESIS_INSTANTIATE)
#undef GENESIS_INSTANTIATE

}  // namespace genesis
