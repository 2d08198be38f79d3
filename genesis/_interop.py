"""Array interop: what a parameter is, and how its memory reaches the compiled core.

Two kinds of parameter are understood (docs/semantics.md#parameters):
- a ``torch.Tensor`` (typically ``torch.nn.Parameter``), whose gradient is ``.grad``;
- a ``genesis.nn.Parameter``, holding a NumPy array in ``.data`` (any other CPU DLPack array is
  wrapped as a NumPy view of the same memory when the Parameter is built), or a CUDA array of
  another library (CuPy...) read through ``__cuda_array_interface__`` (_cuda_array.py).

torch is optional: it is looked up in ``sys.modules`` and only used when the user already
imported it, so ``import genesis`` works with NumPy alone.
"""

import os
import sys

import numpy as np

from . import _C, _cuda_array

# The compiled core's dtype codes (include/genesis/dtype.h, enum DType).
FLOAT32, FLOAT64, FLOAT16, BFLOAT16 = 0, 1, 2, 3
SUPPORTED_CODES = (FLOAT32, FLOAT64, FLOAT16, BFLOAT16)
CODE_NAMES = {FLOAT32: "float32", FLOAT64: "float64", FLOAT16: "float16", BFLOAT16: "bfloat16"}
NAME_CODES = {name: code for code, name in CODE_NAMES.items()}
# uint8: the codes of 8-bit optimizer state (state_dtype="int8", docs/low-bit-state.md). Not a
# parameter dtype, and not a state_dtype name (8-bit state is asked for as "int8").
UINT8 = 4
CODE_NAMES[UINT8] = "uint8"

# NumPy has no bfloat16: NumPy parameters may be float16, float32 or float64.
_NUMPY_CODES = {
    np.dtype(np.float16): FLOAT16,
    np.dtype(np.float32): FLOAT32,
    np.dtype(np.float64): FLOAT64,
    np.dtype(np.uint8): UINT8,
}
_NUMPY_OF_CODE = {code: dtype for dtype, code in _NUMPY_CODES.items()}
_torch_codes = None  # torch dtype -> code, filled on first use (see _torch)


def torch_module():
    """torch if the user has imported it, else None (genesis never imports torch itself)."""
    return sys.modules.get("torch")


def _torch():
    global _torch_codes
    torch = torch_module()
    if torch is not None and _torch_codes is None:
        dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8)
        # torch._C._increment_version: NOTE: [version counters] in csrc/python/bindings.cpp.
        _C.register_torch(torch.Tensor, dtypes, getattr(torch._C, "_increment_version", None))
        _register_tensor_facts(torch)
        _torch_codes = {d: code for code, d in enumerate(dtypes)}
    return torch


def _register_tensor_facts(torch):
    """Hands the core what the one-call step needs of torch (NOTE: [one-call step] and NOTE:
    [batched tensor facts] in csrc/python/bindings.cpp). torch's batched checks are private
    tools of its compiler: they are used only if this torch has them and they behave here as
    genesis relies on; otherwise every tensor is checked call by call.
    GENESIS_TENSOR_FACTS=0 turns them off (to compare the two)."""
    mode_enabled = getattr(torch._C, "_is_torch_function_mode_enabled", None)
    if mode_enabled is None:
        return  # the one-call step stays off: every step takes the checked path
    guards, address = None, 0
    if os.environ.get("GENESIS_TENSOR_FACTS", "1") != "0":
        try:
            from torch._C._dynamo import guards as torch_guards

            guards = torch_guards.TensorGuards
            address = int(torch_guards._torchinductor_pyobject_tensor_data_ptr)
        except (ImportError, AttributeError, TypeError, ValueError):
            guards, address = None, 0
    _C.register_tensor_facts(torch.nn.Parameter, mode_enabled, guards, address)
    if guards is not None and not _tensor_facts_behave(torch):
        _C.register_tensor_facts(torch.nn.Parameter, mode_enabled, None, 0)


def _tensor_facts_behave(torch):
    """Whether torch's data pointer function reads what data_ptr() says, and a guard built from a
    parameter and a gradient accepts their like and refuses every change the per-call checks
    refuse (NOTE: [batched tensor facts])."""
    a = torch.arange(12.0).reshape(3, 4)
    if _C._fast_data_ptr(a) != a.data_ptr() or _C._fast_data_ptr(a[1]) != a[1].data_ptr():
        return False
    examples = [torch.nn.Parameter(torch.zeros(3, 4)), a]

    def accepts(grad):
        built, accepted = _C._guard_accepts(examples, [torch.nn.Parameter(torch.ones(3, 4)), grad])
        return built and accepted

    with torch.inference_mode():
        inference = torch.ones(3, 4)
    refused = (
        torch._neg_view(torch.ones(3, 4)),
        torch.ones(3, 4, dtype=torch.float64),
        torch.ones(4, 3).t(),
        torch.ones(12),
        torch.ones(3, 8)[:, ::2],
        torch.ones(3, 4).to_sparse(),
        torch.ones(3, 4).as_subclass(torch.nn.Parameter),
        inference,
    )
    return accepts(torch.ones(3, 4)) and not any(accepts(g) for g in refused)


def advance_versions(tensors):
    """Advance the version counters of torch tensors written outside torch's operations, as the
    core does for those it writes (NOTE: [version counters] in csrc/python/bindings.cpp)."""
    if tensors:
        torch_module()._C._increment_version(tensors)


def is_torch(x):
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def is_array(x):
    """A torch tensor, NumPy array or CUDA array (CuPy, __cuda_array_interface__)."""
    return is_torch(x) or isinstance(x, np.ndarray) or _cuda_array.is_cuda_array(x)


def is_parameter(x):
    """True for anything an optimizer accepts as a parameter."""
    from .nn.parameter import Parameter

    return isinstance(x, Parameter) or is_torch(x)


def array_of(param):
    """The array holding a parameter's values (a torch tensor is its own array)."""
    return param if is_torch(param) else param.data


# NOTE: [DTensor parameters]
# torch.distributed's DTensor (FSDP2's `fully_shard`, tensor parallelism) is a torch.Tensor
# subclass with no storage of its own: its data_ptr() is 0, and each rank's shard is a plain
# tensor inside it (`to_local()`). Element-wise rules are exact on the shards, so genesis updates
# `to_local()` of the parameter, its gradient (redistributed to the parameter's placements first
# where they differ, as DTensor's own operations would) and its state, and keeps the state as
# DTensors of the parameter's mesh and placements, as torch's optimizers do, so that
# torch.distributed.checkpoint saves and reshards it. Rules that reduce over a whole tensor
# need every shard of it: LAMB and Adafactor accept only replicated DTensors, Muon, LBFGS and
# SparseAdam (their own step paths) none. Any other tensor subclass without storage is refused
# before anything is touched (docs/distributed.md#fsdp2-and-dtensor-parameters).
def dtensor_type():
    """torch's DTensor class if torch.distributed.tensor is loaded (no DTensor exists before)."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_dtensor(x):
    kind = dtensor_type()
    return kind is not None and isinstance(x, kind)


def local_of(x):
    """A DTensor's shard on this rank (the same memory), anything else itself."""
    if not is_dtensor(x):
        return x
    torch = _torch()
    with torch.no_grad():
        return x.to_local()


def shard_object(x):
    """The tensor object a DTensor keeps its shard in, read without autograd or a new view
    (to_local() makes a new view of a Parameter's shard on each call): what changes identity
    when FSDP2 re-shards. Falls back to to_local() should torch ever rename it."""
    shard = getattr(x, "_local_tensor", None)
    return shard if shard is not None else local_of(x)


def any_dtensor(xs):
    kind = dtensor_type()
    return kind is not None and any(isinstance(x, kind) for x in xs)


def full_value(x):
    """A DTensor's whole value on every rank (a collective where it is not replicated);
    anything else itself."""
    return x.full_tensor() if is_dtensor(x) else x


def is_sharded(x):
    """A DTensor whose shard on this rank is not the whole tensor (any placement but Replicate)."""
    return is_dtensor(x) and not all(p.is_replicate() for p in x.placements)


def lacks_storage(x):
    """A torch tensor subclass that wraps other tensors instead of holding memory (data_ptr() is
    0 though it has elements) and is not a DTensor: the core cannot update it."""
    if not is_torch(x) or is_dtensor(x) or x.layout != _torch().strided or x.numel() == 0 or x.is_meta:
        return False  # sparse layouts are another path's business (check_grad)
    try:
        return x.data_ptr() == 0
    except RuntimeError:  # "Cannot access data pointer of Tensor that doesn't have storage"
        return True


def shaped_like(param, local):
    """`local`, an array made for the core array of `param`, as the parameter's library shows it:
    for a DTensor parameter a DTensor of its mesh, with its placements where `local` has the
    shape of the parameter's shard and replicated otherwise (a whole-tensor rule's other
    states, which only replicated parameters have); anything else unchanged."""
    if not is_dtensor(param):
        return local
    from torch.distributed.tensor import DTensor, Replicate

    if tuple(local.shape) == tuple(local_of(param).shape):
        return DTensor.from_local(
            local, param.device_mesh, param.placements, run_check=False, shape=param.shape, stride=param.stride()
        )
    return DTensor.from_local(local, param.device_mesh, [Replicate()] * param.device_mesh.ndim, run_check=False)


def check_dtensor_state(value, param, what):
    """A state array of a DTensor parameter is a DTensor laid out by shaped_like; a plain
    parameter's is not a DTensor."""
    if not (is_dtensor(param) or is_dtensor(value)):
        return
    if not is_dtensor(value):
        raise ValueError(f"{what} is a plain tensor, but the parameter is a DTensor")
    if not is_dtensor(param):
        raise ValueError(f"{what} is a DTensor, but the parameter is not")
    if tuple(value.shape) == tuple(param.shape):
        placed = tuple(value.placements) == tuple(param.placements)
    else:  # another shape (a whole-tensor rule's factors): replicated, as its parameter
        placed = all(p.is_replicate() for p in value.placements)
    if value.device_mesh != param.device_mesh or not placed:
        raise ValueError(
            f"{what} is laid out as {tuple(value.placements)} on {value.device_mesh}; the parameter's "
            f"state must be on its mesh {param.device_mesh} with its placements {tuple(param.placements)}"
        )


def import_dtensor_state(value, param, code, local_shape, name, key):
    """A loaded state array of a DTensor parameter (Optimizer.load_state_dict): a DTensor on the
    parameter's mesh (torch.distributed.checkpoint's set_optimizer_state_dict makes one from a
    full state dict), copied into a new contiguous shard of dtype `code` laid out as the
    parameter (a collective if its placements differ, as DTensor's own operations would)."""
    what = f"state '{name}' of parameter {key}"
    if not (is_dtensor(param) and is_dtensor(value)):
        kinds = ("a plain tensor", "a DTensor") if is_dtensor(param) else ("a DTensor", "a plain tensor")
        raise ValueError(
            f"{what} is {kinds[0]}, but the parameter is {kinds[1]}; a distributed state dict loads "
            "through torch.distributed.checkpoint.state_dict.set_optimizer_state_dict"
        )
    if value.device_mesh != param.device_mesh:
        raise ValueError(f"{what} is on device mesh {value.device_mesh}, the parameter on {param.device_mesh}")
    if tuple(value.shape) == tuple(param.shape) and not same_distribution(value, param):
        value = value.redistribute(param.device_mesh, param.placements)
    local = local_of(value)
    if tuple(local.shape) != tuple(local_shape):
        raise ValueError(f"{what} has shard shape {tuple(local.shape)}, but this rank's shard has {tuple(local_shape)}")
    local = local.detach().to(dtype=torch_dtype(code), copy=True).contiguous()
    return shaped_like(param, local)


def same_distribution(a, b):
    """Whether two DTensors are laid out alike: the same mesh and placements."""
    return a.device_mesh == b.device_mesh and tuple(a.placements) == tuple(b.placements)


def dtype_code(arr):
    """The core's dtype code of an array, or None for a dtype genesis does not handle."""
    if is_torch(arr):
        return _torch_codes.get(arr.dtype)
    if _cuda_array.is_cuda_array(arr):
        return _cuda_array.interface(arr).code
    return _NUMPY_CODES.get(arr.dtype)


def dtype_name(arr):
    """The array's dtype as messages name it (a CUDA array's typestr, e.g. '<i4')."""
    return _cuda_array.interface(arr).typestr if _cuda_array.is_cuda_array(arr) else str(arr.dtype)


def torch_dtype(code):
    """The torch dtype of a core dtype code."""
    _torch()
    return next(d for d, c in _torch_codes.items() if c == code)


def data_ptr(arr):
    if is_torch(arr):
        return arr.data_ptr()
    return _cuda_array.interface(arr).ptr if _cuda_array.is_cuda_array(arr) else arr.ctypes.data


def numel(arr):
    if is_torch(arr):
        return arr.numel()
    return _cuda_array.numel(_cuda_array.interface(arr)) if _cuda_array.is_cuda_array(arr) else arr.size


def is_contiguous(arr):
    if is_torch(arr):
        return arr.is_contiguous()
    return _cuda_array.interface(arr).contiguous if _cuda_array.is_cuda_array(arr) else arr.flags.c_contiguous


def is_writeable(arr):
    """Whether the core may write a NumPy or CUDA array (torch tensors always are)."""
    if is_torch(arr):
        return True
    return not _cuda_array.interface(arr).readonly if _cuda_array.is_cuda_array(arr) else arr.flags.writeable


def device_of(arr):
    if _cuda_array.is_cuda_array(arr):
        return _cuda_array.device_of(arr)
    return str(arr.device) if is_torch(arr) else "cpu"


def library_of(arr):
    """Which kind of array this is, for messages and for "state must be of the parameter's
    library" checks: "torch", "numpy", or the CUDA array's type name."""
    if is_torch(arr):
        return "torch"
    if _cuda_array.is_cuda_array(arr):
        return type(arr).__module__.partition(".")[0] + "." + type(arr).__name__
    return "numpy" if isinstance(arr, np.ndarray) else type(arr).__name__


def typename(x):
    """The type name torch's messages use (torch.typename for tensors)."""
    torch = _torch()
    if torch is not None and isinstance(x, torch.Tensor):
        return torch.typename(x)
    return type(x).__name__


def check_param_type(param, where, differentiable=False):
    """What an optimizer checks when a parameter is added, as torch does: it is a parameter
    (a torch tensor or a genesis.nn.Parameter), and a torch tensor is a leaf (or retains its
    grad). Everything about its memory is checked when it is first stepped (it may still be on
    the meta device, to be materialized later)."""
    if not is_parameter(param):
        raise TypeError(
            "optimizer can only optimize Tensors or genesis.nn.Parameter objects, "
            f"but one of the params is {typename(param)}"
        )
    if is_torch(param) and not differentiable and not (param.is_leaf or param.retains_grad):
        raise ValueError("can't optimize a non-leaf Tensor")
    check_storage(array_of(param), where)
    arr = core_view(array_of(param))
    if _cuda_array.is_cuda_array(arr):
        return check_param(param, where)  # its interface, with errors naming the parameter
    if dtype_code(arr) not in SUPPORTED_CODES:
        raise TypeError(f"{where} has dtype {arr.dtype}; genesis supports float32, float64, float16 and bfloat16")
    if not is_torch(arr):  # NumPy parameters are updated in place, never through copies
        check_param(param, where)


def check_param(param, where):
    """Raise TypeError/ValueError if the core cannot update this parameter in place."""
    if not is_parameter(param):
        raise TypeError(
            "optimizer can only optimize torch Tensors or genesis.nn.Parameter objects, "
            f"but {where} is {type(param).__name__}"
        )
    check_storage(array_of(param), where)
    check_not_negated(array_of(param), where)
    check_not_inference(array_of(param), where)
    arr = core_view(array_of(param))
    if _cuda_array.is_cuda_array(arr):
        return _check_cuda_array(arr, where)
    check_native(arr, where)
    code = dtype_code(arr)
    if code not in SUPPORTED_CODES:
        raise TypeError(
            f"{where} has dtype {arr.dtype}; genesis supports float32, float64, "
            "float16 and bfloat16 (and complex64/complex128 torch tensors)"
        )
    device = device_of(arr)
    if device.startswith("cuda"):
        _check_cuda_backend(where, device)
    elif device != "cpu":
        raise ValueError(f"{where} is on device {device}; genesis updates CPU and CUDA parameters")
    if not is_torch(arr) and not is_contiguous(arr):
        raise ValueError(
            f"{where} is not contiguous; genesis updates contiguous NumPy parameters "
            "only (use np.ascontiguousarray before building the optimizer)"
        )
    if not is_torch(arr) and not arr.flags.writeable:
        raise ValueError(f"{where} is a read-only array and cannot be updated in place")


def check_not_negated(arr, where):
    """Refuse a torch tensor whose negative bit is set: its elements are minus what its memory
    holds, which the core, reading memory, would misread (NOTE: [negative bit] in
    csrc/python/bindings.cpp)."""
    if is_torch(arr) and not arr.is_complex() and arr.is_neg():
        raise TypeError(
            f"{where} has its negative bit set (a lazily negated view, as torch._neg_view or the .imag of "
            "a conjugated tensor make); genesis reads memory as stored: pass x.resolve_neg() instead"
        )


def is_inference(x):
    """A torch tensor made under torch.inference_mode() (it has no version counter)."""
    return is_torch(x) and x.is_inference()


def check_not_inference(arr, where):
    """As torch: a tensor made under torch.inference_mode() is not updated in place outside it.
    It has no version counter, so an autograd graph that saved it could not notice the update
    (NOTE: [version counters] in csrc/python/bindings.cpp). Checked when a parameter is
    admitted, and at every step of a group that admitted one (Optimizer._prepare)."""
    if is_inference(arr) and not torch_module().is_inference_mode_enabled():
        raise RuntimeError(
            f"{where} is an inference tensor (made under torch.inference_mode()), which torch does not "
            "update in place outside inference mode; make the parameter from a clone() of it"
        )


def check_storage(arr, where):
    """Refuse a torch tensor subclass without memory of its own (NOTE: [DTensor parameters])."""
    if lacks_storage(arr):
        raise TypeError(
            f"{where} is a {type(arr).__qualname__}, a torch.Tensor subclass without storage of its own "
            "(data_ptr() is 0); genesis updates tensors with memory, and DTensors through their shards"
        )


def _check_cuda_backend(where, device):
    if not _C.cuda_built():
        raise ValueError(
            f"{where} is on {device}, but this genesis was built without CUDA (install it where nvcc is available)"
        )
    if _C.cuda_device_count() == 0:
        raise ValueError(f"{where} is on {device}, but genesis's CUDA runtime sees no GPU")


def _check_cuda_array(arr, where):
    """A CUDA array of another library (_cuda_array.py) as a parameter: everything its interface
    says is checked first (so these errors do not depend on the build), then the backend."""
    iface = _cuda_array.interface(arr, where)
    if iface.code not in (FLOAT32, FLOAT64, FLOAT16):
        raise TypeError(
            f"{where} has dtype {iface.typestr}; genesis supports float32, float64 and float16 CUDA arrays "
            "(bfloat16 CUDA parameters: torch tensors)"
        )
    if not iface.contiguous:
        raise ValueError(f"{where} is not contiguous; genesis updates contiguous CUDA arrays only")
    if iface.readonly:
        raise ValueError(f"{where} is a read-only array and cannot be updated in place")
    _check_cuda_backend(where, _cuda_array.device_of(arr))
    return iface


def _check_cuda_grad(arr, grad, where):
    """The gradient of a CUDA-array parameter: a CUDA array like it, on the same stream."""
    if not _cuda_array.is_cuda_array(grad):
        raise TypeError(f"the gradient of {where} is a {library_of(grad)}, but the parameter is a {library_of(arr)}")
    p = _cuda_array.interface(arr, where)
    g = _cuda_array.interface(grad, f"the gradient of {where}")
    if g.code != p.code:
        raise TypeError(f"the gradient of {where} has dtype {g.typestr}, but the parameter has dtype {p.typestr}")
    if g.shape != p.shape:
        raise ValueError(f"the gradient of {where} has shape {g.shape}, but the parameter has shape {p.shape}")
    if device_of(grad) != device_of(arr):
        raise ValueError(f"the gradient of {where} is on {device_of(grad)}, but the parameter is on {device_of(arr)}")
    if not g.contiguous:
        raise ValueError(f"the gradient of {where} is not contiguous")
    if g.stream is not None and p.stream is not None and g.stream != p.stream:
        raise ValueError(
            f"the gradient of {where} is on CUDA stream {g.stream:#x}, but the parameter on stream {p.stream:#x}; "
            "genesis updates on the parameter's stream and does not synchronize streams"
        )


def check_native(arr, where):
    """NumPy arrays in the other byte order than this machine's hold numbers the core would
    misread: refuse them (``arr.astype(arr.dtype.newbyteorder('='))`` converts)."""
    if isinstance(arr, np.ndarray) and not arr.dtype.isnative:
        raise ValueError(
            f"{where} has non-native byte order ({arr.dtype.str}); convert it with "
            "arr.astype(arr.dtype.newbyteorder('='))"
        )


def check_grad(param, grad, where, sparse_ok=False):
    """Raise TypeError/ValueError if `grad` cannot be used as the gradient of `param`. torch
    gradients may be strided (and sparse where the optimizer supports it, as torch's SGD):
    such parameters go through a contiguous staging copy (see Optimizer._run_staged)."""
    arr = array_of(param)
    if _cuda_array.is_cuda_array(arr):
        return _check_cuda_grad(arr, grad, where)
    if is_dtensor(arr) or is_dtensor(grad):
        check_dtensor_grad(arr, grad, where)  # the rest holds for their global views alike
    check_storage(grad, f"the gradient of {where}")
    check_not_negated(grad, f"the gradient of {where}")
    if is_torch(grad) and grad.is_sparse:
        if not sparse_ok:
            raise RuntimeError(
                f"the gradient of {where} is sparse; this optimizer does not "
                "support sparse gradients (SGD, Adagrad and SparseAdam do)"
            )
        check_sparse_indices(grad, f"the gradient of {where}")
    if is_torch(arr) != is_torch(grad) or not (is_torch(grad) or isinstance(grad, np.ndarray)):
        raise TypeError(
            f"the gradient of {where} is a {type(grad).__name__}, but the parameter is a {type(arr).__name__}"
        )
    check_native(grad, f"the gradient of {where}")
    if dtype_code(grad) != dtype_code(arr):
        raise TypeError(f"the gradient of {where} has dtype {grad.dtype}, but the parameter has dtype {arr.dtype}")
    if tuple(grad.shape) != tuple(arr.shape):
        raise ValueError(
            f"the gradient of {where} has shape {tuple(grad.shape)}, but the parameter has shape {tuple(arr.shape)}"
        )
    if device_of(grad) != device_of(arr):
        raise ValueError(f"the gradient of {where} is on {device_of(grad)}, but the parameter is on {device_of(arr)}")
    if not is_torch(grad) and not is_contiguous(grad):
        raise ValueError(f"the gradient of {where} is not contiguous")


def check_sparse_indices(grad, where):
    """A sparse COO tensor's indices must lie inside its shape. torch builds unchecked ones on
    request (``check_invariants=False``), and adding one to a dense tensor writes wherever its
    indices point, past the table's memory included; so every sparse gradient is checked here,
    before a step changes anything (a few reductions over the indices; on CUDA one host read)."""
    indices = grad._indices()
    if indices.numel() == 0:
        return
    torch = _torch()
    bounds = torch.tensor(grad.shape[: grad.sparse_dim()], device=indices.device)
    if bool(((indices < 0).any(dim=1) | (indices.amax(dim=1) >= bounds)).any()):
        raise ValueError(f"{where} is a sparse tensor with indices outside its shape {tuple(grad.shape)}")


def check_dtensor_grad(arr, grad, where):
    """A DTensor parameter has a DTensor gradient of its dtype on its mesh (any placements: the
    step redistributes them), and a plain parameter a plain gradient."""
    if not (is_dtensor(arr) and is_dtensor(grad)):
        kinds = ("a DTensor", "a plain tensor") if is_dtensor(grad) else ("a plain tensor", "a DTensor")
        raise TypeError(f"the gradient of {where} is {kinds[0]}, but the parameter is {kinds[1]}")
    if grad.device_mesh != arr.device_mesh:
        raise ValueError(
            f"the gradient of {where} is on device mesh {grad.device_mesh}, the parameter on {arr.device_mesh}"
        )
    if tuple(grad.shape) != tuple(arr.shape):
        raise ValueError(
            f"the gradient of {where} has shape {tuple(grad.shape)}, but the parameter has shape {tuple(arr.shape)}"
        )
    if grad.dtype != arr.dtype:
        raise TypeError(f"the gradient of {where} has dtype {grad.dtype}, but the parameter has dtype {arr.dtype}")


def core_view(arr):
    """The array the core updates for `arr`: a DTensor as its shard on this rank, a complex torch
    tensor as its real view (torch.view_as_real: the same memory, two floats per element),
    anything else itself."""
    arr = local_of(arr)
    if is_torch(arr) and arr.is_complex():
        return _torch().view_as_real(arr)
    return arr


def real_view(value):
    """A complex torch tensor as its real view (pairs of floats, as core_view), a conjugate view
    resolved first; any other value as it is."""
    if is_torch(value) and value.is_complex():
        return _torch().view_as_real(value.resolve_conj())
    return value


def needs_staging(param, dense_ok=False):
    """A torch parameter the cached fast path cannot take as it is: complex, strided, or with a
    strided or sparse gradient, or a DTensor (NOTE: [DTensor parameters]).
    Optimizer._run_staged updates it through contiguous copies or its shard. With `dense_ok`
    (an element-wise rule, NOTE: [dense layouts] in csrc/python/bindings.cpp) a parameter laid
    out densely in another order (channels_last) is taken as it is, when its gradient has its
    strides."""
    if not is_torch(param):
        return False
    grad = param.grad
    if is_dtensor(param) or param.is_complex():
        return True
    if param.is_contiguous():
        return grad is not None and (grad.is_sparse or not grad.is_contiguous())
    if not (dense_ok and dense_strides(param)):
        return True
    return grad is not None and (grad.is_sparse or grad.stride() != param.stride())


def dense_strides(t):
    """The strides of a non-contiguous torch tensor whose elements fill one block of memory
    without gaps or overlap, in some order of its dimensions (channels_last, a transposed
    matrix); None for anything else. An element-wise rule over that block in memory order is
    the rule over the tensor (NOTE: [dense layouts] in csrc/python/bindings.cpp)."""
    if not is_torch(t) or t.layout != _torch().strided or t.is_contiguous():
        return None
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1):
        if stride != expected:
            return None
        expected *= size
    return tuple(t.stride())


def memory_order(t):
    """A dense non-contiguous torch tensor (dense_strides) as a 1-D contiguous view of its block
    of memory, for element-wise work and sums; anything else itself."""
    if dense_strides(t) is None:
        return t
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def dtype_code_of_name(name):
    """The core's code of a state dtype given as a name, a NumPy dtype or a torch dtype;
    "int8" (or torch.int8) asks for 8-bit state, whose code is UINT8 (its arrays hold uint8
    codes; docs/low-bit-state.md)."""
    torch = _torch()
    if name == "int8" or (torch is not None and name is torch.int8):
        return UINT8
    if isinstance(name, str):
        code = NAME_CODES.get(name)
    elif torch is not None and isinstance(name, torch.dtype):
        code = _torch_codes.get(name)
    else:
        try:
            code = _NUMPY_CODES.get(np.dtype(name))
        except TypeError:
            code = None
    if code is None or code == UINT8:
        raise TypeError(f"unsupported state dtype {name!r}; use float32, float64, bfloat16 or int8")
    return code


def zeros_like(arr, code=None, shape=None, keep_layout=False):
    """A zero-filled, contiguous array of the parameter's library and device, of its shape (or
    `shape`), of the parameter's dtype or of the dtype `code`. `keep_layout`: of the strides of
    a densely laid out `arr` instead (dense_strides; torch's preserve_format), where the
    shapes are equal."""
    shape = arr.shape if shape is None else tuple(shape)
    if is_torch(arr):
        dtype = arr.dtype if code is None else torch_dtype(code)
        if keep_layout and shape == tuple(arr.shape) and dense_strides(arr):
            return _torch().zeros_like(arr, dtype=dtype, memory_format=_torch().preserve_format)
        return _torch().zeros(shape, dtype=dtype, device=arr.device)
    if code == BFLOAT16:
        raise TypeError("NumPy has no bfloat16: bfloat16 state needs torch parameters")
    if _cuda_array.is_cuda_array(arr):
        return _cuda_array.zeros(arr, shape, dtype_code(arr) if code is None else code)
    return np.zeros(shape, dtype=arr.dtype if code is None else _NUMPY_OF_CODE[code])


def is_cuda(arr):
    """A torch CUDA tensor (lr, GradScaler values and torch parameters ask this)."""
    return is_torch(arr) and arr.is_cuda


def on_cuda(arr):
    """An array the CUDA backend updates: a torch CUDA tensor or a CUDA array (_cuda_array.py)."""
    return is_cuda(arr) or _cuda_array.is_cuda_array(arr)


def new_step(arr, value=0.0):
    """A step counter: a 0-dim float32 array of the parameter's library, on the CPU (torch's
    layout), except for CUDA parameters, whose counter lives on their device (as with torch's
    fused optimizers) so that the kernels can advance it, or not (a skipped GradScaler step),
    without the host. The core increments it in place, so it stays a live view of the count."""
    if is_torch(arr):
        device = arr.device if arr.is_cuda else "cpu"
        return _torch().tensor(float(value), dtype=_torch().float32, device=device)
    if _cuda_array.is_cuda_array(arr):
        return _cuda_array.filled(arr, (), FLOAT32, float(value))
    return np.array(value, dtype=np.float32)


def copy_into_like(value, arr, code, shape=None, keep_layout=False):
    """A new contiguous array of `arr`'s library and device, of its shape (or `shape`), of dtype
    `code`, holding `value` (a torch tensor, a NumPy array or a number) cast to that dtype.
    `keep_layout`: of `arr`'s strides where it is densely laid out (as zeros_like)."""
    shape = arr.shape if shape is None else tuple(shape)
    if is_torch(arr):
        torch = _torch()
        src = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if keep_layout and shape == tuple(arr.shape) and dense_strides(arr):
            out = torch.empty_like(arr, dtype=torch_dtype(code), memory_format=torch.preserve_format)
            return out.copy_(src.detach().to(device=arr.device).reshape(shape))
        out = src.detach().to(device=arr.device, dtype=torch_dtype(code), copy=True)
        return out.reshape(shape).contiguous()
    if is_torch(value):
        if value.dtype == _torch().bfloat16:  # NumPy cannot hold it: widen first
            value = value.float()
        value = value.detach().cpu().numpy()
    if _cuda_array.is_cuda_array(arr):
        return _cuda_array.filled(arr, shape, code, value)
    return np.array(np.asarray(value).reshape(shape), dtype=_NUMPY_OF_CODE[code], order="C")


def to_float(x):
    """A Python float from a number, a 0-dim array or a 0-dim tensor."""
    return float(x.item()) if hasattr(x, "item") else float(x)
