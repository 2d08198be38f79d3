// Python bindings, the only file that knows about Python: it turns parameters into pointers
// and calls the C++ core with the GIL released. Policy (validation messages, state creation,
// state_dict) lives in the Python package; this file only does what must be fast.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "genesis/clip.h"
#include "genesis/cpu.h"
#ifdef GENESIS_WITH_CUDA
#include "genesis/cuda.h"
// Calls genesis::cuda::<call>; in a build without CUDA, Python never admits a CUDA tensor, so
// reaching this is an internal error.
#define GENESIS_CUDA_CALL(call) cuda::call
#else
#define GENESIS_CUDA_CALL(call) throw std::logic_error("genesis was built without CUDA")
#endif
#include "genesis/validate.h"

namespace py = pybind11;

namespace genesis {
namespace {

// NOTE: [fast array description]
// Every step has to look at every gradient (autograd hands out new gradient tensors each
// step), so describing an array must cost tens of nanoseconds, not the microseconds of
// __dlpack__ or __array_interface__. NumPy arrays are read from their C struct; torch tensors
// through a few cheap attribute calls. Anything unexpected is not an error here: it is sent
// back to Python, whose slow path validates fully and raises the precise, named error.

PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }

// One attribute (kind Get) or no-argument method (kind Call) of torch tensors. Looking a name
// up through the type, as `x.name` does, costs more than the call itself; so once torch is
// registered, objects whose type resolves the name to torch's own descriptor (every Tensor and
// Parameter that does not override it) call that descriptor directly. Anything else takes the
// ordinary Python path. Failures return null with the Python error cleared.
struct Member {
  enum Kind { Get, Call };
  Member(const char* n, Kind k) : name(intern(n)), kind(k) {}

  void resolve(PyTypeObject* type) { descr = _PyType_Lookup(type, name); }

  py::object operator()(PyObject* obj) const {
    PyObject* r;
    if (descr && _PyType_Lookup(Py_TYPE(obj), name) == descr)
      r = kind == Call ? PyObject_Vectorcall(descr, &obj, 1, nullptr)
                       : Py_TYPE(descr)->tp_descr_get(descr, obj, reinterpret_cast<PyObject*>(Py_TYPE(obj)));
    else
      r = kind == Call ? PyObject_CallMethodNoArgs(obj, name) : PyObject_GetAttr(obj, name);
    if (!r) PyErr_Clear();
    return py::reinterpret_steal<py::object>(r);
  }

  PyObject* name;  // interned once, never freed: lives as long as the module
  Kind kind;
  PyObject* descr = nullptr;  // borrowed from torch's type, which outlives every call
};

Member grad_of("grad", Member::Get);
Member data_of("data", Member::Get);
Member data_ptr_of("data_ptr", Member::Call);
Member numel_of("numel", Member::Call);
Member is_contiguous("is_contiguous", Member::Call);
Member dtype_of("dtype", Member::Get);
Member is_cpu("is_cpu", Member::Get);
Member is_cuda("is_cuda", Member::Get);

// torch's Tensor type and dtype objects, registered by genesis/_interop.py the first time a
// torch tensor is seen, so torch stays an optional dependency.
PyTypeObject* torch_tensor_type = nullptr;
std::array<PyObject*, 4> torch_dtypes = {nullptr, nullptr, nullptr, nullptr};

void register_torch(py::object tensor_type, py::sequence dtypes) {
  torch_tensor_type = reinterpret_cast<PyTypeObject*>(tensor_type.release().ptr());
  for (size_t i = 0; i < torch_dtypes.size(); ++i) torch_dtypes[i] = py::object(dtypes[i]).release().ptr();
  for (Member* m : {&grad_of, &data_ptr_of, &numel_of, &is_contiguous, &dtype_of, &is_cpu, &is_cuda})
    m->resolve(torch_tensor_type);
}

struct ArrayInfo {
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::Float32;
};

constexpr int kNumpyHalf = 23;  // NPY_HALF (pybind11's npy_api does not name it)

bool numpy_dtype(int type_num, DType& out) {
  switch (type_num) {
    case py::detail::npy_api::NPY_FLOAT_: out = DType::Float32; return true;
    case py::detail::npy_api::NPY_DOUBLE_: out = DType::Float64; return true;
    case kNumpyHalf: out = DType::Float16; return true;
    default: return false;
  }
}

// Describes a contiguous NumPy array of a supported dtype from its C struct.
bool describe_ndarray(PyObject* obj, ArrayInfo& out) {
  if (!py::isinstance<py::array>(obj)) return false;
  auto* a = py::detail::array_proxy(obj);
  auto* d = py::detail::array_descriptor_proxy(a->descr);
  if (!(a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) || !numpy_dtype(d->type_num, out.dtype))
    return false;
  int64_t n = 1;
  for (int i = 0; i < a->nd; ++i) n *= a->dimensions[i];
  out.data = a->data;
  out.numel = n;
  return true;
}

bool is_torch_tensor(PyObject* obj) {
  return torch_tensor_type && PyObject_TypeCheck(obj, torch_tensor_type);
}

// Describes a contiguous torch tensor of a supported dtype. The device is checked only when
// asked: a gradient's device is guaranteed by torch to be its parameter's.
bool describe_torch(PyObject* obj, ArrayInfo& out, bool check_cpu) {
  if (!is_torch_tensor(obj)) return false;
  if (check_cpu && is_cpu(obj).ptr() != Py_True) return false;
  if (is_contiguous(obj).ptr() != Py_True) return false;
  const py::object dtype = dtype_of(obj);
  int code = 0;
  while (code < kNumDTypes && torch_dtypes[code] != dtype.ptr()) ++code;
  if (code == kNumDTypes) return false;
  const py::object ptr = data_ptr_of(obj);
  const py::object numel = numel_of(obj);
  if (!ptr || !numel) return false;
  out.dtype = static_cast<DType>(code);
  out.data = PyLong_AsVoidPtr(ptr.ptr());
  out.numel = PyLong_AsLongLong(numel.ptr());
  return true;
}

// Describes a contiguous CPU array (NumPy ndarray or torch tensor) of a supported dtype.
// Returns false for anything else. See NOTE: [fast array description].
bool describe(PyObject* obj, ArrayInfo& out) {
  return describe_ndarray(obj, out) || describe_torch(obj, out, /*check_cpu=*/true);
}

bool same_shape(PyObject* a, PyObject* b) {
  auto* x = py::detail::array_proxy(a);
  auto* y = py::detail::array_proxy(b);
  return x->nd == y->nd && std::equal(x->dimensions, x->dimensions + x->nd, y->dimensions);
}

// Describes this step's gradient of a parameter and checks it against the parameter as it is
// now, as cheaply as safety allows (every call here is ~40 ns and there is one per tensor per
// step). For torch, torch itself guarantees that a gradient's shape, dtype and device match its
// parameter, so what is left to check is that the parameter's data was not swapped (its data
// pointer), that the gradient covers the cached element count (a parameter resized in place
// keeps its pointer), and that it is contiguous. A genesis.nn.Parameter's gradient is a plain
// attribute nobody checked, so everything is compared, from NumPy's C struct.
bool describe_grad(PyObject* param, PyObject* grad, bool torch, const ArrayInfo& cached, ArrayInfo& g) {
  if (torch) {
    if (!is_torch_tensor(grad)) return false;
    const py::object param_ptr = data_ptr_of(param);
    if (!param_ptr || PyLong_AsVoidPtr(param_ptr.ptr()) != cached.data) return false;
    if (is_contiguous(grad).ptr() != Py_True) return false;
    const py::object ptr = data_ptr_of(grad);
    const py::object numel = numel_of(grad);
    if (!ptr || !numel) return false;
    g = {PyLong_AsVoidPtr(ptr.ptr()), PyLong_AsLongLong(numel.ptr()), cached.dtype};
    return g.numel == cached.numel;
  }
  ArrayInfo p;
  const py::object data = data_of(param);
  return data && describe_ndarray(data.ptr(), p) && describe_ndarray(grad, g) &&
         same_shape(data.ptr(), grad) && p.data == cached.data && p.numel == cached.numel &&
         p.dtype == cached.dtype && g.dtype == cached.dtype;
}

// The per-step mixed-precision inputs Python hands to an update (GradScaler's 1/scale and the
// stochastic rounding stream). The defaults leave an update unchanged.
// For CUDA parameters GradScaler's values stay on the device: grad_scale_ptr points at 1/scale
// and found_inf_ptr at the skip flag (device floats, never read by the host), and `stream` is
// the cudaStream_t to launch on (torch's current stream).
struct StepControl {
  float grad_scale = 1.0f;
  bool stochastic_rounding = false;
  uint64_t seed = 0;
  uint64_t counter = 0;
  uintptr_t grad_scale_ptr = 0;
  uintptr_t found_inf_ptr = 0;
  uintptr_t stream = 0;
};

// NOTE: [group plan]
// A GroupPlan caches, for one param group, everything that does not change between steps: the
// pointers of each parameter and of its state. gather() then only has to fetch this step's
// gradients and check that each parameter still is what was cached; the update itself is one
// call into the core per storage kind and device. A parameter that needs attention (its state
// does not exist yet, or anything about it changed) is reported back by index for Python to
// admit.
class GroupPlan {
 public:
  explicit GroupPlan(py::list params) : entries_(py::len(params)) {
    for (size_t i = 0; i < entries_.size(); ++i) {
      entries_[i].param = params[i];
      entries_[i].torch = is_torch_tensor(entries_[i].param.ptr());
    }
  }

  // Records a parameter whose state Python has validated and allocated: its data, its state
  // arrays (all of state_dtype), its step counter and float32 master copy (0 when absent), and
  // its id within the optimizer (keys its stochastic rounding stream).
  void admit(size_t i, uintptr_t param_ptr, int64_t numel, int dtype, std::vector<uintptr_t> state,
             int state_dtype, uintptr_t step, uintptr_t master, bool fresh, uint64_t id, bool cuda) {
    Entry& e = entries_.at(i);
    e.ready = true;
    e.cuda = cuda;
    e.info = {reinterpret_cast<void*>(param_ptr), numel, static_cast<DType>(dtype)};
    e.state_dtype = static_cast<DType>(state_dtype);
    for (int k = 0; k < kMaxStates; ++k)
      e.slots.state[k] = k < static_cast<int>(state.size()) ? reinterpret_cast<void*>(state[k]) : nullptr;
    e.slots.param = e.info.data;
    e.slots.numel = numel;
    e.slots.step = reinterpret_cast<float*>(step);
    e.slots.master = reinterpret_cast<float*>(master);
    e.slots.fresh = fresh;
    e.slots.id = id;
  }

  // Collects this step's gradients of `params` (the group's list, which must still hold the
  // parameters the plan was built for, in order; None if it does not: rebuild the plan).
  // Returns the indices Python must admit before the step can run (empty when the plan is
  // ready); parameters without a gradient are skipped.
  std::optional<std::vector<size_t>> gather(py::list params) {
    if (py::len(params) != entries_.size()) return std::nullopt;
    for (auto& bucket : buckets_) bucket.clear();
    fresh_.clear();
    std::vector<size_t> pending;
    for (size_t i = 0; i < entries_.size(); ++i) {
      Entry& e = entries_[i];
      if (PyList_GET_ITEM(params.ptr(), i) != e.param.ptr()) return std::nullopt;
      const py::object grad = grad_of(e.param.ptr());
      if (!grad || grad.is_none()) continue;
      ArrayInfo g;
      if (!e.ready || !describe_grad(e.param.ptr(), grad.ptr(), e.torch, e.info, g)) {
        e.ready = false;
        pending.push_back(i);
        continue;
      }
      e.slots.grad = g.data;
      buckets_[bucket_of(e.info.dtype, e.state_dtype, e.slots.master != nullptr, e.cuda)].push_back(e.slots);
      fresh_.push_back(&e.slots.fresh);
    }
    return pending;
  }

  // Runs one rule over the gathered tensors, one core call per storage kind (device,
  // parameter dtype, state dtype, master weights or not), without the GIL. cpu_step and
  // cuda_step take (config, tensors, count) and (config, tensors, count, stream).
  template <typename CpuStep, typename CudaStep>
  void run(const StepControl& control, CpuStep&& cpu_step, CudaStep&& cuda_step) {
    {
      py::gil_scoped_release release;
      for (int b = 0; b < kBuckets; ++b) {
        if (buckets_[b].empty()) continue;
        const bool cuda = b >= kBuckets / 2;
        const int kind = b % (kBuckets / 2);
        StepConfig config;
        config.param_dtype = static_cast<DType>(kind / (2 * kNumDTypes));
        config.state_dtype = static_cast<DType>(kind / 2 % kNumDTypes);
        config.master_weights = kind % 2 == 1;
        config.grad_scale = cuda ? reinterpret_cast<const float*>(control.grad_scale_ptr) : &control.grad_scale;
        config.found_inf = cuda ? reinterpret_cast<const float*>(control.found_inf_ptr) : nullptr;
        // Stochastic rounding applies to bfloat16 parameters without master weights; the
        // group's other parameters round to nearest.
        config.stochastic_rounding = control.stochastic_rounding &&
                                     config.param_dtype == DType::BFloat16 && !config.master_weights;
        config.seed = control.seed;
        config.counter = control.counter;
        const int64_t n = static_cast<int64_t>(buckets_[b].size());
        if (cuda) {
          cuda_step(config, buckets_[b].data(), n, reinterpret_cast<void*>(control.stream));
        } else {
          cpu_step(config, buckets_[b].data(), n);
        }
      }
    }
    for (bool* f : fresh_) *f = false;
    fresh_.clear();
  }

 private:
  static constexpr int kBuckets = kNumDTypes * kNumDTypes * 2 * 2;
  static int bucket_of(DType param, DType state, bool master, bool cuda) {
    return ((int(cuda) * kNumDTypes + static_cast<int>(param)) * kNumDTypes + static_cast<int>(state)) * 2 +
           int(master);
  }

  struct Entry {
    py::object param;
    bool torch = false;  // a torch tensor, else a genesis.nn.Parameter
    bool cuda = false;   // on a CUDA device (torch tensors only)
    bool ready = false;
    ArrayInfo info;
    DType state_dtype = DType::Float32;
    TensorSlots slots;
  };
  std::vector<Entry> entries_;
  std::array<std::vector<TensorSlots>, kBuckets> buckets_;
  std::vector<bool*> fresh_;
};

// Gradients for the clip functions, described once (see NOTE: [fast array description]).
class BufferList {
 public:
  // All CPU arrays, or all torch tensors on one CUDA device (`cuda`: checked by Python).
  BufferList(py::sequence arrays, bool cuda) : cuda_(cuda) {
    for (size_t i = 0; i < py::len(arrays); ++i) {
      py::object a = arrays[i];
      ArrayInfo info;
      const bool ok = cuda ? describe_torch(a.ptr(), info, /*check_cpu=*/false) && is_cuda(a.ptr()).ptr() == Py_True
                           : describe(a.ptr(), info);
      if (!ok)
        throw py::type_error("gradient " + std::to_string(i) + " is not a contiguous floating-point " +
                             (cuda ? "CUDA tensor" : "CPU NumPy array or torch tensor"));
      buffers_.push_back({info.data, info.numel, info.dtype});
    }
  }

  int result_dtype() const { return static_cast<int>(norm_dtype(buffers_)); }

  double norm(double norm_type) const {
    require_cpu();
    py::gil_scoped_release release;
    return total_norm(buffers_, norm_type);
  }
  void scale(double factor) const {
    require_cpu();
    py::gil_scoped_release release;
    scale_all(buffers_, factor);
  }
  void clamp(double limit, uintptr_t stream) const {
    py::gil_scoped_release release;
    if (!cuda_) return clamp_all(buffers_, limit);
    for_each_dtype([&](DType d, const Buffer* b, int64_t n) { GENESIS_CUDA_CALL(clamp(limit, d, b, n, as_stream(stream))); });
  }
  bool unscale(double factor) const {
    require_cpu();
    py::gil_scoped_release release;
    return unscale_all(buffers_, factor);
  }
  bool has_nonfinite() const {
    require_cpu();
    py::gil_scoped_release release;
    return any_nonfinite(buffers_);
  }

  // CUDA: writes the norm to the device float64 at `total`, without a host round trip. With
  // gradients of several dtypes, `scratch` holds one float64 per dtype (their norms, whose norm
  // is the total, as on the CPU).
  void norm_on_device(double norm_type, uintptr_t total, uintptr_t scratch, uintptr_t stream) const {
    require_cuda();
    py::gil_scoped_release release;
    const int kinds = dtype_count();
    int k = 0;
    for_each_dtype([&](DType d, const Buffer* b, int64_t n) {
      double* out = kinds == 1 ? reinterpret_cast<double*>(total) : reinterpret_cast<double*>(scratch) + k++;
      GENESIS_CUDA_CALL(global_norm(norm_type, d, b, n, out, as_stream(stream)));
    });
    if (kinds > 1) {
      const Buffer partial{reinterpret_cast<void*>(scratch), kinds};
      GENESIS_CUDA_CALL(global_norm(norm_type, DType::Float64, &partial, 1, reinterpret_cast<double*>(total), as_stream(stream)));
    }
  }
  // CUDA: x *= min(max_norm / (*total + 1e-6), 1) with *total read on the device.
  void clip_on_device(double max_norm, uintptr_t total, uintptr_t stream) const {
    require_cuda();
    py::gil_scoped_release release;
    for_each_dtype([&](DType d, const Buffer* b, int64_t n) {
      GENESIS_CUDA_CALL(clip_by_norm(max_norm, reinterpret_cast<const double*>(total), d, b, n, as_stream(stream)));
    });
  }

  int dtype_count() const {
    int kinds = 0;
    for_each_dtype([&](DType, const Buffer*, int64_t) { ++kinds; });
    return kinds;
  }

 private:
  static void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }
  // The host loops must never be handed device pointers (and the device launches, host ones).
  void require_cpu() const {
    if (cuda_) throw py::type_error("this operation needs CPU gradients; these are CUDA tensors");
  }
  void require_cuda() const {
    if (!cuda_) throw py::type_error("this operation needs CUDA gradients");
  }

  template <typename Fn> void for_each_dtype(Fn&& fn) const {
    for (int d = 0; d < kNumDTypes; ++d) {
      std::vector<Buffer> same;
      for (const TypedBuffer& b : buffers_)
        if (static_cast<int>(b.dtype) == d) same.push_back({b.data, b.numel});
      if (!same.empty()) fn(static_cast<DType>(d), same.data(), static_cast<int64_t>(same.size()));
    }
  }

  bool cuda_;
  std::vector<TypedBuffer> buffers_;
};

// NOTE: [options by name]
// Every rule's options cross from Python by keyword, through the rule's schema
// (RuleSpec::fields in include/genesis/rules/<rule>.h), never by position: adding a field to
// an options struct cannot silently shift the others. Keys are torch's param_group keys
// ("betas" is a pair); a key the schema does not know is a TypeError, a missing one keeps the
// struct's default.
struct FieldReader {
  const py::dict& kwargs;
  size_t used = 0;
  void operator()(const char* key, double& v) {
    if (kwargs.contains(key)) v = py::float_(kwargs[key]), ++used;
  }
  void operator()(const char* key, bool& v) {
    if (kwargs.contains(key)) v = py::bool_(kwargs[key]), ++used;
  }
  void operator()(const char* key, double& a, double& b) {
    if (!kwargs.contains(key)) return;
    const py::object pair = kwargs[key];
    if (!py::isinstance<py::sequence>(pair) || py::len(pair) != 2)
      throw py::value_error(std::string("Invalid ") + key + ": " + py::repr(pair).cast<std::string>() +
                            " (expected a pair)");
    a = py::float_(py::sequence(pair)[0]);
    b = py::float_(py::sequence(pair)[1]);
    ++used;
  }
};

// The schema as Python sees it: (key, kind) with kind "float", "bool" or "pair", in order.
struct FieldLister {
  py::list& out;
  void operator()(const char* key, double) const { out.append(py::make_tuple(key, "float")); }
  void operator()(const char* key, bool) const { out.append(py::make_tuple(key, "bool")); }
  void operator()(const char* key, double, double) const { out.append(py::make_tuple(key, "pair")); }
};

// The values of an options struct as a dict keyed like a torch param_group.
struct FieldWriter {
  py::dict& out;
  void operator()(const char* key, double v) const { out[key] = v; }
  void operator()(const char* key, bool v) const { out[key] = v; }
  void operator()(const char* key, double a, double b) const { out[key] = py::make_tuple(a, b); }
};

template <typename O> py::dict options_dict(O o) {
  py::dict out;
  RuleSpec<O>::fields(o, FieldWriter{out});
  return out;
}

// Binds one rule of include/genesis/rules/list.h: its options class (built by keyword, with
// its schema, state names and checks) and the plan method that runs it.
template <typename O>
void bind_rule(py::module_& m, py::class_<GroupPlan>& plan, const char* rule, const char* options_name) {
  using Spec = RuleSpec<O>;
  py::class_<O>(m, options_name)
      .def(py::init([](py::kwargs kwargs) {
        O o;
        FieldReader reader{kwargs};
        Spec::fields(o, reader);
        if (reader.used != kwargs.size()) {
          py::dict known = options_dict(O{});
          std::string unknown;
          for (auto item : kwargs)
            if (!known.contains(item.first)) unknown += (unknown.empty() ? "" : ", ") + py::str(item.first).cast<std::string>();
          throw py::type_error(std::string(Spec::name(o)) + " got unexpected option(s): " + unknown);
        }
        return o;
      }))
      .def_static("fields", [] {
        py::list out;
        O o;
        Spec::fields(o, FieldLister{out});
        return out;
      }, "The schema: (param_group key, kind) pairs, kind \"float\", \"bool\" or \"pair\", in torch's order.")
      .def_static("defaults", [] { return options_dict(O{}); }, "The core's default value of every option.")
      .def_property_readonly_static("counts_steps", [](py::object) { return Spec::kCountsSteps; })
      .def("as_dict", [](const O& o) { return options_dict(o); })
      .def("state_names", [](const O& o) { return Spec::state_names(o); },
           "Names of the per-element state arrays for these options, in the core's slot order.")
      .def("scalar_state", [](const O& o) { return scalar_state(o); },
           "(name, initial value) of each per-tensor float32 scalar, in slot order after the arrays.")
      .def("name", [](const O& o) { return Spec::name(o); });
  m.def("validate", [](const O& o) { validate(o); });
  plan.def(rule, [](GroupPlan& p, const O& o, const StepControl& control) {
    p.run(control, [&](const StepConfig& c, TensorSlots* t, int64_t n) { cpu::step(o, c, t, n); },
          [&](const StepConfig& c, TensorSlots* t, int64_t n, void* s) { GENESIS_CUDA_CALL(step(o, c, t, n, s)); });
  });
}

}  // namespace
}  // namespace genesis

PYBIND11_MODULE(_C, m) {
  using namespace genesis;
  m.doc() = "genesis compiled core (private; the public C++ API is include/genesis/)";

  m.def("register_torch", &register_torch, "Registers torch.Tensor and torch's float32/float64/float16/bfloat16 dtypes (in DType order).");

  m.def("supported_storage", [](int param, int state) {
    return supported_storage(static_cast<DType>(param), static_cast<DType>(state));
  });
  m.def("cuda_built", [] {
#ifdef GENESIS_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("cuda_device_count", [] {
#ifdef GENESIS_WITH_CUDA
    return cuda::device_count();
#else
    return 0;
#endif
  });
  m.def("cpu_isa", &cpu::isa, "The CPU kernel variant in use: \"avx2\" or \"baseline\".");
  m.def("get_num_threads", &cpu::num_threads);
  m.def("set_num_threads", &cpu::set_num_threads);

  py::class_<StepControl>(m, "StepControl")
      .def(py::init([](float grad_scale, bool stochastic_rounding, uint64_t seed, uint64_t counter,
                       uintptr_t grad_scale_ptr, uintptr_t found_inf_ptr, uintptr_t stream) {
             return StepControl{grad_scale, stochastic_rounding, seed, counter, grad_scale_ptr, found_inf_ptr, stream};
           }),
           py::kw_only(), py::arg("grad_scale") = 1.0f, py::arg("stochastic_rounding") = false,
           py::arg("seed") = 0, py::arg("counter") = 0, py::arg("grad_scale_ptr") = 0,
           py::arg("found_inf_ptr") = 0, py::arg("stream") = 0);

  py::class_<GroupPlan> plan(m, "GroupPlan");
  plan.def(py::init<py::list>())
      .def("admit", &GroupPlan::admit)
      .def("gather", &GroupPlan::gather);

  // Every element-wise rule: its options class (see NOTE: [options by name]), validate() and
  // the plan method named after it (plan.adam(options, control)). RULES lists them in order.
  py::list rules;
#define GENESIS_BIND_RULE(rule, Options, Class)               \
  bind_rule<Options>(m, plan, #rule, #Options);               \
  rules.append(py::make_tuple(#rule, #Options));
  GENESIS_ELEMENTWISE_RULES(GENESIS_BIND_RULE)
#undef GENESIS_BIND_RULE
  m.attr("RULES") = rules;

  py::class_<BufferList>(m, "BufferList")
      .def(py::init<py::sequence, bool>(), py::arg("arrays"), py::arg("cuda") = false)
      .def("norm_on_device", &BufferList::norm_on_device)
      .def("clip_on_device", &BufferList::clip_on_device)
      .def("dtype_count", &BufferList::dtype_count)
      .def("result_dtype", &BufferList::result_dtype)
      .def("norm", &BufferList::norm)
      .def("scale", &BufferList::scale)
      .def("clamp", &BufferList::clamp, py::arg("limit"), py::arg("stream") = 0)
      .def("unscale", &BufferList::unscale)
      .def("has_nonfinite", &BufferList::has_nonfinite);
}
