// Python bindings, the only file that knows about Python: it turns parameters into pointers
// and calls the C++ core with the GIL released. Policy (validation messages, state creation,
// state_dict) lives in the Python package; this file only does what must be fast.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "genesis/clip.h"
#include "genesis/cpu.h"
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

// Interned attribute names, created once and never freed (they live as long as the module).
PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }
PyObject* const kGrad = intern("grad");
PyObject* const kData = intern("data");
PyObject* const kDataPtr = intern("data_ptr");
PyObject* const kNumel = intern("numel");
PyObject* const kIsContiguous = intern("is_contiguous");
PyObject* const kDType = intern("dtype");
PyObject* const kIsCpu = intern("is_cpu");

// torch's Tensor type and dtype objects, registered by genesis/_interop.py the first time a
// torch tensor is seen, so torch stays an optional dependency.
PyTypeObject* torch_tensor_type = nullptr;
std::array<PyObject*, 4> torch_dtypes = {nullptr, nullptr, nullptr, nullptr};

struct ArrayInfo {
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::Float32;
};

bool numpy_dtype(int type_num, DType& out) {
  switch (type_num) {
    case py::detail::npy_api::NPY_FLOAT_: out = DType::Float32; return true;
    case py::detail::npy_api::NPY_DOUBLE_: out = DType::Float64; return true;
    default: return false;
  }
}

// Result of calling a no-argument method; null (with the Python error cleared) on failure.
py::object call_method(PyObject* obj, PyObject* name) {
  PyObject* r = PyObject_CallMethodNoArgs(obj, name);
  if (!r) PyErr_Clear();
  return py::reinterpret_steal<py::object>(r);
}

py::object get_attr(PyObject* obj, PyObject* name) {
  PyObject* r = PyObject_GetAttr(obj, name);
  if (!r) PyErr_Clear();
  return py::reinterpret_steal<py::object>(r);
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
  if (check_cpu && get_attr(obj, kIsCpu).ptr() != Py_True) return false;
  if (call_method(obj, kIsContiguous).ptr() != Py_True) return false;
  const py::object dtype = get_attr(obj, kDType);
  int code = 0;
  while (code < 4 && torch_dtypes[code] != dtype.ptr()) ++code;
  if (code == 4) return false;
  const py::object ptr = call_method(obj, kDataPtr);
  const py::object numel = call_method(obj, kNumel);
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
// now. For torch, the parameter's data pointer is enough: torch guarantees that a gradient's
// shape, dtype and device match its parameter, so a gradient that agrees with the cached numel
// and dtype belongs to the parameter we cached (a parameter whose data was swapped has a new
// pointer, or a gradient of another size). A genesis.nn.Parameter's gradient is a plain
// attribute nobody checked, so its shape is compared with the parameter's in full.
bool describe_grad(PyObject* param, PyObject* grad, bool torch, void*& param_ptr, ArrayInfo& g) {
  if (torch) {
    const py::object ptr = call_method(param, kDataPtr);
    param_ptr = ptr ? PyLong_AsVoidPtr(ptr.ptr()) : nullptr;
    return describe_torch(grad, g, /*check_cpu=*/false);
  }
  ArrayInfo p;
  const py::object data = get_attr(param, kData);
  if (!data || !describe_ndarray(data.ptr(), p) || !describe_ndarray(grad, g) || !same_shape(data.ptr(), grad))
    return false;
  param_ptr = p.data;
  return true;
}

// NOTE: [group plan]
// A GroupPlan caches, for one param group, everything that does not change between steps: the
// pointers of each parameter and of its state. gather() then only has to fetch this step's
// gradients and check that each parameter still is what was cached; the update itself is one
// call into the core per dtype. A parameter that needs attention (its state does not exist
// yet, or anything about it changed) is reported back by index for Python to admit.
class GroupPlan {
 public:
  explicit GroupPlan(py::list params) : entries_(py::len(params)) {
    for (size_t i = 0; i < entries_.size(); ++i) {
      entries_[i].param = params[i];
      entries_[i].torch = is_torch_tensor(entries_[i].param.ptr());
    }
  }

  // Records a parameter whose state Python has validated and allocated.
  void admit(size_t i, uintptr_t param_ptr, int64_t numel, int dtype, std::vector<uintptr_t> state,
             uintptr_t step, bool fresh) {
    Entry& e = entries_.at(i);
    e.ready = true;
    e.info = {reinterpret_cast<void*>(param_ptr), numel, static_cast<DType>(dtype)};
    for (int k = 0; k < kMaxStates; ++k)
      e.slots.state[k] = k < static_cast<int>(state.size()) ? reinterpret_cast<void*>(state[k]) : nullptr;
    e.slots.param = e.info.data;
    e.slots.numel = numel;
    e.slots.step = reinterpret_cast<float*>(step);
    e.slots.fresh = fresh;
  }

  // Collects this step's gradients. Returns the indices Python must admit before the step can
  // run (empty when the plan is ready); parameters without a gradient are skipped.
  std::vector<size_t> gather() {
    for (auto& bucket : buckets_) bucket.clear();
    std::vector<size_t> pending;
    for (size_t i = 0; i < entries_.size(); ++i) {
      Entry& e = entries_[i];
      const py::object grad = get_attr(e.param.ptr(), kGrad);
      if (!grad || grad.is_none()) continue;
      ArrayInfo g;
      void* param_ptr = nullptr;
      if (!e.ready || !describe_grad(e.param.ptr(), grad.ptr(), e.torch, param_ptr, g) ||
          param_ptr != e.info.data || g.numel != e.info.numel || g.dtype != e.info.dtype) {
        e.ready = false;
        pending.push_back(i);
        continue;
      }
      e.slots.grad = g.data;
      buckets_[static_cast<int>(e.info.dtype)].push_back(e.slots);
      fresh_.push_back(&e.slots.fresh);
    }
    if (!pending.empty()) fresh_.clear();
    return pending;
  }

  // Runs one rule over the gathered tensors, one core call per dtype, without the GIL.
  template <typename Step> void run(Step&& step) {
    {
      py::gil_scoped_release release;
      for (int d = 0; d < static_cast<int>(buckets_.size()); ++d)
        if (!buckets_[d].empty()) step(static_cast<DType>(d), buckets_[d].data(), static_cast<int64_t>(buckets_[d].size()));
    }
    for (bool* f : fresh_) *f = false;
    fresh_.clear();
  }

 private:
  struct Entry {
    py::object param;
    bool torch = false;  // a torch tensor, else a genesis.nn.Parameter
    bool ready = false;
    ArrayInfo info;
    TensorSlots slots;
  };
  std::vector<Entry> entries_;
  std::array<std::vector<TensorSlots>, 4> buckets_;
  std::vector<bool*> fresh_;
};

// Gradients for the clip functions, described once (see NOTE: [fast array description]).
class BufferList {
 public:
  explicit BufferList(py::sequence arrays) {
    for (size_t i = 0; i < py::len(arrays); ++i) {
      py::object a = arrays[i];
      ArrayInfo info;
      if (!describe(a.ptr(), info))
        throw py::type_error("gradient " + std::to_string(i) +
                             " is not a contiguous CPU float32/float64 NumPy array or torch tensor");
      buffers_.push_back({info.data, info.numel, info.dtype});
    }
  }

  // The dtype torch gives the total norm: the gradients' common dtype, promoted as torch
  // promotes (float64 wins; 16-bit types of two kinds meet at float32).
  int result_dtype() const {
    if (buffers_.empty()) return static_cast<int>(DType::Float32);
    DType d = buffers_[0].dtype;
    for (const TypedBuffer& b : buffers_) {
      if (b.dtype == d) continue;
      d = (b.dtype == DType::Float64 || d == DType::Float64) ? DType::Float64 : DType::Float32;
    }
    return static_cast<int>(d);
  }

  double norm(double norm_type) const {
    py::gil_scoped_release release;
    return total_norm(buffers_, norm_type);
  }
  void scale(double factor) const {
    py::gil_scoped_release release;
    scale_all(buffers_, factor);
  }
  void clamp(double limit) const {
    py::gil_scoped_release release;
    clamp_all(buffers_, limit);
  }

 private:
  std::vector<TypedBuffer> buffers_;
};

}  // namespace
}  // namespace genesis

PYBIND11_MODULE(_C, m) {
  using namespace genesis;
  m.doc() = "genesis compiled core (private; the public C++ API is include/genesis/)";

  m.def("register_torch", [](py::object tensor_type, py::sequence dtypes) {
    torch_tensor_type = reinterpret_cast<PyTypeObject*>(tensor_type.release().ptr());
    for (size_t i = 0; i < torch_dtypes.size(); ++i) torch_dtypes[i] = py::object(dtypes[i]).release().ptr();
  }, "Registers torch.Tensor and torch's float32/float64/float16/bfloat16 dtypes (in DType order).");

  m.def("get_num_threads", &cpu::num_threads);
  m.def("set_num_threads", &cpu::set_num_threads);

  // Hyperparameters cross as the core's own option structs, validated by the same checks the
  // C++ API uses (include/genesis/validate.h); std::invalid_argument arrives as ValueError.
  py::class_<SgdOptions>(m, "SgdOptions")
      .def(py::init([](double lr, double momentum, double dampening, double weight_decay,
                       bool nesterov, bool maximize) {
             return SgdOptions{lr, momentum, dampening, weight_decay, nesterov, maximize};
           }),
           py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
           py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"));
  py::class_<AdamOptions>(m, "AdamOptions")
      .def(py::init([](double lr, double beta1, double beta2, double eps, double weight_decay,
                       bool amsgrad, bool maximize) {
             return AdamOptions{lr, beta1, beta2, eps, weight_decay, amsgrad, maximize};
           }),
           py::kw_only(), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
           py::arg("weight_decay"), py::arg("amsgrad"), py::arg("maximize"));
  py::class_<RmspropOptions>(m, "RmspropOptions")
      .def(py::init([](double lr, double alpha, double eps, double weight_decay, double momentum,
                       bool centered, bool maximize) {
             return RmspropOptions{lr, alpha, eps, weight_decay, momentum, centered, maximize};
           }),
           py::kw_only(), py::arg("lr"), py::arg("alpha"), py::arg("eps"),
           py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"), py::arg("maximize"));
  m.def("validate", py::overload_cast<const SgdOptions&>(&validate));
  m.def("validate", py::overload_cast<const AdamOptions&>(&validate));
  m.def("validate", py::overload_cast<const RmspropOptions&>(&validate));

  py::class_<GroupPlan>(m, "GroupPlan")
      .def(py::init<py::list>())
      .def("admit", &GroupPlan::admit)
      .def("gather", &GroupPlan::gather)
      .def("sgd", [](GroupPlan& plan, const SgdOptions& o) {
        plan.run([&](DType d, TensorSlots* t, int64_t n) { cpu::sgd_step(o, d, t, n); });
      })
      .def("adam", [](GroupPlan& plan, const AdamOptions& o, bool decoupled) {
        plan.run([&](DType d, TensorSlots* t, int64_t n) { cpu::adam_step(o, decoupled, d, t, n); });
      })
      .def("rmsprop", [](GroupPlan& plan, const RmspropOptions& o) {
        plan.run([&](DType d, TensorSlots* t, int64_t n) { cpu::rmsprop_step(o, d, t, n); });
      });

  py::class_<BufferList>(m, "BufferList")
      .def(py::init<py::sequence>())
      .def("result_dtype", &BufferList::result_dtype)
      .def("norm", &BufferList::norm)
      .def("scale", &BufferList::scale)
      .def("clamp", &BufferList::clamp);
}
