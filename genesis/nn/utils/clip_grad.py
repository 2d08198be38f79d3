"""Gradient clipping over many tensors at once, on the compiled core
(docs/semantics.md#gradient-clipping)."""

import contextlib
import math
from operator import attrgetter

import numpy as np

from ... import _C, _interop


def _grads(parameters):
    """The parameters' gradients (those that have one) and whether the parameters are torch
    tensors (None when there are no parameters). A single parameter is accepted as well as an
    iterable."""
    if _interop.is_parameter(parameters):
        parameters = [parameters]
    parameters = list(parameters)
    grads = [g for g in map(_GRAD, parameters) if g is not None]
    return grads, _interop.is_torch(parameters[0]) if parameters else None


_GRAD = attrgetter("grad")


def _plain_buffers(grads, writeable):
    """The core's view of gradients it takes as they are, the common case: real, contiguous,
    of a supported dtype, all on the CPU (torch tensors, or native NumPy arrays, writeable ones
    if `writeable`) or all on one GPU; one core call, no Python per gradient. None for
    anything else (DTensors, which have no memory of their own; complex, strided, sparse,
    mixed devices, ...), which the callers and _buffers then look at gradient by gradient, to
    take it or to say what is wrong."""
    try:
        return _C.BufferList(grads, _interop.is_cuda(grads[0]), writeable)
    except TypeError:
        return None


def _scaled_buffers(grads):
    """The core's view of what scaling `grads` in place scales (a complex gradient's real view)."""
    buffers = _plain_buffers(grads, writeable=True)
    return buffers if buffers is not None else _real_view_buffers(grads)


def _real_view_buffers(grads):
    """_scaled_buffers for gradients _plain_buffers has refused, looked at one by one."""
    return _buffers(_complex_views(grads, 2.0)[1])


def _check_writable_native(grads, writeable=True):
    """NumPy gradients must be native-endian, and writeable where they will be clipped in place:
    the core reads the bytes as native numbers (a big-endian array would give a wrong norm), and
    a read-only array (e.g. one over immutable ``bytes``) must not be written. Checked before
    anything is modified; torch tensors are always native and writeable."""
    for i, g in enumerate(grads):
        if isinstance(g, np.ndarray):
            if not g.dtype.isnative:
                raise TypeError(
                    f"gradient {i} has non-native byte order (dtype '{g.dtype.str}'); "
                    "genesis reads native-endian arrays only: convert it, e.g. "
                    "p.grad = p.grad.astype(p.grad.dtype.newbyteorder('='))"
                )
            if writeable and not g.flags.writeable:
                raise ValueError(f"gradient {i} is a read-only array; clipping writes the gradients in place")


def _buffers(grads, writeable=True):
    """The core's view of the gradients: all on the CPU, or all on one GPU; `writeable` where
    they will be written in place (NumPy arrays must then be writeable). The core checks them
    all in one pass; only when it refuses one does Python look again, to say precisely what is
    wrong."""
    _check_writable_native(grads, writeable)
    if _interop.any_dtensor(grads):  # element-wise work on this rank's shards
        grads = [_interop.local_of(g) for g in grads]
    cuda = _interop.is_cuda(grads[0])
    if cuda and any(g.device != grads[0].device for g in grads):
        raise ValueError("gradients are on several devices; clip each device's parameters separately")
    try:
        return _C.BufferList(grads, cuda)
    except TypeError:
        # Densely laid out gradients of another order (channels_last): every clip operation is
        # element-wise or a sum, so their blocks of memory, in memory order, serve as they are.
        dense = [_interop.memory_order(g) for g in grads]
        if any(a is not b for a, b in zip(dense, grads)):
            return _buffers(dense, writeable)
        for i, g in enumerate(grads):
            if not (_interop.is_torch(g) or isinstance(g, np.ndarray)):
                raise TypeError(
                    f"gradient {i} is a {type(g).__name__}; expected a torch tensor or a NumPy array"
                ) from None
            _interop.check_storage(g, f"gradient {i}")
            if _interop.device_of(g) != _interop.device_of(grads[0]):
                raise ValueError(
                    f"gradient {i} is on {_interop.device_of(g)}, gradient 0 on {_interop.device_of(grads[0])}"
                ) from None
            if _interop.dtype_code(g) not in _interop.SUPPORTED_CODES:
                raise TypeError(
                    f"gradient {i} has dtype {g.dtype}; genesis supports float32, float64, float16 and bfloat16"
                ) from None
            if _interop.is_torch(g) and g.is_sparse:
                raise TypeError(
                    f"gradient {i} is sparse; clipping takes dense gradients (torch's clip functions "
                    "refuse sparse ones too; an optimizer's clip_grad_value_ clamps them)"
                ) from None
        strided = [i for i, g in enumerate(grads) if not _interop.is_contiguous(g)]
        if strided and all(_interop.is_torch(grads[i]) or isinstance(grads[i], np.ndarray) for i in strided):
            return _StagedBuffers(grads, strided, writeable)
        if strided:
            raise ValueError(f"gradient {strided[0]} is not contiguous") from None
        raise


class _StagedBuffers:
    """The core's view of gradients of which some are strided (views with gaps, such as
    ``x[::2]``, which torch's clip functions take too): those go through contiguous copies, and
    every operation that writes the gradients copies them back. A copy each way per such
    gradient, on a path autograd's own gradients never take (they are dense). The reads (norm,
    inf check, ...) are the BufferList's."""

    def __init__(self, grads, strided, writeable=True):
        staged = list(grads)
        for i in strided:
            g = grads[i]
            staged[i] = g.contiguous() if _interop.is_torch(g) else np.ascontiguousarray(g)
        self._pairs = [(i, grads[i], staged[i]) for i in strided]
        self._list = _buffers(staged, writeable)

    def __getattr__(self, name):
        return getattr(self._list, name)

    def _writing(self, write, *args):
        """`write` on the copies, then the copies into the gradients. An expanded gradient is
        refused first (_expanded): torch will not write one in place either, and nothing may
        change before the error."""
        for i, g, _ in self._pairs:
            if _expanded(g):
                raise ValueError(
                    f"gradient {i} is an expanded tensor (a dimension of stride 0: its elements "
                    "share memory), which cannot be clipped in place: clip a copy (p.grad = p.grad.clone())"
                )
        result = write(*args)
        torch = _interop.torch_module()
        with torch.no_grad() if torch is not None else contextlib.nullcontext():
            for _, g, copy in self._pairs:
                if _interop.is_torch(g):
                    g.copy_(copy)
                else:
                    np.copyto(g, copy)
        return result

    def scale(self, factor):
        return self._writing(self._list.scale, factor)

    def clamp(self, limit, stream=0):
        return self._writing(self._list.clamp, limit, stream)

    def unscale(self, factor):
        return self._writing(self._list.unscale, factor)

    def clip_on_device(self, max_norm, total, stream):
        return self._writing(self._list.clip_on_device, max_norm, total, stream)


def _expanded(arr):
    """Whether a strided array repeats its elements along a dimension (stride 0, an expanded
    tensor): torch refuses to write such a tensor in place (its internal-overlap check), and so
    do the clips. A layout whose elements share memory otherwise (torch writes those in place)
    has equal values at the shared places in its copy, so writing the copy back sets each place
    once."""
    strides = arr.strides if isinstance(arr, np.ndarray) else arr.stride()
    return any(st == 0 and sz > 1 for st, sz in zip(strides, arr.shape))


def _complex_views(grads, norm_type):
    """(the tensors whose norm is the gradients' norm, the tensors that scaling them scales)
    as the core takes them. torch takes a complex gradient's norm over its values' magnitudes:
    for the 2-norm that is the norm of its real view (no copy), for other norm types the norm
    of its magnitudes (a real copy). Scaling the real view scales the values. A conjugate view
    takes part through its memory, which has the same magnitudes and scales alike."""
    complex_ = [_is_complex(g) for g in grads]
    if not any(complex_):
        return grads, grads
    torch = _interop.torch_module()
    memory = [g.conj() if c and g.is_conj() else g for g, c in zip(grads, complex_)]
    scaled = [torch.view_as_real(g) if c else g for g, c in zip(memory, complex_)]
    if norm_type == 2.0:
        return scaled, scaled
    return [g.abs() if c else g for g, c in zip(memory, complex_)], scaled


def _is_complex(x):
    return _interop.is_torch(x) and x.is_complex()


def check_clampable(tensors):
    """Clamping has no order for complex values (torch's clamp refuses them): refused before
    anything is recorded or changed, by the eager and the deferred clip_grad_value_."""
    if any(_is_complex(t) for t in tensors):
        raise TypeError("clip_grad_value_ cannot clamp complex gradients (torch's clamp does not take them either)")


def _as_scalar(value, buffers, grads, torch_params):
    """The norm as the parameters' library returns it (docs/semantics.md#gradient-clipping): for
    torch parameters a 0-dim tensor of the dtype torch gives it, so float32 gradients get a float32 norm (inf if it
    overflows float32, as in torch); a NumPy float64 otherwise (the double-precision norm).
    ``torch_params`` is None when there were no parameters at all: then the result is torch's
    ``tensor(0.)`` if torch has been imported, else a NumPy float64."""
    torch = _interop.torch_module()
    if torch_params is None:
        torch_params = torch is not None
    if not torch_params:
        return np.float64(value)
    if not grads:
        return torch.tensor(value)
    return torch.tensor(value, dtype=_interop.torch_dtype(buffers.result_dtype()), device=grads[0].device)


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_LOG_FLOAT32_MAX = math.log(_FLOAT32_MAX)
_FLOAT16_MAX = 65504.0  # the narrowest range of the four dtypes


def _sum_overflows_float32(norm, count, norm_type):
    """Whether torch's CPU kernel, which sums ``|x|**p`` in float32 for float32 and 16-bit
    tensors (a single element is returned as it is), overflows computing this ``norm``."""
    return count > 1 and math.isfinite(norm_type) and norm > 0 and norm_type * math.log(norm) > _LOG_FLOAT32_MAX


def _as_torch_computes(norm, count, dtype, norm_type):
    """The exact ``norm`` of ``count`` values of torch ``dtype`` as torch returns it."""
    torch = _interop.torch_module()
    if dtype != torch.float64 and _sum_overflows_float32(norm, count, norm_type):
        return math.inf
    return float(torch.tensor(norm, dtype=torch.float64).to(dtype))  # inf beyond the range


def _torch_cpu_norm(buffers, grads, norm_type, norm=None):
    """The total norm of torch CPU gradients: the core's double-precision norm, except where
    torch's own computation overflows.

    NOTE: [torch norm overflow] torch takes each gradient's norm in that gradient's dtype, then
    the norm of those norms in their promoted dtype, summing ``|x|**p`` in float32 for float32,
    float16 and bfloat16. So a total that fits comfortably in float64 can be inf in torch: a
    bfloat16 gradient's norm beyond bfloat16's range beside float64 gradients, or float32
    gradients whose squares' sum passes float32's range (a norm above 1.8e19). Only a large
    total can hide such an overflow; then (rarely) the norms are taken gradient by gradient and
    treated as torch treats them (gradients of one dtype need no second look). The result is
    rounded to the promoted dtype by the caller. ``norm(buffer_list)`` takes the norms (the
    deferred clip passes one that unscales as it reads, genesis/optim/_clip.py).
    """
    if norm is None:
        norm = lambda b: b.norm(norm_type)  # noqa: E731
    total = norm(buffers)
    if not (total > _FLOAT16_MAX or _sum_overflows_float32(total, 2, norm_type)):
        return total  # the common case: too small to overflow anywhere
    torch = _interop.torch_module()
    narrow = {g.dtype for g in grads} - {torch.float64}
    if not narrow:
        return total
    if buffers.dtype_count() == 1:
        # One dtype: torch's total overflows exactly when this sum does (a gradient's sum
        # cannot pass float32's range without the sum over all of them passing it too).
        count = grads[0].numel() if len(grads) == 1 else len(grads)
        return math.inf if _sum_overflows_float32(total, count, norm_type) else total
    if not (total > min(torch.finfo(d).max for d in narrow) or _sum_overflows_float32(total, 2, norm_type)):
        return total
    norms = [_as_torch_computes(norm(_buffers([g], writeable=False)), g.numel(), g.dtype, norm_type) for g in grads]
    total = _norm_of_norms(norms, norm_type)
    promoted = _interop.torch_dtype(buffers.result_dtype())
    if promoted != torch.float64 and _sum_overflows_float32(total, len(grads), norm_type):
        return math.inf
    return total


def _norm_of_norms(norms, norm_type):
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return float(np.linalg.norm(np.asarray(norms, dtype=np.float64), ord=norm_type))


def _norm_in_python(grads, norm_type):
    """Norm types the core does not take (0, negative, -inf, NaN), as torch computes them: each
    gradient's norm, then the norm of those (so for 0, the number of gradients holding a
    non-zero element). In float64; a device float64 tensor for CUDA gradients."""
    if norm_type < 0:
        for i, g in enumerate(grads):
            if _interop.numel(g) == 0:
                raise RuntimeError(
                    f"the {norm_type} norm of gradient {i} is undefined: it is "
                    "empty, and that norm has no identity element"
                )
    if _interop.is_torch(grads[0]):
        torch = _interop.torch_module()
        norms = [torch.linalg.vector_norm(g, norm_type, dtype=torch.float64) for g in grads]
        return torch.linalg.vector_norm(torch.stack(norms), norm_type)
    norms = [_norm_of_norms(g.reshape(-1), norm_type) for g in grads]
    return _norm_of_norms(norms, norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale all gradients together so that their joint norm is at most ``max_norm``.

    The norm is taken over all gradients as if they were concatenated into one vector (norm
    types 1, 2, any p > 0, and ``inf``), in double precision; the other norm types torch
    accepts (0, negative, ``-inf``, NaN) are computed as torch does, gradient by gradient.
    Gradients are multiplied by ``min(max_norm / (total + 1e-6), 1)``. Returns the total norm
    before clipping. ``foreach`` is accepted for torch compatibility; genesis always processes
    all tensors in one call. DTensor gradients (FSDP2, tensor parallelism) are clipped as
    torch clips them (their norm needs collectives over the device mesh). The same as
    :func:`get_total_norm` of the gradients followed by :func:`clip_grads_with_norm_`.
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    parameters = [parameters] if _interop.is_parameter(parameters) else list(parameters)
    grads, torch_params = _grads(parameters)
    if not grads:
        return _as_scalar(0.0, None, grads, torch_params)
    with _eager_write(grads):
        buffers = norm_buffers = _plain_buffers(grads, writeable=True)
        norm_grads = grads
        if buffers is None:
            if _interop.any_dtensor(grads):
                total = dtensor_norm(grads, norm_type, error_if_nonfinite)
                _interop.torch_module().nn.utils.clip_grads_with_norm_(parameters, max_norm, total, foreach)
                return total
            norm_grads, grads = _complex_views(grads, norm_type)
            buffers = _buffers(grads)
            norm_buffers = buffers if norm_grads is grads else _buffers(norm_grads)
        result, total = _checked_norm(norm_buffers, norm_grads, norm_type, error_if_nonfinite, torch_params)
        if _interop.is_cuda(grads[0]):
            buffers.clip_on_device(max_norm, total.data_ptr(), _stream(grads))
        else:
            _scale_by_norm(buffers, max_norm, total)
        return result


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """The norm of ``tensors`` taken together, as if concatenated into one vector:
    torch.nn.utils.get_total_norm on the compiled core (the norm of :func:`clip_grad_norm_`,
    with its precision, its norm types and its return types). ``tensors`` is one tensor or
    array or an iterable of them, usually gradients (``[p.grad for p in params]``); with none
    the result is 0. For CUDA tensors the norm stays on the device (no host synchronization
    unless ``error_if_nonfinite``). ``foreach`` is accepted for torch compatibility.
    """
    norm_type = float(norm_type)
    tensors = [tensors] if _interop.is_array(tensors) else list(tensors)  # one, or an iterable
    if not tensors:
        return _as_scalar(0.0, None, tensors, None)
    _unscale_pending(tensors)
    buffers = _plain_buffers(tensors, writeable=False)
    if buffers is None:
        if _interop.any_dtensor(tensors):
            return dtensor_norm(tensors, norm_type, error_if_nonfinite)
        tensors = _complex_views(tensors, norm_type)[0]
        buffers = _buffers(tensors, writeable=False)
    return _checked_norm(buffers, tensors, norm_type, error_if_nonfinite, _interop.is_torch(tensors[0]))[0]


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Multiply every gradient by ``min(max_norm / (total_norm + 1e-6), 1)``, in place:
    torch.nn.utils.clip_grads_with_norm_ on the compiled core, the second half of
    :func:`clip_grad_norm_` for a norm computed separately (by :func:`get_total_norm`, or
    combined across pipeline stages). ``total_norm`` is a number, a NumPy scalar or a 0-dim
    tensor; for CUDA gradients a CUDA ``total_norm`` is read on the device (no host
    synchronization). ``foreach`` is accepted for torch compatibility.
    """
    max_norm = float(max_norm)
    parameters = [parameters] if _interop.is_parameter(parameters) else list(parameters)
    grads, _ = _grads(parameters)
    if not grads:
        return
    _check_total_norm(total_norm)
    with _eager_write(grads):
        buffers = _plain_buffers(grads, writeable=True)
        if buffers is None:
            if _interop.any_dtensor(grads):
                _interop.torch_module().nn.utils.clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
                return
            buffers = _real_view_buffers(grads)
        if _interop.is_cuda(grads[0]):  # a complex gradient's real view is on its device
            torch = _interop.torch_module()
            # The core reads a float64 on the gradients' device; a conversion or copy is stream-ordered.
            if isinstance(total_norm, torch.Tensor):
                total = total_norm.to(device=grads[0].device, dtype=torch.float64)
            else:
                total = torch.tensor(_total_norm_value(total_norm), dtype=torch.float64, device=grads[0].device)
            buffers.clip_on_device(max_norm, total.data_ptr(), _stream(grads))
            return
        _scale_by_norm(buffers, max_norm, _total_norm_value(total_norm))


def _check_total_norm(total_norm):
    """A total norm is one real number (a Python number, a NumPy scalar or one-element array, a
    one-element tensor): anything else is refused before any gradient changes."""
    if isinstance(total_norm, (bool, str, bytes)) or not (
        isinstance(total_norm, (int, float, np.floating, np.integer))
        or ((_interop.is_torch(total_norm) or isinstance(total_norm, np.ndarray)) and _interop.numel(total_norm) == 1)
    ):
        raise TypeError(f"total_norm must be a number or a one-element tensor, got {total_norm!r}")


def _total_norm_value(total_norm):
    """The value of a checked total norm, as a Python float (reads a CUDA tensor's value)."""
    return float(total_norm.item() if hasattr(total_norm, "item") else total_norm)


def _checked_norm(buffers, grads, norm_type, error_if_nonfinite, torch_tensors):
    """The total norm as returned to the caller, and the one clipping scales by: for CUDA
    gradients the device float64 (the returned norm is it rounded to the gradients' dtype), on
    the CPU the returned norm's value (so the decision and the scale agree with what the caller
    sees). A non-finite norm with ``error_if_nonfinite`` raises before anything changes."""
    if _interop.is_cuda(grads[0]):
        total = _device_norm(buffers, grads, norm_type)
        if error_if_nonfinite and not bool(_interop.torch_module().isfinite(total)):
            raise _nonfinite_error(norm_type)
        return total.to(_interop.torch_dtype(buffers.result_dtype())), total
    result = _host_norm(buffers, grads, norm_type, torch_tensors)
    if error_if_nonfinite and not math.isfinite(float(result)):
        raise _nonfinite_error(norm_type)
    return result, float(result)


def _host_norm(buffers, grads, norm_type, torch_tensors):
    """The total norm of CPU gradients, returned as their library returns it (_as_scalar)."""
    if not norm_type > 0:
        total = float(_norm_in_python(grads, norm_type))
    elif torch_tensors:
        total = _torch_cpu_norm(buffers, grads, norm_type)
    else:
        total = buffers.norm(norm_type)
    return _as_scalar(total, buffers, grads, torch_tensors)


def _scale_by_norm(buffers, max_norm, total):
    """Multiply CPU gradients by min(max_norm / (total + 1e-6), 1)."""
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # NaN scales too, making every gradient NaN as in torch
        buffers.scale(coef)


def dtensor_norm(grads, norm_type, error_if_nonfinite):
    """The total norm of gradients that include DTensors (NOTE: [DTensor parameters] in
    genesis/_interop.py), as torch.nn.utils.get_total_norm computes it: a shard's norm is not
    the tensor's, and DTensor's own operations combine the shards' norms over the device mesh
    by their placements. Returned as torch returns it (a DTensor for DTensor gradients)."""
    return _interop.torch_module().nn.utils.get_total_norm(grads, norm_type, error_if_nonfinite)


def _unscale_pending(grads):
    """A genesis optimizer's GradScaler.unscale_ is lazy (NOTE: [deferred clip]); a norm of its
    gradients needs them unscaled first, as torch's unscale_ leaves them."""
    from ...optim import _clip

    if _clip._LAZY:
        _clip.materialize_unscale(grads)


def _eager_write(grads):
    """The context of an in-place clip of ``grads`` (genesis/optim/_clip.py eager_write):
    unscaled first, and a pending inf check of their optimizer kept current."""
    from ...optim import _clip

    return _clip.eager_write(grads)


def _nonfinite_error(norm_type):
    return RuntimeError(
        f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
        "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
        "norm anyway, set `error_if_nonfinite=False`"
    )


def _stream(grads):
    torch = _interop.torch_module()
    return torch.cuda.current_stream(grads[0].device).cuda_stream


def _device_norm(buffers, grads, norm_type):
    """The total norm of CUDA gradients as a device float64, reduced on the device so that
    nothing waits for the GPU. (Unlike the CPU path, clip_grad_norm_'s coefficient uses this
    float64 norm, not the norm rounded to the gradients' dtype: a difference of one rounding;
    and a total that overflows only inside torch's float32 sums, NOTE: [torch norm overflow],
    stays finite here, as finding it would cost a host sync.)"""
    torch = _interop.torch_module()
    if not norm_type > 0:
        return _norm_in_python(grads, norm_type)
    total = torch.empty((), dtype=torch.float64, device=grads[0].device)
    # Scratch from torch's caching allocator: stream-ordered, reused, never a device-wide sync.
    scratch = torch.empty(buffers.scratch_size(), dtype=torch.float64, device=grads[0].device)
    buffers.norm_on_device(norm_type, total.data_ptr(), scratch.data_ptr(), _stream(grads))
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place.

    As in torch, the bounds apply in the order ``min(max(x, -clip_value), clip_value)``: a
    negative ``clip_value`` sets every element to ``clip_value``, a NaN one every element to
    NaN, and NaN elements stay NaN. ``foreach`` is accepted for torch compatibility.
    """
    clip_value = float(clip_value)
    grads, _ = _grads(parameters)
    if not grads:
        return
    buffers = _plain_buffers(grads, writeable=True)  # pinned: an unscale in _eager_write is in place
    if buffers is None:
        check_clampable(grads)
    with _eager_write(grads):
        if buffers is None:
            buffers = _buffers(grads)
        if clip_value >= 0 and math.copysign(1.0, clip_value) > 0:
            buffers.clamp(clip_value, _stream(grads) if _interop.is_cuda(grads[0]) else 0)
            return
        # A negative, -0.0 or NaN bound (the core clamps the other way round): rare, done here.
        for g in grads:
            if _interop.is_torch(g):
                g.clamp_(min=-clip_value, max=clip_value)
            else:
                np.minimum(np.maximum(g, -clip_value, out=g), clip_value, out=g)
