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
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "genesis/checkpoint.h"
#include "genesis/clip.h"
#include "genesis/cpu.h"
#include "genesis/quantized.h"
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
// Parameter that does not override it) call that descriptor directly, and where the descriptor
// is a plain C getter or no-argument C method, its C function itself (no argument parsing).
// Anything else takes the ordinary Python path. Failures return null with the error cleared.
struct Member {
  enum Kind { Get, Call };
  Member(const char* n, Kind k) : name(intern(n)), kind(k) {}

  void resolve(PyTypeObject* type) {
    descr = _PyType_Lookup(type, name);
    method = nullptr;
    get_fn = nullptr;
    if (!descr) return;
    if (kind == Call && Py_IS_TYPE(descr, &PyMethodDescr_Type)) {
      const PyMethodDef* def = reinterpret_cast<PyMethodDescrObject*>(descr)->d_method;
      if (def->ml_flags == METH_NOARGS) method = def->ml_meth;
    } else if (kind == Get && Py_IS_TYPE(descr, &PyGetSetDescr_Type)) {
      const PyGetSetDef* def = reinterpret_cast<PyGetSetDescrObject*>(descr)->d_getset;
      get_fn = def->get;
      closure = def->closure;
    }
  }

  py::object operator()(PyObject* obj) const {
    PyObject* r;
    if (descr && _PyType_Lookup(Py_TYPE(obj), name) == descr) {
      if (method)
        r = method(obj, nullptr);
      else if (get_fn)
        r = get_fn(obj, closure);
      else
        r = kind == Call ? PyObject_Vectorcall(descr, &obj, 1, nullptr)
                         : Py_TYPE(descr)->tp_descr_get(descr, obj, reinterpret_cast<PyObject*>(Py_TYPE(obj)));
    } else {
      r = kind == Call ? PyObject_CallMethodNoArgs(obj, name) : PyObject_GetAttr(obj, name);
    }
    if (!r) PyErr_Clear();
    return py::reinterpret_steal<py::object>(r);
  }

  PyObject* name;  // interned once, never freed: lives as long as the module
  Kind kind;
  PyObject* descr = nullptr;  // borrowed from torch's type, which outlives every call
  PyCFunction method = nullptr;
  ::getter get_fn = nullptr;
  void* closure = nullptr;
};

Member grad_of("grad", Member::Get);
Member data_of("data", Member::Get);
Member data_ptr_of("data_ptr", Member::Call);
Member numel_of("numel", Member::Call);
Member is_contiguous("is_contiguous", Member::Call);
Member stride_of("stride", Member::Call);
Member dtype_of("dtype", Member::Get);
Member is_cpu("is_cpu", Member::Get);
Member is_cuda("is_cuda", Member::Get);
Member get_device_of("get_device", Member::Call);
Member untyped_storage_of("untyped_storage", Member::Call);
Member is_neg_of("is_neg", Member::Call);
Member version_of("_version", Member::Get);
Member size_of("size", Member::Call);
// Of the storage objects untyped_storage() returns (resolved on the first one seen).
Member storage_data_ptr("data_ptr", Member::Call);
Member storage_nbytes("nbytes", Member::Call);

// torch's Tensor type and dtype objects, registered by genesis/_interop.py the first time a
// torch tensor is seen, so torch stays an optional dependency.
PyTypeObject* torch_tensor_type = nullptr;
// The floating-point dtypes, then uint8 (the codes of 8-bit state): kArrayDTypes in DType order.
constexpr int kArrayDTypes = kNumDTypes + 1;
std::array<PyObject*, kArrayDTypes> torch_dtypes = {nullptr, nullptr, nullptr, nullptr, nullptr};

// NOTE: [version counters]
// torch counts the in-place changes of every tensor (its version counter, shared by a tensor's
// views and detached aliases) and autograd checks the count of each tensor a graph saved when
// backward reaches it: a step between a forward and its backward is then torch's RuntimeError
// ("... has been modified by an inplace operation"), not gradients from the updated weights.
// The core writes through pointers, which torch cannot see, so every array the core wrote for a
// torch tensor (a parameter a step updated, a gradient clip_grad_norm_, clip_grad_value_ or
// unscale_ rewrote) has its count advanced after the write, by torch's own
// torch._C._increment_version (about 50 ns per tensor), as torch's in-place operations would.
// Parameters without a gradient are not written and keep their count, as with torch. State
// arrays are not advanced: no autograd graph saves them (torch's in-place state updates do
// advance theirs).
PyObject* torch_increment_version = nullptr;

void register_torch(py::object tensor_type, py::sequence dtypes, py::object increment_version) {
  torch_tensor_type = reinterpret_cast<PyTypeObject*>(tensor_type.release().ptr());
  for (size_t i = 0; i < torch_dtypes.size(); ++i) torch_dtypes[i] = py::object(dtypes[i]).release().ptr();
  for (Member* m : {&grad_of, &data_ptr_of, &numel_of, &is_contiguous, &stride_of, &dtype_of, &is_cpu, &is_cuda,
                    &get_device_of, &untyped_storage_of, &is_neg_of, &size_of, &version_of})
    m->resolve(torch_tensor_type);
  torch_increment_version = increment_version.is_none() ? nullptr : increment_version.release().ptr();
}

// NOTE: [batched tensor facts]
// A step of a model with many small tensors is bound by the per-tensor checks of gather(), a
// dozen torch method calls each (NOTE: [fast array description]), not by its arithmetic. torch
// has two C-level tools for exactly this that a compiled caller may drive, registered here by
// genesis/_interop.py after it has tested them on this torch (_tensor_facts_behave):
// - torch._C._dynamo.guards.TensorGuards, the check torch.compile runs before every call of a
//   compiled graph: built once from example tensors with their sizes and strides, its check()
//   tells in one call whether every tensor of a list still has its example's exact type,
//   dispatch keys (device type, the negative and conjugate bits, inference, sparse layouts),
//   dtype, device index, requires_grad, sizes and strides: about 50 ns a tensor here, where the
//   calls it stands for (is_contiguous/stride, dtype, numel, is_neg, get_device) cost 250-300.
// - the C function that torch's generated C++ wrappers read a tensor's data pointer with
//   (torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr, its address): no Python
//   int is made. It raises for a tensor without storage, so it is only called on tensors that
//   a guard has just accepted (dense, of an exact torch type).
// A plan builds a guard over its parameters and the gradients of a step once the same set of
// parameters has had gradients through the per-call checks twice in a row (GroupPlan::
// gather_held); a step whose tensors the guard refuses, or any other set, takes the per-call
// checks, which stay the reference: the guard only ever says "the same as what the per-call
// checks accepted". Only the one-call step uses it (NOTE: [one-call step]).
struct TensorFacts {
  PyTypeObject* parameter_type = nullptr;  // torch.nn.Parameter (exact types: see exact_torch)
  PyObject* mode_enabled = nullptr;        // torch._C._is_torch_function_mode_enabled
  PyObject* guards_type = nullptr;         // TensorGuards, null when not registered
  void* (*data_ptr)(PyObject*) = nullptr;  // the data pointer function, null when not registered
} tensor_facts;

void register_tensor_facts(py::object parameter_type, py::object mode_enabled, py::object guards_type,
                           uintptr_t data_ptr_address) {
  tensor_facts.parameter_type = reinterpret_cast<PyTypeObject*>(parameter_type.release().ptr());
  tensor_facts.mode_enabled = mode_enabled.release().ptr();
  tensor_facts.guards_type = guards_type.is_none() || data_ptr_address == 0 ? nullptr : guards_type.release().ptr();
  tensor_facts.data_ptr = tensor_facts.guards_type ? reinterpret_cast<void* (*)(PyObject*)>(data_ptr_address) : nullptr;
}

// Whether `obj` is exactly a torch.Tensor or torch.nn.Parameter: every method genesis calls on
// one is torch's C function, so no Python code runs (a subclass may override anything).
bool exact_torch(PyObject* obj) {
  return torch_tensor_type && (Py_TYPE(obj) == torch_tensor_type || Py_TYPE(obj) == tensor_facts.parameter_type);
}

// The check method of a TensorGuards over `tensors` (exact torch tensors), None if it cannot be built.
py::object build_guard(const std::vector<PyObject*>& tensors) {
  if (!tensor_facts.guards_type) return py::none();
  const size_t n = tensors.size();
  py::tuple args(n);
  py::list sizes(n), strides(n);
  for (size_t i = 0; i < n; ++i) {
    const py::object size = size_of(tensors[i]);
    const py::object stride = stride_of(tensors[i]);
    if (!size || !stride) return py::none();
    // As lists: TensorGuards reads each entry as a list (a tuple is refused).
    auto size_list = py::reinterpret_steal<py::object>(PySequence_List(size.ptr()));
    auto stride_list = py::reinterpret_steal<py::object>(PySequence_List(stride.ptr()));
    if (!size_list || !stride_list) return PyErr_Clear(), py::none();
    sizes[i] = size_list;
    strides[i] = stride_list;
    args[i] = py::reinterpret_borrow<py::object>(tensors[i]);
  }
  py::dict kwargs;
  kwargs["dynamic_dims_sizes"] = sizes;
  kwargs["dynamic_dims_strides"] = strides;
  PyObject* guard = PyObject_Call(tensor_facts.guards_type, args.ptr(), kwargs.ptr());
  if (!guard) return PyErr_Clear(), py::none();
  PyObject* check = PyObject_GetAttrString(guard, "check");
  Py_DECREF(guard);
  if (!check) return PyErr_Clear(), py::none();
  return py::reinterpret_steal<py::object>(check);
}

// Whether a guard's check accepts `tensors` (as many as it was built from, in the same order).
bool guard_accepts(const py::object& check, const std::vector<PyObject*>& tensors) {
  if (check.is_none()) return false;
  PyObject* r = PyObject_Vectorcall(check.ptr(), tensors.data(), tensors.size(), nullptr);
  if (!r) return PyErr_Clear(), false;
  const bool ok = r == Py_True;
  Py_DECREF(r);
  return ok;
}

// Advances the version counters of the torch tensors the core has written, a sequence
// (NOTE: [version counters]).
void advance_versions(const py::object& written) {
  if (torch_increment_version && py::len(written) > 0)
    py::reinterpret_borrow<py::object>(torch_increment_version)(written);
}
void advance_versions(const std::vector<py::object>& written) {
  if (written.empty() || !torch_increment_version) return;
  py::tuple tensors(written.size());
  for (size_t i = 0; i < written.size(); ++i) tensors[i] = written[i];
  advance_versions(tensors);
}

struct ArrayInfo {
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::Float32;
};

constexpr int kNumpyHalf = 23;  // NPY_HALF (pybind11's npy_api does not name it)

bool numpy_dtype(int type_num, DType& out) {
  switch (type_num) {
    case py::detail::npy_api::NPY_FLOAT_:
      out = DType::Float32;
      return true;
    case py::detail::npy_api::NPY_DOUBLE_:
      out = DType::Float64;
      return true;
    case kNumpyHalf:
      out = DType::Float16;
      return true;
    case py::detail::npy_api::NPY_UBYTE_:
      out = DType::UInt8;
      return true;
    default:
      return false;
  }
}

// NumPy's byte-order character of a dtype that is stored in the other byte order than this
// machine's: the core reads and writes native numbers only.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
constexpr char kForeignByteOrder = '<';
#else
constexpr char kForeignByteOrder = '>';
#endif

// What the core needs of an array it will only read (a gradient), or also write (a
// parameter, a state array).
enum class Access { Read, Write };

// Describes a contiguous, native-byte-order NumPy array of a supported dtype from its C struct
// (writeable too for Access::Write).
bool describe_ndarray(PyObject* obj, ArrayInfo& out, Access access) {
  if (!py::isinstance<py::array>(obj)) return false;
  auto* a = py::detail::array_proxy(obj);
  auto* d = py::detail::array_descriptor_proxy(a->descr);
  if (!(a->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) || d->byteorder == kForeignByteOrder ||
      !numpy_dtype(d->type_num, out.dtype))
    return false;
  if (access == Access::Write && !(a->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_)) return false;
  int64_t n = 1;
  for (int i = 0; i < a->nd; ++i) n *= a->dimensions[i];
  out.data = a->data;
  out.numel = n;
  return true;
}

bool is_torch_tensor(PyObject* obj) { return torch_tensor_type && PyObject_TypeCheck(obj, torch_tensor_type); }

// NOTE: [negative bit]
// A real torch tensor may carry a negative bit: a view whose elements are minus what its
// memory holds (torch._neg_view, the .imag of a conjugated complex tensor), resolved by torch's
// operations as they read it. The core reads and writes memory, so such a parameter or gradient
// would be misread (every element's sign flipped). Python refuses one when it admits a
// parameter (genesis/_interop.py: a TypeError naming resolve_neg()); gradients are new objects
// every step, so gather() asks each one (is_neg(), about 85 ns) and sends a negated one back to
// Python, which refuses it. A parameter's bit is not asked again after its admission: only
// `p.data = torch._neg_view(p.data)` (the same memory) could set it, and a per-step call for
// every parameter is not worth that. (A conjugated complex tensor is refused by torch's own
// view_as_real, which every complex parameter and gradient goes through.)
bool negated(PyObject* tensor) {
  const py::object neg = is_neg_of(tensor);
  return !neg || neg.ptr() != Py_False;
}

// The core's dtype of a torch tensor, or -1 for a dtype it does not handle.
int torch_dtype_code(PyObject* obj) {
  const py::object dtype = dtype_of(obj);
  int code = 0;
  while (code < kArrayDTypes && torch_dtypes[code] != dtype.ptr()) ++code;
  return code == kArrayDTypes ? -1 : code;
}

// NOTE: [dense layouts]
// An element-wise rule only needs each array's elements in one block of memory, in the same
// order in every array of a parameter: channels_last weights (strides a permutation of the
// contiguous ones) qualify as well as contiguous tensors. Python admits such a parameter with
// its strides (it has checked that they describe a dense, non-overlapping block, and creates
// the state with the same strides, as torch's preserve_format does); from then on the plan
// compares the strides of the parameter, its gradient and its state with those, where a
// contiguous entry asks is_contiguous().
// Whether a torch tensor has the admitted layout: `strides` None means contiguous.
bool has_layout(PyObject* obj, PyObject* strides) {
  if (strides == Py_None) return is_contiguous(obj).ptr() == Py_True;
  const py::object now = stride_of(obj);
  return now && PyObject_RichCompareBool(now.ptr(), strides, Py_EQ) == 1;
}

// Describes a torch tensor of a supported dtype laid out as `strides` says (contiguous when
// None: NOTE: [dense layouts]). The device is checked only when asked: a gradient's device is
// guaranteed by torch to be its parameter's.
bool describe_torch(PyObject* obj, ArrayInfo& out, bool check_cpu, PyObject* strides = Py_None) {
  if (!is_torch_tensor(obj)) return false;
  if (check_cpu && is_cpu(obj).ptr() != Py_True) return false;
  if (!has_layout(obj, strides)) return false;
  const int code = torch_dtype_code(obj);
  if (code < 0) return false;
  const py::object ptr = data_ptr_of(obj);
  const py::object numel = numel_of(obj);
  if (!ptr || !numel) return false;
  out.dtype = static_cast<DType>(code);
  out.data = PyLong_AsVoidPtr(ptr.ptr());
  out.numel = PyLong_AsLongLong(numel.ptr());
  // A tensor subclass that wraps others (DTensor, ...) has elements but no memory: data_ptr() is
  // 0. Never described, so never written (NOTE: [DTensor parameters] in genesis/_interop.py).
  return out.data != nullptr || out.numel == 0;
}

// Describes a contiguous CPU array (NumPy ndarray or torch tensor) of a supported dtype.
// Returns false for anything else. See NOTE: [fast array description].
bool describe(PyObject* obj, ArrayInfo& out, Access access) {
  return describe_ndarray(obj, out, access) || describe_torch(obj, out, /*check_cpu=*/true);
}

// NOTE: [CUDA array interface]
// CUDA arrays of other libraries (CuPy, ...) arrive as a genesis.nn.Parameter's .data exposing
// __cuda_array_interface__ (versions 2 and 3; genesis/_cuda_array.py validates it with named
// errors, docs/semantics.md#cuda-arrays). There is no C struct to read: every step looks up the
// interface dict of each such parameter and gradient (about a microsecond per array; CuPy
// builds the dict on each access), for the data pointer and read-only flag, shape, typestr
// (native float32/float64/float16, or uint8 state codes), strides (None or C-contiguous), mask
// (absent or None) and stream (the producer's: CuPy's current stream; the launch stream). As
// with NumPy, holding the array object keeps its memory allocated (the protocol asks consumers
// to), so Held needs no pin; anything unexpected goes back to Python.
PyObject* const cuda_array_interface = intern("__cuda_array_interface__");

struct CudaArrayView {
  PyObject* shape = nullptr;  // the interface's shape tuple (borrowed from `interface`)
  uintptr_t stream = 0;       // the interface's stream, 0 for None (no synchronization needed)
  py::object interface;
};

bool cuda_array_dtype(PyObject* typestr, DType& out) {
  Py_ssize_t n = 0;
  const char* s = PyUnicode_Check(typestr) ? PyUnicode_AsUTF8AndSize(typestr, &n) : nullptr;
  if (!s || n != 3 || s[0] == kForeignByteOrder || (s[0] == '|') != (s[2] == '1')) return false;
  const std::string kind(s + 1, 2);
  if (kind == "f4")
    out = DType::Float32;
  else if (kind == "f8")
    out = DType::Float64;
  else if (kind == "f2")
    out = DType::Float16;
  else if (kind == "u1")
    out = DType::UInt8;
  else
    return false;
  return true;
}

// Describes a contiguous CUDA array of a supported dtype from its interface (writeable too for
// Access::Write); `view` receives its shape and stream. See NOTE: [CUDA array interface].
bool describe_cuda_array(PyObject* obj, ArrayInfo& out, Access access, CudaArrayView& view) {
  if (is_torch_tensor(obj) || py::isinstance<py::array>(obj)) return false;
  view.interface = py::reinterpret_steal<py::object>(PyObject_GetAttr(obj, cuda_array_interface));
  PyObject* d = view.interface.ptr();
  if (!d || !PyDict_Check(d)) return PyErr_Clear(), false;
  PyObject* data = PyDict_GetItemString(d, "data");  // borrowed, as every item below
  PyObject* shape = PyDict_GetItemString(d, "shape");
  PyObject* typestr = PyDict_GetItemString(d, "typestr");
  PyObject* strides = PyDict_GetItemString(d, "strides");
  PyObject* mask = PyDict_GetItemString(d, "mask");
  PyObject* stream = PyDict_GetItemString(d, "stream");
  PyObject* version = PyDict_GetItemString(d, "version");
  if (!data || !PyTuple_Check(data) || PyTuple_GET_SIZE(data) != 2 || !PyLong_Check(PyTuple_GET_ITEM(data, 0)) ||
      !shape || !PyTuple_Check(shape) || !typestr || !version || !PyLong_Check(version) || PyLong_AsLong(version) < 2 ||
      (mask && mask != Py_None) || !cuda_array_dtype(typestr, out.dtype))
    return PyErr_Clear(), false;
  if (access == Access::Write && PyObject_IsTrue(PyTuple_GET_ITEM(data, 1)) != 0) return PyErr_Clear(), false;
  const Py_ssize_t nd = PyTuple_GET_SIZE(shape);
  const bool strided = strides && strides != Py_None;
  if (strided && (!PyTuple_Check(strides) || PyTuple_GET_SIZE(strides) != nd)) return false;
  int64_t n = 1, expected = dtype_size(out.dtype);
  bool contiguous = true;
  for (Py_ssize_t i = nd - 1; i >= 0; --i) {
    const int64_t extent = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, i));
    if (extent < 0) return PyErr_Clear(), false;
    // A dimension of extent 1 may have any stride (NumPy's rule), as in genesis/_cuda_array.py.
    if (strided && extent != 1 && PyLong_AsLongLong(PyTuple_GET_ITEM(strides, i)) != expected) contiguous = false;
    n *= extent;
    expected *= extent;
  }
  if ((!contiguous && n != 0) || PyErr_Occurred()) return PyErr_Clear(), false;
  view.stream = 0;
  if (stream && stream != Py_None) {
    if (!PyLong_Check(stream) || PyBool_Check(stream)) return false;
    view.stream = reinterpret_cast<uintptr_t>(PyLong_AsVoidPtr(stream));
    if (view.stream == 0) return PyErr_Clear(), false;  // 0 is disallowed by the protocol
  }
  out.data = PyLong_AsVoidPtr(PyTuple_GET_ITEM(data, 0));
  out.numel = n;
  view.shape = shape;
  return !PyErr_Occurred() || (PyErr_Clear(), false);
}
bool describe_cuda_array(PyObject* obj, ArrayInfo& out, Access access) {
  CudaArrayView view;
  return describe_cuda_array(obj, out, access, view);
}

bool same_shape(PyObject* a, PyObject* b) {
  auto* x = py::detail::array_proxy(a);
  auto* y = py::detail::array_proxy(b);
  return x->nd == y->nd && std::equal(x->dimensions, x->dimensions + x->nd, y->dimensions);
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
  // The optimizer's deferred clip (StepConfig::clip_coef, clip_value): the coefficient as a host
  // double, or for CUDA parameters clip_coef_ptr, a device float64 (no host sync).
  double clip_coef = 1.0;
  uintptr_t clip_coef_ptr = 0;
  double clip_value = std::numeric_limits<double>::infinity();
  // capturable=True with a CUDA tensor lr: its device address (StepConfig::lr), 0 otherwise.
  uintptr_t lr_ptr = 0;
  bool lr_is_double = false;
};

// NOTE: [pinned storage]
// A plan keeps raw pointers across steps, and the user may change what a pointer means at any
// time between steps: `p.data = ...`, `model.half()`, `state["exp_avg"].data = x.clone()`
// (the "move optimizer state to a device" recipe), `a.dtype = ...` on a NumPy array. Two rules
// make this safe:
// 1. Every array the kernel writes is pinned when it is admitted: for torch, the plan holds a
//    second alias (`detach()`) of the admitted storage, so that memory stays allocated however
//    the user's tensor is re-pointed, and no other tensor can ever be given its address. For
//    NumPy, holding the array object is enough (its buffer cannot be swapped); likewise for CUDA
//    arrays of other libraries (NOTE: [CUDA array interface]).
// 2. Before an array is used again, its data pointer and dtype (NumPy: also contiguity, byte
//    order and writeability, from its C struct) are re-read and compared with what was
//    admitted. Because of (1), an equal pointer means the same memory. Anything different is
//    sent back to Python, which validates the array as it is now and admits it again (torch
//    then uses the user's new tensors, as torch.optim does).
//    The parameter is re-checked every step (the user holds it). A state array can only be
//    changed by code holding a reference to it, and the only way to get one is through the
//    optimizer (optimizer.state's accessors, state_dict()), which tells the plan so
//    (`verify_state`): then every state array is re-checked, and the plan notes which ones are
//    still referenced from outside (their reference count says so); those are re-checked
//    every step until they are private again. A plain training loop thus pays nothing per
//    step for its state, and a user who keeps a state tensor is still never trusted.
// Gradients are new objects every step: gather() pins each one's memory for the duration of the
// step (NOTE: [read pins]), so another thread that drops or re-points a gradient while the
// update runs (the GIL is released during large ones, see run()), or between gather() and run(),
// cannot free memory the kernel reads. (The one-call step, which runs no Python code between
// the two, holds the gradients instead: NOTE: [one-call step].)

// One array the kernel reads or writes besides the gradient, as admitted.
struct Held {
  py::object array;  // what the user sees (the parameter, or an entry of optimizer.state)
  py::object pin;    // torch: an alias that keeps the admitted storage allocated
  ArrayInfo info;
  bool watched = true;              // referenced from outside the optimizer: re-check every step
  py::object strides = py::none();  // torch: the admitted strides, None if contiguous (NOTE: [dense layouts])

  // Whether `array` still is the memory that was admitted (see NOTE: [pinned storage]).
  bool unchanged(bool torch, bool cuda_array = false) const {
    PyObject* obj = array.ptr();
    if (torch) {
      // The element count too: `p.data = p.data[:n]` keeps the pointer and the dtype.
      const py::object ptr = data_ptr_of(obj);
      const py::object numel = ptr ? numel_of(obj) : py::object();
      return numel && PyLong_AsVoidPtr(ptr.ptr()) == info.data && PyLong_AsLongLong(numel.ptr()) == info.numel &&
             torch_dtype_code(obj) == static_cast<int>(info.dtype) &&
             (strides.is_none() || has_layout(obj, strides.ptr()));
    }
    ArrayInfo now;
    const bool ok =
        cuda_array ? describe_cuda_array(obj, now, Access::Write) : describe_ndarray(obj, now, Access::Write);
    return ok && now.data == info.data && now.numel == info.numel && now.dtype == info.dtype;
  }
};

// References to a state array that the optimizer itself holds: its entry in optimizer.state,
// and Held::array. An array with no more than these is private: only the optimizer can reach it.
constexpr Py_ssize_t kPrivateRefs = 2;

bool is_private(PyObject* array) {
#ifdef Py_GIL_DISABLED
  (void)array;
  return false;  // reference counts are not exact in free-threaded builds: always re-check
#else
  return Py_REFCNT(array) <= kPrivateRefs;
#endif
}

// A torch tensor's pin, or None for NumPy arrays (held by Held::array already).
py::object pin_of(const py::object& array) {
  return is_torch_tensor(array.ptr()) ? array.attr("detach")() : py::none();
}

// NOTE: [read pins]
// An array the core only reads (a gradient) must stay allocated until the read is over too:
// another thread may re-point the tensor (`p.grad.data = ...`, `set_()`) between the moment its
// pointer is read and the end of the update, and freeing the old memory would leave the kernel
// reading freed (even unmapped) memory. Holding the tensor object does not prevent that; its
// storage object does, and costs a seventh of an alias (detach()). torch_read_pin() returns that
// storage, taken before the pointer is read; read_pin_covers() then checks that the bytes the
// core will read lie inside it. Whatever ran in between (a thread switch, Python code of a tensor
// subclass or a torch function mode, a garbage collection's finalizers), memory inside a
// storage that is held is allocated memory; a description the pin does not cover is retried.
// NumPy arrays (and CUDA arrays of other libraries) cannot be re-pointed: the object itself
// is their pin.
py::object torch_read_pin(PyObject* tensor) {
  py::object storage = untyped_storage_of(tensor);
  if (storage && !storage_data_ptr.descr) {
    storage_data_ptr.resolve(Py_TYPE(storage.ptr()));
    storage_nbytes.resolve(Py_TYPE(storage.ptr()));
  }
  return storage;
}
bool read_pin_covers(const py::object& storage, const void* data, int64_t numel, DType dtype) {
  if (numel == 0) return true;
  const py::object base = storage_data_ptr(storage.ptr());
  const py::object nbytes = storage_nbytes(storage.ptr());
  if (!base || !nbytes) return false;
  const auto lo = reinterpret_cast<uintptr_t>(PyLong_AsVoidPtr(base.ptr()));
  const auto size = static_cast<uintptr_t>(PyLong_AsLongLong(nbytes.ptr()));
  const auto at = reinterpret_cast<uintptr_t>(data);
  if (PyErr_Occurred()) return PyErr_Clear(), false;
  const auto bytes = static_cast<uintptr_t>(numel) * dtype_size(dtype);
  return at >= lo && at - lo <= size && bytes <= size - (at - lo);
}

enum class ReadPin { Ok, Refused, Moving };
// Pins torch tensor `tensor` and describes it (`describe(info)`, false: refused), retrying while
// another thread re-points it in between (Moving if it never holds still).
template <typename Describe>
ReadPin pin_for_read(PyObject* tensor, py::object& pin, ArrayInfo& info, Describe&& describe) {
  constexpr int kAttempts = 8;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    pin = torch_read_pin(tensor);
    if (!pin || !describe(info)) return ReadPin::Refused;
    if (read_pin_covers(pin, info.data, info.numel, info.dtype)) return ReadPin::Ok;
  }
  return ReadPin::Moving;
}

// Describes an array Python hands to admit(): the core will write it, so it must be a
// contiguous, writeable array of a supported dtype on the right device. Python has validated
// it already; this is the last line of defence against a pointer that does not mean what the
// plan will assume.
ArrayInfo describe_for_write(const py::object& array, bool cuda, const char* what, PyObject* strides = Py_None) {
  ArrayInfo info;
  bool ok;
  if (strides != Py_None)  // a torch tensor of a dense layout (NOTE: [dense layouts])
    ok = describe_torch(array.ptr(), info, /*check_cpu=*/!cuda, strides) &&
         (!cuda || is_cuda(array.ptr()).ptr() == Py_True);
  else
    ok = cuda ? (describe_torch(array.ptr(), info, /*check_cpu=*/false) && is_cuda(array.ptr()).ptr() == Py_True) ||
                    describe_cuda_array(array.ptr(), info, Access::Write)
              : describe(array.ptr(), info, Access::Write);
  if (!ok)
    throw py::value_error(std::string("genesis internal error: ") + what + " is not a writeable contiguous array");
  return info;
}

// NOTE: [group plan]
// A GroupPlan caches, for one param group, everything that does not change between steps: the
// pointers of each parameter and of its state, each pinned (NOTE: [pinned storage]). gather()
// fetches this step's gradients and re-checks that every cached array still is what was
// admitted; the update itself is one call into the core per storage kind and device. A
// parameter that needs attention (its state does not exist yet, or anything about it changed)
// is reported back by index for Python to admit.
class GroupPlan {
 public:
  explicit GroupPlan(py::list params) : entries_(py::len(params)) {
    std::unordered_set<PyObject*> seen;
    for (size_t i = 0; i < entries_.size(); ++i) {
      entries_[i].param = params[i];
      entries_[i].torch = is_torch_tensor(params[i].ptr());
      // A parameter listed twice (torch only warns) is updated once: the core must never
      // update one array twice in one parallel region.
      entries_[i].duplicate = !seen.insert(params[i].ptr()).second;
    }
  }

  // Records a parameter whose state Python has validated and allocated: its data array (the
  // tensor itself, or a genesis.nn.Parameter's .data), its state arrays (all of state_dtype,
  // in the rule's slot order), its per-tensor scalars (0-dim float32 arrays, NOTE: [per-tensor
  // scalars]), its step counter and float32 master copy (None when absent), and its id within
  // the optimizer (keys its stochastic rounding stream).
  // `state_numel`: each state array's size when it is not the parameter's (Adafactor's row and
  // column factors, RuleSpec::state_arrays); `shape`: the parameter's, whose last two
  // dimensions the reduction rules that factor matrices read. With 8-bit state (state_dtype
  // UInt8) the state arrays are uint8 codes and `absmax` holds each one's float32 block scales.
  void admit(size_t i, py::object data, std::vector<py::object> state, std::vector<py::object> scalars, int state_dtype,
             py::object step, py::object master, bool fresh, uint64_t id, bool cuda, std::vector<int64_t> state_numel,
             std::vector<int64_t> shape, std::vector<py::object> absmax, py::object strides) {
    Entry& e = entries_.at(i);
    if (state.size() + scalars.size() > static_cast<size_t>(kMaxStates))
      throw py::value_error("genesis internal error: too many state arrays");
    if (!strides.is_none() && !e.torch)
      throw py::value_error("genesis internal error: only torch tensors are admitted with strides");
    // `layout`: the strides the parameter and its element-wise state arrays share (None:
    // contiguous); scalars, the step counter and block scales are always contiguous.
    // The pointer is read from the pin, not from the user's tensor: taking the pin (torch's
    // detach()) releases the GIL, and another thread may re-point the tensor meanwhile
    // (`p.data = ...`); the plan would then write memory that nothing keeps allocated (a crash
    // seen in tests/robustness/test_stale_pointers.py). The pin's memory is what stays
    // allocated; if it is no longer the tensor's, the next gather() sees that and re-admits.
    auto hold = [&](const py::object& array, const char* what, const py::object& layout = py::none()) {
      py::object pin = pin_of(array);
      Held h{array, pin, describe_for_write(pin.is_none() ? array : pin, cuda, what, layout.ptr())};
      h.strides = layout;
      return h;
    };
    Entry fresh_entry;
    fresh_entry.param = e.param;
    fresh_entry.torch = e.torch;
    fresh_entry.duplicate = e.duplicate;
    fresh_entry.data = hold(data, "the parameter", strides);
    if (e.torch) {
      const py::object device = get_device_of(fresh_entry.data.pin.ptr());
      fresh_entry.device = device ? static_cast<int>(PyLong_AsLong(device.ptr())) : -2;
    }
    for (size_t k = 0; k < state.size(); ++k) {
      fresh_entry.state.push_back(hold(state[k], "a state array", strides));
      const int64_t expected = k < state_numel.size() ? state_numel[k] : fresh_entry.data.info.numel;
      if (fresh_entry.state.back().info.numel != expected ||
          fresh_entry.state.back().info.dtype != static_cast<DType>(state_dtype))
        throw py::value_error("genesis internal error: a state array does not match its parameter");
    }
    for (const py::object& s : scalars) {
      fresh_entry.state.push_back(hold(s, "a per-tensor scalar"));
      if (fresh_entry.state.back().info.numel != 1 || fresh_entry.state.back().info.dtype != DType::Float32)
        throw py::value_error("genesis internal error: a per-tensor scalar is not one float32");
    }
    if (!step.is_none()) fresh_entry.state.push_back(hold(step, "the step counter"));
    if (!master.is_none()) fresh_entry.state.push_back(hold(master, "the master copy", strides));
    const bool quantized = static_cast<DType>(state_dtype) == DType::UInt8;
    if (absmax.size() != (quantized ? state.size() : 0))
      throw py::value_error("genesis internal error: 8-bit state needs one absmax array per state array");
    const size_t first_absmax = fresh_entry.state.size();
    for (const py::object& s : absmax) {
      fresh_entry.state.push_back(hold(s, "a block scale array"));
      if (fresh_entry.state.back().info.numel != quant_blocks(fresh_entry.data.info.numel) ||
          fresh_entry.state.back().info.dtype != DType::Float32)
        throw py::value_error("genesis internal error: a block scale array does not match its parameter");
    }
    fresh_entry.ready = true;
    fresh_entry.cuda = cuda;
    fresh_entry.cuda_array = cuda && !e.torch;
    fresh_entry.state_dtype = static_cast<DType>(state_dtype);
    TensorSlots& slots = fresh_entry.slots;
    size_t next = 0;
    for (; next < state.size() + scalars.size(); ++next) slots.state[next] = fresh_entry.state[next].info.data;
    slots.param = fresh_entry.data.info.data;
    slots.numel = fresh_entry.data.info.numel;
    if (shape.size() >= 2) {
      slots.rows = shape[shape.size() - 2];
      slots.cols = shape[shape.size() - 1];
    }
    slots.step = step.is_none() ? nullptr : static_cast<float*>(fresh_entry.state[next++].info.data);
    slots.master = master.is_none() ? nullptr : static_cast<float*>(fresh_entry.state[next++].info.data);
    for (size_t k = 0; k < absmax.size(); ++k)
      slots.absmax[k] = static_cast<float*>(fresh_entry.state[first_absmax + k].info.data);
    slots.fresh = fresh;
    slots.id = id;
    e = std::move(fresh_entry);
    forget_guard();
  }

  // Collects this step's gradients of `params` (the group's list, which must still hold the
  // parameters the plan was built for, in order; None if it does not: rebuild the plan).
  // Returns the indices Python must admit before the step can run (empty when the plan is
  // ready); parameters without a gradient are skipped. `verify_state`: user code may have
  // reached the state arrays since the last step (see NOTE: [pinned storage]).
  std::optional<std::vector<size_t>> gather(py::list params, bool verify_state) {
    if (py::len(params) != entries_.size()) return std::nullopt;
    release();
    std::vector<size_t> pending;
    for (size_t i = 0; i < entries_.size(); ++i) {
      Entry& e = entries_[i];
      if (PyList_GET_ITEM(params.ptr(), i) != e.param.ptr()) return std::nullopt;
      if (e.duplicate || e.staged) continue;
      py::object grad = grad_of(e.param.ptr());
      if (!grad || grad.is_none()) continue;
      // The gradient's memory is pinned with its pointer (NOTE: [read pins]).
      py::object pin = grad;
      ArrayInfo g;
      const auto describe = [&](ArrayInfo& out) { return current(e, grad.ptr(), out, verify_state); };
      if (!e.ready || (e.torch ? pin_for_read(grad.ptr(), pin, g, describe) != ReadPin::Ok : !describe(g))) {
        e.ready = false;
        pending.push_back(i);
        continue;
      }
      add(e, g, std::move(pin));
    }
    if (!pending.empty()) release();
    return pending;
  }

  // NOTE: [one-call step]
  // gather() pins every gradient's memory (NOTE: [read pins]) because Python code runs between
  // it and the update: the optimizer's own, other threads', finalizers. _C.run_plans gathers
  // every group and runs every update in one call, and holds the GIL from the first pointer it
  // reads to the end of the last update, with the garbage collector paused and no torch
  // function mode active: no Python code runs in between (every tensor is of an exact torch
  // type, whose methods are torch's C functions), so nothing can re-point or free a gradient
  // while the core uses it, and holding the gradient objects is enough. When an update is large
  // enough to release the GIL (NOTE: [when the GIL is released]), the read pins are taken
  // after all, before the first update. The checks are gather()'s, of every tensor, every step
  // (NOTE: [batched tensor facts] makes them one call per plan); anything they do not accept,
  // or a parameter to admit, leaves everything as it was and returns false: Python then takes
  // the checked path, which raises the named errors and admits. (Python 3.10 and later, with a
  // GIL: elsewhere every step takes the checked path.)
  //
  // gather_held: gather() for the one-call step: true when every parameter with a gradient is
  // ready and its gradient accepted; false (nothing gathered) when the plan cannot take this
  // path now: another list, a NumPy array or another library's CUDA array, a tensor of a torch
  // subclass, a parameter to admit, or anything the checks refuse.
  bool gather_held(py::list params, bool verify_state) {
    const size_t n = entries_.size();
    if (static_cast<size_t>(PyList_GET_SIZE(params.ptr())) != n) return false;
    release();
    for (size_t i = 0; i < n; ++i) {
      Entry& e = entries_[i];
      if (PyList_GET_ITEM(params.ptr(), i) != e.param.ptr()) return fail();
      if (e.duplicate) continue;
      if (e.staged || !e.torch || !exact_torch(e.param.ptr())) return fail();
      py::object grad = grad_of(e.param.ptr());
      if (!grad) return fail();
      if (grad.is_none()) continue;
      if (!e.ready || !exact_torch(grad.ptr()) || !exact_torch(e.data.array.ptr())) return fail();
      step_entries_.push_back(i);
      step_grads_.push_back(std::move(grad));
    }
    // One guard call for the parameters' and the gradients' facts (NOTE: [batched tensor facts]).
    bool batched = false;
    if (!guard_.is_none() && step_entries_ == guard_entries_) batched = guard_accepts(guard_, step_tensors());
    for (size_t k = 0; k < step_entries_.size(); ++k) {
      Entry& e = entries_[step_entries_[k]];
      PyObject* grad = step_grads_[k].ptr();
      ArrayInfo g;
      if (batched) {
        // The guard vouches for the dtype, sizes, strides and device: the pointers remain.
        if (!states_unchanged(e, verify_state, /*held=*/true) ||
            tensor_facts.data_ptr(e.data.array.ptr()) != e.data.info.data)
          return fail();
        g.data = tensor_facts.data_ptr(grad);
        g.numel = e.data.info.numel;
        g.dtype = e.data.info.dtype;
      } else if (!current(e, grad, g, verify_state, /*held=*/true)) {
        return fail();
      }
      add(e, g, step_grads_[k]);
    }
    ++counts_.one_call;
    if (batched) {
      ++counts_.batched;
      checked_streak_ = 0;
    } else {
      note_checked_gather();
    }
    step_grads_.clear();
    return true;
  }

  // Whether this step's update releases the GIL (NOTE: [when the GIL is released]).
  bool releases_gil() const { return gathered_ > 0 && elements_ >= kReleaseElements * static_cast<int64_t>(gathered_); }

  // Takes the read pins gather_held() did without (NOTE: [one-call step]); false if one does not
  // cover what was read (then release() and take the checked path).
  bool pin_reads() {
    const size_t n = pins_.size();
    for (size_t k = 0; k < n; ++k) {
      if (!is_torch_tensor(pins_[k].ptr())) continue;
      py::object storage = torch_read_pin(pins_[k].ptr());
      if (!storage || !read_pin_covers(storage, reads_[k].data, reads_[k].numel, reads_[k].dtype)) return false;
      pins_.push_back(std::move(storage));
    }
    return true;
  }

  // How many steps went through the one-call step, and how many of those through a guard (tests).
  py::dict path_counts() const {
    py::dict out;
    out["one_call"] = counts_.one_call;
    out["batched"] = counts_.batched;
    return out;
  }

  // Drops what one step gathered (the gradients' references included).
  void release() {
    stream_ = 0;
    for (auto& bucket : buckets_) bucket.clear();
    written_.clear();
    fresh_.clear();
    pins_.clear();
    reads_.clear();
    step_entries_.clear();
    step_grads_.clear();
    gathered_ = 0;
    elements_ = 0;
  }

  // Runs one rule over the gathered tensors, one core call per storage kind (device,
  // parameter dtype, state dtype, master weights or not). cpu_step and cuda_step take
  // (config, tensors, count) and (config, tensors, count, stream).
  template <typename CpuStep, typename CudaStep>
  void run(const StepControl& control, CpuStep&& cpu_step, CudaStep&& cuda_step) {
    if (gathered_ == 0) return;
    // NOTE: [when the GIL is released]
    // Releasing and taking back the GIL costs a few microseconds, which only pays off when the
    // tensors are large: so the GIL is released when the gradients average at least
    // kReleaseElements elements (the update then takes far longer), and kept otherwise. Either
    // way every array the kernel touches is pinned (NOTE: [pinned storage], [read pins]; the
    // one-call step pins its gradients only when the GIL is released, NOTE: [one-call step]), so
    // what other threads do meanwhile cannot free memory it uses.
    std::optional<py::gil_scoped_release> release_gil;
    if (releases_gil()) release_gil.emplace();
    for (int b = 0; b < kBuckets; ++b) {
      if (buckets_[b].empty()) continue;
      const bool cuda = b >= kBuckets / 2;
      const int kind = b % (kBuckets / 2);
      StepConfig config;
      config.param_dtype = static_cast<DType>(kind / (2 * kStateKinds));
      config.state_dtype = static_cast<DType>(kind / 2 % kStateKinds);
      config.master_weights = kind % 2 == 1;
      config.grad_scale = cuda ? reinterpret_cast<const float*>(control.grad_scale_ptr) : &control.grad_scale;
      config.found_inf = cuda ? reinterpret_cast<const float*>(control.found_inf_ptr) : nullptr;
      config.clip_coef = cuda ? reinterpret_cast<const double*>(control.clip_coef_ptr) : &control.clip_coef;
      config.clip_value = control.clip_value;
      config.lr = cuda ? reinterpret_cast<const void*>(control.lr_ptr) : nullptr;
      config.lr_is_double = control.lr_is_double;
      // Stochastic rounding applies to bfloat16 parameters without master weights; the
      // group's other parameters round to nearest.
      config.stochastic_rounding =
          control.stochastic_rounding && config.param_dtype == DType::BFloat16 && !config.master_weights;
      config.seed = control.seed;
      config.counter = control.counter;
      const int64_t n = static_cast<int64_t>(buckets_[b].size());
      if (cuda) {
        // CUDA arrays launch on their interface's stream (NOTE: [CUDA array interface]), torch
        // tensors on the stream Python passes (torch's current one). The protocol's 1 is the
        // legacy default stream, which is the null stream of the runtime's default mode.
        const uintptr_t stream = stream_ == 1 ? 0 : (stream_ ? stream_ : control.stream);
        cuda_step(config, buckets_[b].data(), n, reinterpret_cast<void*>(stream));
      } else {
        cpu_step(config, buckets_[b].data(), n);
      }
    }
    release_gil.reset();
    for (bool* f : fresh_) *f = false;
    const std::vector<py::object> written = std::move(written_);
    release();
    advance_versions(written);
  }

  // Marks a parameter that Python updates through staging copies: gather() leaves it alone.
  void stage(size_t i, bool staged) {
    Entry& e = entries_.at(i);
    e.staged = staged;
    e.ready = false;
    forget_guard();
  }

  // How many state arrays are re-checked every step (see NOTE: [pinned storage]).
  int watched() const {
    int n = 0;
    for (const Entry& e : entries_)
      for (const Held& h : e.state) n += h.watched;
    return n;
  }

 private:
  // State kinds: the floating-point dtypes and UInt8 (8-bit state).
  static constexpr int kStateKinds = kNumDTypes + 1;
  static constexpr int kBuckets = kNumDTypes * kStateKinds * 2 * 2;
  static constexpr int64_t kReleaseElements = 1 << 15;
  static int bucket_of(DType param, DType state, bool master, bool cuda) {
    return ((int(cuda) * kNumDTypes + static_cast<int>(param)) * kStateKinds + static_cast<int>(state)) * 2 +
           int(master);
  }

  struct Entry {
    py::object param;         // the parameter as listed in the group
    Held data;                // the array holding its values (torch: the tensor itself; NumPy: .data)
    std::vector<Held> state;  // state arrays in slot order, then the step counter, then master
    bool torch = false;       // a torch tensor, else a genesis.nn.Parameter
    bool cuda = false;        // on a CUDA device
    bool cuda_array = false;  // a CUDA array read through its interface (NOTE: [CUDA array interface])
    int device = -1;          // torch: the parameter's get_device() (-1: CPU), which its gradient must match
    uintptr_t stream = 0;     // cuda_array: its interface's stream this step (0: None)
    bool duplicate = false;   // listed earlier in the group already
    bool staged = false;      // updated by Python through contiguous copies (Optimizer._run_staged)
    bool ready = false;
    DType state_dtype = DType::Float32;
    TensorSlots slots;
  };

  // Whether the state arrays of an admitted entry still are what was admitted: those user code
  // may have reached (see NOTE: [pinned storage]). `held`: for the one-call step, which runs no
  // Python code (NOTE: [one-call step]): a state array of a torch subclass is not asked.
  static bool states_unchanged(Entry& e, bool verify_state, bool held) {
    for (Held& h : e.state) {
      if (!verify_state && !h.watched) continue;
      if (held && !exact_torch(h.array.ptr())) return false;
      if (!h.unchanged(e.torch, e.cuda_array)) return false;
      h.watched = !is_private(h.array.ptr());
    }
    return true;
  }

  // Whether an admitted entry still is what was admitted, and this step's gradient `grad` fits
  // it; describes the gradient into `g`. Every call here is tens of nanoseconds and there are a
  // few per tensor per step (NOTE: [fast array description], NOTE: [pinned storage]).
  bool current(Entry& e, PyObject* grad, ArrayInfo& g, bool verify_state, bool held = false) const {
    if (!states_unchanged(e, verify_state, held)) return false;
    if (e.torch) {
      // torch checks a gradient's shape, dtype and device against its parameter when it is
      // assigned, but not when the gradient itself is re-pointed (`p.grad.data = x.half()`),
      // so dtype and device are compared here (a float16 gradient read as float32 would be
      // read past its end; a CUDA one by a CPU loop, not at all). The element count stands for
      // the shape: only the elements, in memory order, reach the core.
      if (!e.data.unchanged(true) || !describe_torch(grad, g, /*check_cpu=*/false, e.data.strides.ptr()) ||
          g.dtype != e.data.info.dtype || g.numel != e.data.info.numel || negated(grad))  // NOTE: [negative bit]
        return false;
      const py::object device = get_device_of(grad);
      return device && PyLong_AsLong(device.ptr()) == e.device;
    }
    // A genesis.nn.Parameter: its .data may have been replaced, and its gradient is a plain
    // attribute nobody checked, so everything is compared, from NumPy's C struct.
    const py::object data = data_of(e.param.ptr());
    if (!data || data.ptr() != e.data.array.ptr()) return false;
    if (e.cuda_array) return current_cuda_array(e, grad, g);
    if (!e.data.unchanged(false)) return false;
    return describe_ndarray(grad, g, Access::Read) && same_shape(data.ptr(), grad) && g.dtype == e.data.info.dtype;
  }

  // current() for a CUDA array: the parameter is still the admitted memory, the gradient a
  // contiguous CUDA array of its dtype and shape, on its stream (or on none). Records the stream.
  static bool current_cuda_array(Entry& e, PyObject* grad, ArrayInfo& g) {
    ArrayInfo now;
    CudaArrayView param_view, grad_view;
    if (!describe_cuda_array(e.data.array.ptr(), now, Access::Write, param_view) || now.data != e.data.info.data ||
        now.numel != e.data.info.numel || now.dtype != e.data.info.dtype)
      return false;
    if (!describe_cuda_array(grad, g, Access::Read, grad_view) || g.dtype != now.dtype ||
        PyObject_RichCompareBool(param_view.shape, grad_view.shape, Py_EQ) != 1)
      return PyErr_Clear(), false;
    if (grad_view.stream && param_view.stream && grad_view.stream != param_view.stream) return false;
    e.stream = param_view.stream;
    return true;
  }

  // Adds entry `e`, whose gradient `g` describes, to this step's update; `hold` keeps the
  // gradient's memory allocated until the update is done (its read pin, or in the one-call step
  // the gradient itself: NOTE: [one-call step]).
  void add(Entry& e, const ArrayInfo& g, py::object hold) {
    e.slots.grad = g.data;
    if (e.cuda_array && e.stream) {
      // One launch stream per group (NOTE: [CUDA array interface]); Python cannot see this
      // mismatch per parameter, so it is reported here, before any update.
      if (stream_ && stream_ != e.stream) {
        release();
        throw py::value_error("the CUDA arrays of this param group are on different streams (" +
                              std::to_string(stream_) + " and " + std::to_string(e.stream) +
                              "); genesis launches one group on one stream");
      }
      stream_ = e.stream;
    }
    buckets_[bucket_of(e.data.info.dtype, e.state_dtype, e.slots.master != nullptr, e.cuda)].push_back(e.slots);
    if (e.torch) written_.push_back(e.data.array);
    fresh_.push_back(&e.slots.fresh);
    pins_.push_back(std::move(hold));
    reads_.push_back(g);
    ++gathered_;
    elements_ += g.numel;
  }

  bool fail() {
    release();
    return false;
  }

  // After a one-call gather through the per-call checks: once the same parameters have had
  // gradients that way twice in a row, builds a guard from them (NOTE: [batched tensor facts]).
  // Twice: a workload whose tensors change every step builds none, rather than one per step.
  void note_checked_gather() {
    if (!tensor_facts.guards_type || guard_broken_) return;
    if (step_entries_ != checked_entries_) {
      checked_entries_ = step_entries_;
      checked_streak_ = 1;
      return;
    }
    if (++checked_streak_ < 2) return;
    checked_streak_ = 0;
    guard_ = build_guard(step_tensors());
    guard_broken_ = guard_.is_none();
    guard_entries_ = guard_broken_ ? std::vector<size_t>{} : step_entries_;
  }

  // This step's tensors as a guard takes them: the parameters' arrays, then their gradients.
  const std::vector<PyObject*>& step_tensors() {
    guard_args_.clear();
    for (size_t i : step_entries_) guard_args_.push_back(entries_[i].data.array.ptr());
    for (const py::object& g : step_grads_) guard_args_.push_back(g.ptr());
    return guard_args_;
  }

  // A parameter was admitted or staged: the guard describes arrays the plan no longer holds.
  void forget_guard() {
    guard_ = py::none();
    guard_entries_.clear();
    checked_entries_.clear();
    checked_streak_ = 0;
  }

  std::vector<Entry> entries_;
  std::array<std::vector<TensorSlots>, kBuckets> buckets_;
  std::vector<bool*> fresh_;
  std::vector<py::object> written_;  // this step's torch arrays to write (NOTE: [version counters])
  std::vector<py::object> pins_;     // this step's gradients' pins (NOTE: [read pins]), held until the update is done
  std::vector<ArrayInfo> reads_;     // what was read of each gathered gradient (for pin_reads)
  size_t gathered_ = 0;              // this step's gradients
  int64_t elements_ = 0;
  uintptr_t stream_ = 0;  // the CUDA arrays' stream of this step (0: none named)
  // The one-call step (NOTE: [one-call step], [batched tensor facts]).
  std::vector<size_t> step_entries_;    // the entries with a gradient this step, in order
  std::vector<py::object> step_grads_;  // their gradients
  py::object guard_ = py::none();       // a TensorGuards' check over guard_entries_' arrays, then their gradients
  std::vector<size_t> guard_entries_;
  std::vector<PyObject*> guard_args_;    // the guard's arguments (borrowed, for one call)
  std::vector<size_t> checked_entries_;  // the entries of the last one-call gathers through the per-call checks
  int checked_streak_ = 0;               // how many of those in a row
  bool guard_broken_ = false;            // building a guard failed: not tried again
  struct {
    int64_t one_call = 0, batched = 0;
  } counts_;
};

#if PY_VERSION_HEX >= 0x030A0000
// Pauses Python's garbage collector for its lifetime (NOTE: [one-call step], [batched gradient lists]): a collection
// runs finalizers, which are Python code.
class GcPause {
 public:
  GcPause() : was_enabled_(PyGC_Disable()) {}
  ~GcPause() {
    if (was_enabled_) PyGC_Enable();
  }
  GcPause(const GcPause&) = delete;
  GcPause& operator=(const GcPause&) = delete;

 private:
  int was_enabled_;
};
#endif

// Whether no torch function mode is active, so that torch's methods on exact torch tensors run
// no Python code (false too when torch has not been registered with its mode check).
bool no_torch_function_mode() {
  if (!tensor_facts.mode_enabled) return false;
  const py::object mode = py::reinterpret_steal<py::object>(PyObject_CallNoArgs(tensor_facts.mode_enabled));
  if (!mode) PyErr_Clear();
  return mode && mode.ptr() == Py_False;
}

// NOTE: [batched gradient lists]
// The clip functions, get_total_norm, the deferred clip's norm and GradScaler's unscale_
// describe a list of gradients on every call: new tensor objects each step, usually of the
// dtypes, sizes and device of the last call's. The per-call checks and read pin of a torch
// tensor cost about 375 ns, so 2000 small gradients took 0.75 ms to describe, more than the
// optimizer step after them. As the one-call step does for its plans (NOTE: [batched tensor
// facts]), a list of exact torch tensors whose description (each tensor's dtype and element
// count, CPU or CUDA) the per-call checks accepted a second time among their last few lists
// gets a guard built from it (several call sites may alternate: a clip per param group, a norm
// for logging); a later list that the guard accepts (the same types, dtypes, device, sizes,
// strides and dispatch keys, in one call) takes each tensor's dtype and element count from the
// description and its data pointer from torch's C function. Its read pins are taken as on the
// per-call path (NOTE: [read pins]) and still checked to cover what is read; with exact torch
// types, no torch function mode and the garbage collector paused, no Python code runs between
// the guard's check and the last pointer read. A few descriptions are kept, for a model whose
// groups are clipped one by one; anything the guards refuse takes the per-call checks, which
// stay the reference (they raise the errors).
class ListGuards {
 public:
  struct Facts {
    std::vector<std::pair<int64_t, DType>> tensors;  // element count and dtype, in list order
    bool cuda = false;
    bool operator==(const Facts& o) const { return cuda == o.cuda && tensors == o.tensors; }
  };

  // The description of `tensors` (exact torch tensors) by a kept guard that accepts them, or null.
  const Facts* accepting(const std::vector<PyObject*>& tensors, bool cuda) const {
    for (auto k = kept_.rbegin(); k != kept_.rend(); ++k)
      if (k->facts.cuda == cuda && k->facts.tensors.size() == tensors.size() && guard_accepts(k->check, tensors))
        return &k->facts;
    return nullptr;
  }

  // After the per-call checks accepted `tensors` (exact torch tensors) as `facts`: when these
  // facts are among the last few seen (the second time), a guard is built from them and kept
  // (replacing one with the same facts, or the oldest). A workload whose lists change every
  // call builds none.
  void note_checked(const std::vector<PyObject*>& tensors, Facts facts) {
    const auto seen = std::find(recent_.begin(), recent_.end(), facts);
    if (seen == recent_.end()) {
      if (recent_.size() == kKept) recent_.erase(recent_.begin());
      recent_.push_back(std::move(facts));
      return;
    }
    recent_.erase(seen);
    py::object check = build_guard(tensors);
    if (check.is_none()) return;
    for (Kept& k : kept_)
      if (k.facts == facts) return void(k.check = std::move(check));
    if (kept_.size() == kKept) kept_.erase(kept_.begin());
    kept_.push_back({std::move(facts), std::move(check)});
  }

 private:
  static constexpr size_t kKept = 4;
  struct Kept {
    Facts facts;
    py::object check;
  };
  std::vector<Kept> kept_;     // oldest first
  std::vector<Facts> recent_;  // lists of exact torch tensors the per-call checks accepted once, oldest first
};

// Whether this interpreter can take the guards' path at all: it needs PyGC_Disable (Python
// 3.10), and the GIL both for the guards' bookkeeping and for "no Python code runs between".
#if PY_VERSION_HEX >= 0x030A0000 && !defined(Py_GIL_DISABLED)
constexpr bool kBatchedLists = true;
#else
constexpr bool kBatchedLists = false;
#endif

// The process's guards; never destroyed (they hold Python objects, which must not be released
// after the interpreter has finalized).
ListGuards& list_guards() {
  static ListGuards* guards = new ListGuards;
  return *guards;
}

// Gradients for the clip functions, described once (see NOTE: [fast array description]).
class BufferList {
 public:
  // All CPU arrays, or all torch tensors on one CUDA device (`cuda`; the device of the first).
  // `writeable`: NumPy arrays must be writeable too (the list will be clipped in place).
  // Each array's memory stays pinned while the list lives (NOTE: [read pins]): the methods
  // release the GIL, and Python code runs between them.
  BufferList(py::sequence arrays, bool cuda, bool writeable) : cuda_(cuda) {
    // A list of exact torch tensors may take a guard (borrowed references: the list holds
    // them, and no Python code runs before describe_batched is done with them).
    std::vector<PyObject*> exact;
    if (kBatchedLists && PyList_Check(arrays.ptr()) && tensor_facts.guards_type) {
      const Py_ssize_t n = PyList_GET_SIZE(arrays.ptr());
      for (Py_ssize_t i = 0; i < n && exact_torch(PyList_GET_ITEM(arrays.ptr(), i)); ++i)
        exact.push_back(PyList_GET_ITEM(arrays.ptr(), i));
      if (exact.size() != static_cast<size_t>(n)) exact.clear();
    }
    if (!exact.empty() && describe_batched(exact)) return;
    describe_each(arrays, writeable);
    if (!exact.empty() && static_cast<size_t>(py::len(torch_)) == buffers_.size()) {
      // What the per-call checks accepted (torch_ holds each described tensor: the list may
      // have changed while Python code ran during the checks).
      ListGuards::Facts facts;
      facts.cuda = cuda;
      exact.clear();
      for (size_t i = 0; i < buffers_.size(); ++i) {
        facts.tensors.emplace_back(buffers_[i].numel, buffers_[i].dtype);
        exact.push_back(PyList_GET_ITEM(torch_.ptr(), i));
        if (!exact_torch(exact.back())) return;
      }
      list_guards().note_checked(exact, std::move(facts));
    }
  }

  // Whether the list was described through a guard (NOTE: [batched gradient lists]; tests).
  bool batched() const { return batched_; }

  int result_dtype() const { return static_cast<int>(norm_dtype(buffers_)); }

  double norm(double norm_type) const {
    require_cpu();
    py::gil_scoped_release release;
    return total_norm(buffers_, norm_type);
  }
  // The fused clip's pass (NOTE: [fused clip norm]): (norm of x * factor, any inf or NaN).
  std::pair<double, bool> norm_scaled(double norm_type, double factor) const {
    require_cpu();
    py::gil_scoped_release release;
    return total_norm_scaled(buffers_, norm_type, factor);
  }
  void scale(double factor) const {
    require_cpu();
    {
      py::gil_scoped_release release;
      scale_all(buffers_, factor);
    }
    advance_versions(torch_);
  }
  void clamp(double limit, uintptr_t stream) const {
    {
      py::gil_scoped_release release;
      if (!cuda_)
        clamp_all(buffers_, limit);
      else
        for_each_dtype(
            [&](DType d, const Buffer* b, int64_t n) { GENESIS_CUDA_CALL(clamp(limit, d, b, n, as_stream(stream))); });
    }
    advance_versions(torch_);
  }
  bool unscale(double factor) const {
    require_cpu();
    bool found;
    {
      py::gil_scoped_release release;
      found = unscale_all(buffers_, factor);
    }
    advance_versions(torch_);
    return found;
  }
  bool has_nonfinite() const {
    require_cpu();
    py::gil_scoped_release release;
    return any_nonfinite(buffers_);
  }

  // CUDA: writes the norm to the device float64 at `total`, without a host round trip.
  // `scratch` is device memory of scratch_size() float64s from the caller's allocator: with
  // gradients of several dtypes it first holds one norm per dtype (whose norm is the total, as
  // on the CPU), then the per-chunk partials of the reductions, which run one after another on
  // the stream and so share them.
  void norm_on_device(double norm_type, uintptr_t total, uintptr_t scratch, uintptr_t stream) const {
    require_cuda();
    py::gil_scoped_release release;
    const int kinds = dtype_count();
    double* per_dtype = reinterpret_cast<double*>(scratch);
    double* partials = per_dtype + (kinds > 1 ? kinds : 0);
    int k = 0;
    for_each_dtype([&](DType d, const Buffer* b, int64_t n) {
      double* out = kinds == 1 ? reinterpret_cast<double*>(total) : per_dtype + k++;
      GENESIS_CUDA_CALL(global_norm(norm_type, d, b, n, out, partials, as_stream(stream)));
    });
    if (kinds > 1) {
      const Buffer partial{per_dtype, kinds};
      GENESIS_CUDA_CALL(global_norm(norm_type, DType::Float64, &partial, 1, reinterpret_cast<double*>(total), partials,
                                    as_stream(stream)));
    }
  }
  int64_t scratch_size() const {
    const int kinds = dtype_count();
    int64_t partials = 1;
#ifdef GENESIS_WITH_CUDA
    for_each_dtype(
        [&](DType, const Buffer* b, int64_t n) { partials = std::max(partials, cuda::norm_workspace_size(b, n)); });
#endif
    return (kinds > 1 ? kinds : 0) + partials;
  }
  // CUDA: x *= min(max_norm / (*total + 1e-6), 1) with *total read on the device.
  void clip_on_device(double max_norm, uintptr_t total, uintptr_t stream) const {
    require_cuda();
    {
      py::gil_scoped_release release;
      for_each_dtype([&](DType d, const Buffer* b, int64_t n) {
        GENESIS_CUDA_CALL(clip_by_norm(max_norm, reinterpret_cast<const double*>(total), d, b, n, as_stream(stream)));
      });
    }
    advance_versions(torch_);
  }

  int dtype_count() const {
    int kinds = 0;
    for_each_dtype([&](DType, const Buffer*, int64_t) { ++kinds; });
    return kinds;
  }

 private:
  // The per-call checks of every array (NOTE: [fast array description], [read pins]).
  void describe_each(const py::sequence& arrays, bool writeable) {
    const bool cuda = cuda_;
    long device = -1;
    for (size_t i = 0; i < py::len(arrays); ++i) {
      py::object a = arrays[i];
      py::object pin = a;
      ArrayInfo info;
      const auto on_device = [&] {
        const py::object index = get_device_of(a.ptr());
        if (!index) return false;
        if (i == 0) device = PyLong_AsLong(index.ptr());
        return PyLong_AsLong(index.ptr()) == device;
      };
      const auto describe_one = [&](ArrayInfo& out) {
        return cuda ? describe_torch(a.ptr(), out, /*check_cpu=*/false) && is_cuda(a.ptr()).ptr() == Py_True &&
                          on_device()
                    : describe(a.ptr(), out, writeable ? Access::Write : Access::Read);
      };
      const ReadPin read = is_torch_tensor(a.ptr()) ? pin_for_read(a.ptr(), pin, info, describe_one)
                                                    : (describe_one(info) ? ReadPin::Ok : ReadPin::Refused);
      if (read == ReadPin::Moving)
        throw std::runtime_error("gradient " + std::to_string(i) +
                                 " kept being re-pointed by another thread while genesis read it");
      const bool ok = read == ReadPin::Ok && info.dtype != DType::UInt8;
      if (!ok)
        throw py::type_error("gradient " + std::to_string(i) + " is not a contiguous floating-point " +
                             (cuda ? "CUDA tensor" : "CPU NumPy array or torch tensor"));
      buffers_.push_back({info.data, info.numel, info.dtype});
      pins_.push_back(std::move(pin));
      if (is_torch_tensor(a.ptr())) torch_.append(a);
    }
  }

  // The arrays (exact torch tensors) through a kept guard (NOTE: [batched gradient lists]);
  // false, with nothing described, if no guard accepts them.
  bool describe_batched(const std::vector<PyObject*>& tensors) {
#if PY_VERSION_HEX < 0x030A0000 || defined(Py_GIL_DISABLED)
    (void)tensors;
    return false;  // kBatchedLists is false
#else
    if (!no_torch_function_mode()) return false;
    const GcPause pause;
    const ListGuards::Facts* facts = list_guards().accepting(tensors, cuda_);
    if (!facts) return false;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto [numel, dtype] = facts->tensors[i];
      py::object pin = torch_read_pin(tensors[i]);
      void* data = numel > 0 ? tensor_facts.data_ptr(tensors[i]) : nullptr;
      if (!pin || !read_pin_covers(pin, data, numel, dtype)) {
        buffers_.clear();
        pins_.clear();
        torch_ = py::list();
        return false;
      }
      buffers_.push_back({data, numel, dtype});
      pins_.push_back(std::move(pin));
      torch_.append(tensors[i]);
    }
    batched_ = true;
    return true;
#endif
  }

  static void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }
  // The host loops must never be handed device pointers (and the device launches, host ones).
  void require_cpu() const {
    if (cuda_) throw py::type_error("this operation needs CPU gradients; these are CUDA tensors");
  }
  void require_cuda() const {
    if (!cuda_) throw py::type_error("this operation needs CUDA gradients");
  }

  template <typename Fn>
  void for_each_dtype(Fn&& fn) const {
    for (int d = 0; d < kNumDTypes; ++d) {
      std::vector<Buffer> same;
      for (const TypedBuffer& b : buffers_)
        if (static_cast<int>(b.dtype) == d) same.push_back({b.data, b.numel});
      if (!same.empty()) fn(static_cast<DType>(d), same.data(), static_cast<int64_t>(same.size()));
    }
  }

  bool cuda_;
  bool batched_ = false;
  std::vector<TypedBuffer> buffers_;
  std::vector<py::object> pins_;  // NOTE: [read pins]
  py::list torch_;                // the torch tensors among them (NOTE: [version counters])
};

// NOTE: [grad fingerprint]
// What a pending clip or unscale of an optimizer (genesis/optim/_clip.py) was computed for:
// every parameter of its groups that has a gradient, that gradient object and its version
// counter (NOTE: [version counters]; arrays without one, NumPy's, count as unchanged). The
// step and GradScaler.step compare it with the gradients they find; a new gradient, one more
// or one fewer, or an in-place change is a mismatch. Taken and compared here rather than in
// Python: the deferred clip does both once per step and parameter (about 0.7 us a parameter
// in Python).
class GradFingerprint {
 public:
  explicit GradFingerprint(const py::list& groups) {
    for_each_grad(groups, [&](PyObject* param, py::object grad) {
      entries_.push_back({py::reinterpret_borrow<py::object>(param), version(grad.ptr()), std::move(grad)});
      return true;
    });
  }

  // Whether the groups' gradients are still the ones it was taken of.
  bool matches(const py::list& groups) const {
    size_t i = 0;
    const bool same = for_each_grad(groups, [&](PyObject* param, const py::object& grad) {
      if (i == entries_.size()) return false;
      const Entry& e = entries_[i++];
      return e.param.ptr() == param && e.grad.ptr() == grad.ptr() && e.version == version(grad.ptr());
    });
    return same && i == entries_.size();
  }

 private:
  struct Entry {
    py::object param;
    int64_t version;
    py::object grad;
  };

  // f(param, grad) for each parameter of each group that has a gradient, in order, while f
  // returns true; false if it stopped.
  template <typename F>
  static bool for_each_grad(const py::list& groups, F&& f) {
    for (const py::handle group : groups) {
      const py::object params = group["params"];
      for (const py::handle p : params) {
        py::object grad = grad_of(p.ptr());
        if (!grad) throw py::type_error("a parameter of the optimizer has no .grad attribute");
        if (!grad.is_none() && !f(p.ptr(), std::move(grad))) return false;
      }
    }
    return true;
  }

  static int64_t version(PyObject* grad) {
    const py::object v = version_of(grad);
    return v ? PyLong_AsLongLong(v.ptr()) : -1;  // (a count is never negative)
  }

  std::vector<Entry> entries_;
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
  // A pair whose first entry may be None (Adafactor's eps).
  void operator()(const char* key, std::optional<double>& a, double& b) {
    if (!kwargs.contains(key)) return;
    const py::object pair = kwargs[key];
    if (!py::isinstance<py::sequence>(pair) || py::len(pair) != 2)
      throw py::value_error(std::string("Invalid ") + key + ": " + py::repr(pair).cast<std::string>() +
                            " (expected a pair)");
    const py::object first = py::sequence(pair)[0];
    a = first.is_none() ? std::nullopt : std::optional<double>(py::float_(first));
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
  void operator()(const char* key, const std::optional<double>&, double) const {
    out.append(py::make_tuple(key, "optional_pair"));
  }
};

// The values of an options struct as a dict keyed like a torch param_group.
struct FieldWriter {
  py::dict& out;
  void operator()(const char* key, double v) const { out[key] = v; }
  void operator()(const char* key, bool v) const { out[key] = v; }
  void operator()(const char* key, double a, double b) const { out[key] = py::make_tuple(a, b); }
  void operator()(const char* key, const std::optional<double>& a, double b) const {
    out[key] = py::make_tuple(a ? py::object(py::float_(*a)) : py::object(py::none()), b);
  }
};

template <typename O>
py::dict options_dict(O o) {
  py::dict out;
  RuleSpec<O>::fields(o, FieldWriter{out});
  return out;
}

// Runs rule O over a plan's gathered tensors.
template <typename O>
void run_rule(GroupPlan& plan, const O& o, const StepControl& control) {
  plan.run(
      control, [&](const StepConfig& c, TensorSlots* t, int64_t n) { cpu::step(o, c, t, n); },
      [&](const StepConfig& c, TensorSlots* t, int64_t n, void* s) { GENESIS_CUDA_CALL(step(o, c, t, n, s)); });
}

// The rule of each bound options class, by its Python type (for run_plans).
using Runner = void (*)(GroupPlan&, py::handle options, const StepControl&);
std::unordered_map<PyTypeObject*, Runner>& runners() {
  static std::unordered_map<PyTypeObject*, Runner> by_type;
  return by_type;
}

// The one-call step (NOTE: [one-call step]): `items` holds one (plan, params, verify_state,
// options, control) per param group. Gathers every group, then runs every update; returns false,
// having changed nothing, when any group must take the checked path.
bool run_plans(py::list items) {
#if PY_VERSION_HEX < 0x030A0000 || defined(Py_GIL_DISABLED)
  // No PyGC_Disable before Python 3.10, and without a GIL other threads run all along: every
  // step takes the checked path, which pins what it reads.
  (void)items;
  return false;
#else
  if (!no_torch_function_mode()) return false;  // a mode's Python code runs on tensor methods
  struct Work {
    GroupPlan* plan;
    py::list params;
    bool verify_state;
    py::handle options;
    const StepControl* control;
    Runner runner;
  };
  std::vector<Work> work;
  for (const py::handle item : items) {
    const auto t = item.cast<py::tuple>();
    const auto found = t.size() == 5 ? runners().find(Py_TYPE(t[3].ptr())) : runners().end();
    if (found == runners().end())
      throw py::type_error("genesis internal error: run_plans takes (plan, params, verify_state, options, control)");
    work.push_back({&t[0].cast<GroupPlan&>(), t[1].cast<py::list>(), t[2].cast<bool>(), t[3],
                    &t[4].cast<const StepControl&>(), found->second});
  }
  const GcPause pause;
  const auto undo = [&] {
    for (Work& w : work) w.plan->release();
    return false;
  };
  bool releases_gil = false;
  for (Work& w : work) {
    if (!w.plan->gather_held(w.params, w.verify_state)) return undo();
    releases_gil = releases_gil || w.plan->releases_gil();
  }
  // Another thread may run while an update has released the GIL: every gradient is pinned first.
  if (releases_gil)
    for (Work& w : work)
      if (!w.plan->pin_reads()) return undo();
  for (Work& w : work) w.runner(*w.plan, w.options, *w.control);
  return true;
#endif
}

// Binds one rule of include/genesis/rules/list.h: its options class (built by keyword, with
// its schema, state names and checks) and the plan method that runs it.
template <typename O>
void bind_rule(py::module_& m, py::class_<GroupPlan>& plan, const char* rule, const char* options_name) {
  using Spec = RuleSpec<O>;
  py::class_<O> options(m, options_name);
  runners()[reinterpret_cast<PyTypeObject*>(options.ptr())] = [](GroupPlan& p, py::handle o, const StepControl& c) {
    run_rule(p, o.cast<const O&>(), c);
  };
  options
      .def(py::init([](py::kwargs kwargs) {
        O o;
        FieldReader reader{kwargs};
        Spec::fields(o, reader);
        if (reader.used != kwargs.size()) {
          py::dict known = options_dict(O{});
          std::string unknown;
          for (auto item : kwargs)
            if (!known.contains(item.first))
              unknown += (unknown.empty() ? "" : ", ") + py::str(item.first).cast<std::string>();
          throw py::type_error(std::string(Spec::name(o)) + " got unexpected option(s): " + unknown);
        }
        return o;
      }))
      .def_static(
          "fields",
          [] {
            py::list out;
            O o;
            Spec::fields(o, FieldLister{out});
            return out;
          },
          "The schema: (param_group key, kind) pairs, kind \"float\", \"bool\" or \"pair\", in torch's order.")
      .def_static(
          "defaults", [] { return options_dict(O{}); }, "The core's default value of every option.")
      .def_property_readonly_static("counts_steps", [](py::object) { return Spec::kCountsSteps; })
      .def("as_dict", [](const O& o) { return options_dict(o); })
      .def(
          "state_names", [](const O& o) { return Spec::state_names(o); },
          "Names of the per-element state arrays for these options, in the core's slot order.")
      .def(
          "state_arrays",
          [](const O& o, std::vector<int64_t> shape) {
            py::list out;
            for (const StateArray& a : state_arrays(o, shape))
              out.append(py::make_tuple(a.name, py::tuple(py::cast(a.shape))));
            return out;
          },
          "(name, shape) of each state array of a parameter of this shape, in slot order.")
      .def_property_readonly_static("reduction", [](py::object) { return IsReduction<O>::value; })
      .def(
          "nonnegative_states", [](const O& o) { return nonnegative_states(o); },
          "State arrays the rule never makes negative (stored with the unsigned 8-bit map).")
      .def(
          "scalar_state", [](const O& o) { return scalar_state(o); },
          "(name, initial value) of each per-tensor float32 scalar, in slot order after the arrays.")
      .def("name", [](const O& o) { return Spec::name(o); });
  m.def("validate", [](const O& o) { validate(o); });
  plan.def(rule, &run_rule<O>);
}

}  // namespace
}  // namespace genesis

PYBIND11_MODULE(_C, m) {
  using namespace genesis;
  m.doc() = "genesis compiled core (private; the public C++ API is include/genesis/)";

  m.def("register_torch", &register_torch, py::arg("tensor_type"), py::arg("dtypes"),
        py::arg("increment_version") = py::none(),
        "Registers torch.Tensor, torch's float32/float64/float16/bfloat16/uint8 dtypes (in DType order) and "
        "torch._C._increment_version (NOTE: [version counters]; None: not advanced).");

  m.def("register_tensor_facts", &register_tensor_facts, py::arg("parameter_type"), py::arg("mode_enabled"),
        py::arg("guards_type"), py::arg("data_ptr_address"),
        "Registers torch.nn.Parameter, torch._C._is_torch_function_mode_enabled and the batched tensor facts "
        "(NOTE: [batched tensor facts]; guards_type None: not used).");
  m.def(
      "tensor_facts",
      [] { return tensor_facts.guards_type    ? "batched"
                  : tensor_facts.mode_enabled ? "per call"
                                              : "checked path"; },
      "How steps check torch tensors (NOTE: [one-call step], [batched tensor facts]): \"batched\", \"per call\" "
      "or \"checked path\" (no one-call step).");
  m.def("run_plans", &run_plans, py::arg("items"),
        "The one-call step (NOTE: [one-call step]): gathers and updates every group of (plan, params, verify_state, "
        "options, control); False, with nothing changed, when a group must take the checked path.");
  m.def(
      "_guard_accepts",
      [](std::vector<py::object> examples, std::vector<py::object> probes) {
        std::vector<PyObject*> ptrs;
        for (const py::object& t : examples) {
          if (!exact_torch(t.ptr())) throw py::type_error("torch.Tensor examples expected");
          ptrs.push_back(t.ptr());
        }
        const py::object check = build_guard(ptrs);
        ptrs.clear();
        for (const py::object& t : probes) ptrs.push_back(t.ptr());
        return py::make_tuple(!check.is_none(), guard_accepts(check, ptrs));
      },
      "(built, accepted): a guard from `examples`, asked about `probes` (NOTE: [batched tensor facts]; self-test).");
  m.def(
      "_fast_data_ptr",
      [](py::object t) -> uintptr_t {
        if (!tensor_facts.data_ptr || !exact_torch(t.ptr()))
          throw py::type_error("batched tensor facts are not registered, or not an exact torch tensor");
        return reinterpret_cast<uintptr_t>(tensor_facts.data_ptr(t.ptr()));
      },
      "A dense tensor's data pointer through torch's C function (NOTE: [batched tensor facts]; self-test).");
  m.def("supported_storage",
        [](int param, int state) { return supported_storage(static_cast<DType>(param), static_cast<DType>(state)); });
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
  // 8-bit state conversions (docs/low-bit-state.md) on NumPy arrays: float32 values <-> uint8
  // codes and float32 block scales, with the maps the kernels use (include/genesis/quantized.h).
  m.attr("QUANT_BLOCK") = kQuantBlock;
  m.attr("DEFAULT_MIN_8BIT_SIZE") = kDefaultMin8BitSize;
  m.def(
      "quantize",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> values, bool unsigned_map) {
        const int64_t n = values.size();
        py::array_t<uint8_t> codes(n);
        py::array_t<float> absmax(quant_blocks(n));
        quantize_array(values.data(), n, codes.mutable_data(), absmax.mutable_data(), unsigned_map);
        return py::make_tuple(codes, absmax);
      },
      py::arg("values"), py::arg("unsigned_map"));
  m.def(
      "dequantize",
      [](py::array_t<uint8_t, py::array::c_style | py::array::forcecast> codes,
         py::array_t<float, py::array::c_style | py::array::forcecast> absmax, bool unsigned_map) {
        const int64_t n = codes.size();
        if (absmax.size() != quant_blocks(n))
          throw py::value_error("dequantize: " + std::to_string(n) + " codes need " + std::to_string(quant_blocks(n)) +
                                " block scales, got " + std::to_string(absmax.size()));
        py::array_t<float> values(n);
        dequantize_array(codes.data(), absmax.data(), n, values.mutable_data(), unsigned_map);
        return values;
      },
      py::arg("codes"), py::arg("absmax"), py::arg("unsigned_map"));
  m.def("cpu_isa", &cpu::isa, "The CPU kernel variant in use: \"avx512\", \"avx2\" or \"baseline\".");
  m.def("cpu_isas_built", &cpu::built_isas, "The CPU kernel variants built, space-separated.");
  m.def("cpu_prefetch", &cpu::software_prefetch,
        "Whether the reduction rules' software prefetch runs on this CPU (GENESIS_CPU_PREFETCH).");
  m.def("get_num_threads", &cpu::num_threads);
  m.def("set_num_threads", &cpu::set_num_threads);
  // The C++ API's checkpoint reader on a byte string, so that tests can hold it to the rules of
  // genesis.load: ("ok", ""), ("unsupported", why) or ("invalid", why).
  m.def("_cpp_checkpoint_verdict", [](const py::bytes& data) {
    const std::string bytes = data;
    try {
      checkpoint::decode(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
      return std::make_pair(std::string("ok"), std::string());
    } catch (const checkpoint::UnsupportedContent& e) {
      return std::make_pair(std::string("unsupported"), std::string(e.what()));
    } catch (const checkpoint::CheckpointError& e) {
      return std::make_pair(std::string("invalid"), std::string(e.what()));
    }
  });

  // Build facts for genesis.__version__ and genesis.show_config(); CMakeLists.txt defines them.
  m.attr("__version__") = GENESIS_BUILD_VERSION;
  py::dict build_info;
  build_info["compiler"] = GENESIS_BUILD_COMPILER;
#ifdef _OPENMP
  build_info["openmp"] = _OPENMP;  // the OpenMP specification date, e.g. 201511 for 4.5
#else
  build_info["openmp"] = py::none();
#endif
#ifdef GENESIS_WITH_CUDA
  build_info["cuda_runtime"] = GENESIS_BUILD_CUDA_RUNTIME;
  build_info["cuda_architectures"] = GENESIS_BUILD_CUDA_ARCHITECTURES;
#else
  build_info["cuda_runtime"] = py::none();
  build_info["cuda_architectures"] = py::none();
#endif
  m.attr("build_info") = build_info;

  py::class_<StepControl>(m, "StepControl")
      .def(py::init([](float grad_scale, bool stochastic_rounding, uint64_t seed, uint64_t counter,
                       uintptr_t grad_scale_ptr, uintptr_t found_inf_ptr, uintptr_t stream, double clip_coef,
                       uintptr_t clip_coef_ptr, double clip_value, uintptr_t lr_ptr, bool lr_is_double) {
             return StepControl{grad_scale,     stochastic_rounding, seed,   counter,
                                grad_scale_ptr, found_inf_ptr,       stream, clip_coef,
                                clip_coef_ptr,  clip_value,          lr_ptr, lr_is_double};
           }),
           py::kw_only(), py::arg("grad_scale") = 1.0f, py::arg("stochastic_rounding") = false, py::arg("seed") = 0,
           py::arg("counter") = 0, py::arg("grad_scale_ptr") = 0, py::arg("found_inf_ptr") = 0, py::arg("stream") = 0,
           py::arg("clip_coef") = 1.0, py::arg("clip_coef_ptr") = 0,
           py::arg("clip_value") = std::numeric_limits<double>::infinity(), py::arg("lr_ptr") = 0,
           py::arg("lr_is_double") = false);

  py::class_<GroupPlan> plan(m, "GroupPlan");
  plan.def(py::init<py::list>())
      .def("admit", &GroupPlan::admit, py::arg("index"), py::arg("data"), py::arg("state"), py::arg("scalars"),
           py::arg("state_dtype"), py::arg("step"), py::arg("master"), py::arg("fresh"), py::arg("id"), py::arg("cuda"),
           py::arg("state_numel") = std::vector<int64_t>{}, py::arg("shape") = std::vector<int64_t>{},
           py::arg("absmax") = std::vector<py::object>(), py::arg("strides") = py::none())
      .def("gather", &GroupPlan::gather, py::arg("params"), py::arg("verify_state") = true)
      .def("path_counts", &GroupPlan::path_counts,
           "Steps through the one-call step, and of those through a guard (NOTE: [one-call step]; for tests).")
      .def("stage", &GroupPlan::stage, py::arg("index"), py::arg("staged"))
      .def("watched", &GroupPlan::watched, "State arrays re-checked every step (for tests).");

  // Every element-wise rule: its options class (see NOTE: [options by name]), validate() and
  // the plan method named after it (plan.adam(options, control)). RULES lists them in order.
  py::list rules;
#define GENESIS_BIND_RULE(rule, Options, Class) \
  bind_rule<Options>(m, plan, #rule, #Options); \
  rules.append(py::make_tuple(#rule, #Options));
  GENESIS_RULES(GENESIS_BIND_RULE)
  m.attr("RULES") = rules;
  // The stages of multi-pass optimizers (Muon): bound the same way, listed in STAGES.
  rules = py::list();
  GENESIS_STAGE_RULES(GENESIS_BIND_RULE)
  m.attr("STAGES") = rules;
#undef GENESIS_BIND_RULE

  py::class_<BufferList>(m, "BufferList")
      .def(py::init<py::sequence, bool, bool>(), py::arg("arrays"), py::arg("cuda") = false,
           py::arg("writeable") = false)
      .def("norm_on_device", &BufferList::norm_on_device)
      .def("clip_on_device", &BufferList::clip_on_device)
      .def("dtype_count", &BufferList::dtype_count)
      .def("scratch_size", &BufferList::scratch_size)
      .def("result_dtype", &BufferList::result_dtype)
      .def("norm", &BufferList::norm)
      .def("norm_scaled", &BufferList::norm_scaled)
      .def("scale", &BufferList::scale)
      .def("clamp", &BufferList::clamp, py::arg("limit"), py::arg("stream") = 0)
      .def("unscale", &BufferList::unscale)
      .def("has_nonfinite", &BufferList::has_nonfinite)
      .def_property_readonly("batched", &BufferList::batched,
                             "Whether a guard described the list (NOTE: [batched gradient lists]; tests).");

  py::class_<GradFingerprint>(m, "GradFingerprint")
      .def(py::init<const py::list&>(), py::arg("param_groups"),
           "The gradients of the groups' parameters as they are now (NOTE: [grad fingerprint]).")
      .def("matches", &GradFingerprint::matches, py::arg("param_groups"));
}
