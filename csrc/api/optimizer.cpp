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

// 8-bit state (docs/low-bit-state.md) for this parameter of this group: float32 and 16-bit
// parameters of at least min_8bit_size elements, for a rule that keeps state arrays. An empty
// parameter has nothing to quantize (and no codes to point at): it keeps empty float32 state
// whatever min_8bit_size says, as in Python (genesis/optim/_quantized.py: storage).
template <typename O>
bool wants_8bit(const ParamGroup<O>& g, const ParamView& p) {
  return g.int8_state && p.dtype != DType::Float64 && p.numel > 0 && p.numel >= g.min_8bit_size &&
         !RuleSpec<O>::state_names(g.options).empty();
}

template <typename O>
bool is_unsigned_state(const O& o, const std::string& name) {
  for (const std::string& n : nonnegative_states(o))
    if (n == name) return true;
  return false;
}

// float32 state bytes <-> 8-bit codes and block scales (state of float32 and 16-bit parameters
// is float32, the only float state 8-bit state converts from or to).
void quantize_bytes(const std::vector<unsigned char>& values, int64_t numel, bool unsigned_map,
                    std::vector<unsigned char>& codes, std::vector<unsigned char>& absmax) {
  codes.assign(static_cast<size_t>(numel), 0);
  absmax.assign(static_cast<size_t>(quant_blocks(numel)) * sizeof(float), 0);
  quantize_array(reinterpret_cast<const float*>(values.data()), numel, codes.data(),
                 reinterpret_cast<float*>(absmax.data()), unsigned_map);
}
std::vector<unsigned char> dequantize_bytes(const std::vector<unsigned char>& codes,
                                            const std::vector<unsigned char>& absmax, int64_t numel,
                                            bool unsigned_map) {
  std::vector<unsigned char> values(static_cast<size_t>(numel) * sizeof(float));
  dequantize_array(codes.data(), reinterpret_cast<const float*>(absmax.data()), numel,
                   reinterpret_cast<float*>(values.data()), unsigned_map);
  return values;
}

// Whether `name` is one of the per-tensor scalars of the rule with these options.
template <typename O>
bool is_scalar(const O& o, const std::string& name) {
  for (const auto& scalar : scalar_state(o))
    if (scalar.first == name) return true;
  return false;
}

// The shape of a parameter: ParamView::shape, or one dimension of numel.
std::vector<int64_t> shape_of(const ParamView& p) { return p.shape.empty() ? std::vector<int64_t>{p.numel} : p.shape; }
int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void put_flag(Value& group, const char* key, bool v) { group.set(Value::of(std::string(key)), Value::of(v)); }

// Each option of an Options struct with its state_dict key, in torch's param_group order: the
// rule's schema (RuleSpec::fields) serves both directions (OptionWriter, OptionReader).
template <typename O, typename F>
void visit_options(O& o, F&& f) {
  RuleSpec<O>::fields(o, f);
}

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
  // Muon's ns_steps, ns_coefficients, adjust_lr_fn (None or a name) and ns_dtype (a name).
  void operator()(const char* key, int64_t v) const { group.set(Value::of(std::string(key)), Value::of(v)); }
  void operator()(const char* key, const std::array<double, 3>& v) const {
    Value triple = Value::list(Value::Kind::Tuple);
    triple.items = {Value::of(v[0]), Value::of(v[1]), Value::of(v[2])};
    group.set(Value::of(std::string(key)), std::move(triple));
  }
  void operator()(const char* key, const std::optional<std::string>& v) const {
    group.set(Value::of(std::string(key)), v ? Value::of(*v) : Value::none());
  }
  void operator()(const char* key, DType v) const {
    group.set(Value::of(std::string(key)), Value::of(std::string(dtype_name(v))));
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
  void operator()(const char* key, int64_t& v) const {
    const Value* x = find(key);
    if (!x) return;
    const double d = x->as_number(std::string("param group option '") + key + "'");
    if (!(d == std::floor(d) && std::fabs(d) < 9.0e15))
      throw CheckpointError(std::string("param group option '") + key + "' must be an integer");
    v = static_cast<int64_t>(d);
  }
  void operator()(const char* key, std::array<double, 3>& v) const {
    const Value* x = find(key);
    if (!x) return;
    if (x->items.size() != 3) throw CheckpointError(std::string("param group option '") + key + "' must be 3 numbers");
    for (size_t i = 0; i < 3; ++i) v[i] = x->items[i].as_number(key);
  }
  // None or a string.
  void operator()(const char* key, std::optional<std::string>& v) const {
    const Value* x = find(key);
    if (!x) return;
    if (x->kind != Value::Kind::None && x->kind != Value::Kind::String)
      throw CheckpointError(std::string("param group option '") + key + "' must be None or a string");
    v = x->kind == Value::Kind::None ? std::nullopt : std::optional<std::string>(x->text);
  }
  // A dtype name; None keeps the current value (Python's "not given").
  void operator()(const char* key, DType& v) const {
    const Value* x = find(key);
    if (!x || x->kind == Value::Kind::None) return;
    for (int d = 0; d < kNumDTypes; ++d)
      if (x->kind == Value::Kind::String && x->text == dtype_name(static_cast<DType>(d))) {
        v = static_cast<DType>(d);
        return;
      }
    throw CheckpointError(std::string("param group option '") + key + "' must name a float dtype");
  }
};

}  // namespace

// --- Optimizer<Options> --------------------------------------------------------------------

template <typename O>
void Optimizer<O>::init(std::vector<Group> groups) {
  if (groups.empty()) throw std::invalid_argument("optimizer got an empty parameter list");
  for (Group& g : groups) add_param_group(std::move(g));
}

template <typename O>
void Optimizer<O>::add_param_group(Group group) {
  validate(group.options);
  if (group.min_8bit_size < 0) throw std::invalid_argument("min_8bit_size must be non-negative");
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
    if (group.int8_state && IsReduction<O>::value)
      throw std::invalid_argument(std::string(RuleSpec<O>::name(group.options)) +
                                  ": 8-bit state is for the element-wise rules (docs/low-bit-state.md)");
    if (group.int8_state && p.dtype == DType::Float64)
      throw std::invalid_argument(where(gi, i) + ": 8-bit state is not supported for float64 parameters");
  }
  check_group(group, gi);
  state_.emplace_back(group.params.size());
  groups_.push_back(std::move(group));
}

template <typename O>
typename Optimizer<O>::State& Optimizer<O>::state_of(size_t g, size_t i) {
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
  const bool quantized = wants_8bit(groups_[g], p);
  if (s.exists && s.names == names && s.quantized == quantized) return s;
  // Create the arrays these options need, keeping any that already exist by name (so turning
  // on amsgrad mid-run adds max_exp_avg_sq and keeps the moments). The per-tensor scalars
  // follow the arrays, one float32 each, starting at their initial values.
  // Arrays kept from 8-bit to float state or back are converted.
  std::vector<std::vector<unsigned char>> arrays, absmax(names.size());
  const size_t first_scalar = names.size() - scalars.size();
  for (size_t n = 0; n < names.size(); ++n) {
    std::vector<unsigned char> a;
    for (size_t k = 0; k < s.names.size(); ++k) {
      if (s.names[k] != names[n]) continue;
      a = std::move(s.arrays[k]);
      if (n >= first_scalar || s.quantized == quantized || a.empty()) {
        if (k < s.absmax.size()) absmax[n] = std::move(s.absmax[k]);
      } else if (quantized) {
        quantize_bytes(std::vector<unsigned char>(a), p.numel, is_unsigned_state(groups_[g].options, names[n]), a,
                       absmax[n]);
      } else {
        a = dequantize_bytes(a, s.absmax[k], p.numel, is_unsigned_state(groups_[g].options, names[n]));
      }
    }
    if (a.empty() && n >= first_scalar) {
      const float initial = static_cast<float>(scalars[n - first_scalar].second);
      a.resize(sizeof(float));
      std::memcpy(a.data(), &initial, sizeof(float));
    } else if (a.empty() && quantized) {
      a.assign(static_cast<size_t>(p.numel), 0);
      absmax[n].assign(static_cast<size_t>(quant_blocks(p.numel)) * sizeof(float), 0);
      s.fresh = true;
    } else if (a.empty()) {
      a.assign(static_cast<size_t>(numel_of(shapes[n])) * dtype_size(state_dtype_for(p.dtype)), 0);
      s.fresh = true;
    }
    arrays.push_back(std::move(a));
  }
  s.names = names;
  s.shapes = shapes;
  s.arrays = std::move(arrays);
  s.absmax = std::move(absmax);
  s.quantized = quantized;
  s.exists = true;
  return s;
}

template <typename O>
void Optimizer<O>::step() {
  // Options may have been edited since the last step: check them all before touching anything.
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    validate(groups_[gi].options);
    check_group(groups_[gi], gi);
  }
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const Group& group = groups_[gi];
    // By parameter dtype, then float or 8-bit state.
    std::array<std::vector<TensorSlots>, 2 * kNumDTypes> buckets;
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
      for (size_t k = 0; s.quantized && k < s.absmax.size() && k < size_t(kMaxStates); ++k)
        t.absmax[k] = s.absmax[k].empty() ? nullptr : reinterpret_cast<float*>(s.absmax[k].data());
      t.step = counts_steps() ? &s.step : nullptr;
      t.fresh = s.fresh;
      buckets[2 * static_cast<int>(p.dtype) + int(s.quantized)].push_back(t);
      used.push_back(&s);
    }
    for (int b = 0; b < 2 * kNumDTypes; ++b) {
      if (buckets[b].empty()) continue;
      StepConfig config;
      config.param_dtype = static_cast<DType>(b / 2);
      config.state_dtype = b % 2 ? DType::UInt8 : state_dtype_for(config.param_dtype);
      config.clip_coef = clip_pending_ ? &clip_coef_ : nullptr;
      config.clip_value = clip_value_;
      run(group.options, config, buckets[b].data(), buckets[b].size());
    }
    for (State* s : used) s->fresh = false;
  }
  discard_clip();
}

template <typename O>
void Optimizer<O>::discard_clip() {
  clip_pending_ = false;
  clip_coef_ = 1.0;
  clip_value_ = std::numeric_limits<double>::infinity();
}

template <typename O>
double Optimizer<O>::clip_grad_norm(double max_norm, double norm_type, bool error_if_nonfinite) {
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

template <typename O>
void Optimizer<O>::clip_grad_value(double clip_value) {
  if (!(clip_value >= 0)) throw std::invalid_argument("clip_grad_value: clip_value must be >= 0");
  clip_value_ = std::min(clip_value_, clip_value);
}

template <typename O>
void Optimizer<O>::zero_grad() {
  discard_clip();
  for (const Group& g : groups_)
    for (const ParamView& p : g.params)
      if (p.grad) std::memset(p.grad, 0, static_cast<size_t>(p.numel) * dtype_size(p.dtype));
}

template <typename O>
checkpoint::Document Optimizer<O>::state_dict() const {
  checkpoint::Document doc;
  Value state = Value::dict(), groups = Value::list();
  int64_t index = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    Value group = Value::dict();
    O options = groups_[gi].options;
    visit_options(options, OptionWriter{group});
    write_extra_options(group);
    if (groups_[gi].int8_state) {  // as Python's param_group keys
      group.set(Value::of(std::string("state_dtype")), Value::of(std::string("int8")));
      group.set(Value::of(std::string("min_8bit_size")), Value::of(groups_[gi].min_8bit_size));
    }
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
        if (is_scalar(groups_[gi].options, s.names[k])) {
          doc.arrays.push_back({DType::Float32, {}, s.arrays[k]});
        } else if (s.quantized) {  // codes, then their block scales (docs/low-bit-state.md)
          doc.arrays.push_back({DType::UInt8, {p.numel}, s.arrays[k]});
          entry.set(Value::of(s.names[k] + "_absmax"), Value::array_ref(static_cast<int64_t>(doc.arrays.size())));
          doc.arrays.push_back({DType::Float32, {quant_blocks(p.numel)}, s.absmax[k]});
        } else {
          doc.arrays.push_back({state_dtype_for(p.dtype), s.shapes[k], s.arrays[k]});
        }
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

template <typename O>
void Optimizer<O>::load_state_dict(const checkpoint::Document& doc) {
  const Value* saved_state = doc.root.find(std::string("state"));
  const Value* saved_groups = doc.root.find(std::string("param_groups"));
  if (doc.root.kind != Value::Kind::Dict || !saved_state || !saved_groups || saved_state->kind != Value::Kind::Dict ||
      saved_groups->kind != Value::Kind::List)
    throw CheckpointError("state dict must be a dict with 'state' and 'param_groups'");
  if (saved_groups->items.size() != groups_.size())
    throw std::invalid_argument("loaded state dict has a different number of parameter groups");
  // Build the new options and state on the side; commit only when everything is valid.
  std::vector<O> options;
  std::vector<std::pair<bool, int64_t>> storage;  // int8_state, min_8bit_size
  std::vector<std::vector<State>> state(groups_.size());
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const Value& saved = saved_groups->items[gi];
    const Value* params = saved.find(std::string("params"));
    if (saved.kind != Value::Kind::Dict || !params || params->items.size() != groups_[gi].params.size())
      throw std::invalid_argument(
          "loaded state dict contains a parameter group that doesn't match the size of optimizer's group");
    options.push_back(groups_[gi].options);
    visit_options(options.back(), OptionReader{saved});
    validate(options.back());
    // A saved group's storage options replace the optimizer's, as its other options do.
    ParamGroup<O> staged{{}, options.back(), groups_[gi].int8_state, groups_[gi].min_8bit_size};
    if (const Value* d = saved.find(std::string("state_dtype")))
      staged.int8_state = d->kind == Value::Kind::String && d->text == "int8";
    if (const Value* m = saved.find(std::string("min_8bit_size")))
      staged.min_8bit_size = static_cast<int64_t>(m->as_number("param group option 'min_8bit_size'"));
    if (staged.min_8bit_size < 0) throw std::invalid_argument("min_8bit_size must be non-negative");
    storage.emplace_back(staged.int8_state, staged.min_8bit_size);
    state[gi].resize(groups_[gi].params.size());
    for (size_t i = 0; i < params->items.size(); ++i) {
      const Value& key = params->items[i];
      const Value* entry = key.kind == Value::Kind::Int ? saved_state->find(key.integer) : nullptr;
      if (!entry) continue;
      if (entry->kind != Value::Kind::Dict) throw CheckpointError("state of " + where(gi, i) + " must be a dict");
      const ParamView& p = groups_[gi].params[i];
      if (staged.int8_state && p.dtype == DType::Float64)
        throw std::invalid_argument(where(gi, i) + ": 8-bit state is not supported for float64 parameters");
      State& s = state[gi][i];
      s.exists = true;
      s.quantized = wants_8bit(staged, p);
      const std::vector<std::string> array_names = RuleSpec<O>::state_names(options.back());
      auto is_scale = [&](const std::string& n) {
        for (const std::string& a : array_names)
          if (n == a + "_absmax") return true;
        return false;
      };
      for (size_t k = 0; k < entry->keys.size(); ++k) {
        const Value& name = entry->keys[k];
        const Value& v = entry->items[k];
        if (name.kind != Value::Kind::String) throw CheckpointError("state names must be strings");
        if (is_scale(name.text)) continue;  // read with its codes
        const checkpoint::Array* array = v.kind == Value::Kind::Array ? &doc.arrays.at(v.array) : nullptr;
        if (name.text == "step") {
          // A Python checkpoint of torch parameters stores the step as a 0-dim tensor.
          if (array && array->numel() != 1) throw CheckpointError("state 'step' must be a single number");
          double step = 0.0;
          if (array) copy_cast(*array, DType::Float64, reinterpret_cast<unsigned char*>(&step));
          s.step = static_cast<float>(array ? step : v.as_number("state 'step'"));
          if (!(s.step >= 0))
            throw CheckpointError("state 'step' of " + where(gi, i) + " must be a non-negative count");
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
          s.absmax.emplace_back();
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
        s.absmax.emplace_back();
        const bool unsigned_map = is_unsigned_state(options.back(), name.text);
        std::vector<unsigned char> scales;
        if (array->dtype == DType::UInt8) {  // 8-bit codes: their block scales must be there
          const Value* sv = entry->find(name.text + "_absmax");
          const checkpoint::Array* sa = sv && sv->kind == Value::Kind::Array ? &doc.arrays.at(sv->array) : nullptr;
          if (!sa || sa->dtype != DType::Float32 || sa->numel() != quant_blocks(p.numel))
            throw CheckpointError("state '" + name.text + "' of " + where(gi, i) + " holds 8-bit codes without " +
                                  std::to_string(quant_blocks(p.numel)) + " float32 block scales '" + name.text +
                                  "_absmax'");
          scales = sa->bytes;
        }
        if (s.quantized && array->dtype == DType::UInt8) {
          s.arrays.push_back(array->bytes);
          s.absmax.back() = std::move(scales);
        } else if (array->dtype == DType::UInt8) {
          const std::vector<unsigned char> values = dequantize_bytes(array->bytes, scales, p.numel, unsigned_map);
          const DType state_dtype = state_dtype_for(p.dtype);
          s.arrays.emplace_back(static_cast<size_t>(p.numel) * dtype_size(state_dtype));
          copy_cast(checkpoint::Array{DType::Float32, {p.numel}, values}, state_dtype, s.arrays.back().data());
        } else if (s.quantized) {
          std::vector<unsigned char> values(static_cast<size_t>(p.numel) * sizeof(float));
          copy_cast(*array, DType::Float32, values.data());
          s.arrays.emplace_back();
          quantize_bytes(values, p.numel, unsigned_map, s.arrays.back(), s.absmax.back());
        } else {
          const DType state_dtype = state_dtype_for(p.dtype);
          s.arrays.emplace_back(static_cast<size_t>(numel_of(shape)) * dtype_size(state_dtype));
          copy_cast(*array, state_dtype, s.arrays.back().data());
        }
      }
    }
  }
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    groups_[gi].options = options[gi];
    groups_[gi].int8_state = storage[gi].first;
    groups_[gi].min_8bit_size = storage[gi].second;
  }
  state_ = std::move(state);
}

#define GENESIS_INSTANTIATE(rule, Options, Class) template class Optimizer<Options>;
GENESIS_RULES(GENESIS_INSTANTIATE)
#undef GENESIS_INSTANTIATE
template class Optimizer<MuonOptions>;  // genesis::Muon (csrc/api/muon.cpp)

}  // namespace genesis
