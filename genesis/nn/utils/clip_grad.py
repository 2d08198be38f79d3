"""Gradient clipping over many tensors at once (SPEC section 5), on the compiled core."""

import math

import numpy as np

from ... import _C
from ... import _interop


def _grads(parameters):
    """The parameters' gradients (those that have one) and whether the parameters are torch
    tensors. A single parameter is accepted as well as an iterable."""
    if _interop.is_parameter(parameters):
        parameters = [parameters]
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    return grads, bool(parameters) and _interop.is_torch(parameters[0])


def _buffers(grads):
    """The core's view of the gradients: all on the CPU, or all on one GPU. The core checks
    them all in one pass; only when it refuses one does Python look again, to say precisely
    what is wrong."""
    cuda = _interop.is_cuda(grads[0])
    if cuda and any(g.device != grads[0].device for g in grads):
        raise ValueError("gradients are on several devices; clip each device's parameters "
                         "separately")
    try:
        return _C.BufferList(grads, cuda)
    except TypeError:
        for i, g in enumerate(grads):
            if not (_interop.is_torch(g) or isinstance(g, np.ndarray)):
                raise TypeError(f"gradient {i} is a {type(g).__name__}; expected a torch tensor "
                                "or a NumPy array") from None
            if _interop.device_of(g) != _interop.device_of(grads[0]):
                raise ValueError(f"gradient {i} is on {_interop.device_of(g)}, gradient 0 on "
                                 f"{_interop.device_of(grads[0])}") from None
            if _interop.dtype_code(g) not in _interop.SUPPORTED_CODES:
                raise TypeError(f"gradient {i} has dtype {g.dtype}; genesis supports float32, "
                                "float64, float16 and bfloat16") from None
            if not _interop.is_contiguous(g):
                raise ValueError(f"gradient {i} is not contiguous") from None
        raise


def _as_scalar(value, buffers, grads, torch_params):
    """The norm as the parameters' library returns it (SPEC section 5): for torch parameters a
    0-dim tensor of the dtype torch gives it, so float32 gradients get a float32 norm (inf if it
    overflows float32, as in torch); a NumPy float64 otherwise (the double-precision norm)."""
    if not torch_params:
        return np.float64(value)
    torch = _interop.torch_module()
    if not grads:
        return torch.tensor(value)
    return torch.tensor(value, dtype=_interop.torch_dtype(buffers.result_dtype()),
                        device=grads[0].device)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale all gradients together so that their joint norm is at most ``max_norm``.

    The norm is taken over all gradients as if they were concatenated into one vector (norm
    types 1, 2, any p > 0, and ``inf``). Gradients are multiplied by
    ``min(max_norm / (total + 1e-6), 1)``. Returns the total norm before clipping. ``foreach``
    is accepted for torch compatibility; genesis always processes all tensors in one call.
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be a positive number or inf, got {norm_type}")
    grads, torch_params = _grads(parameters)
    if not grads:
        return _as_scalar(0.0, None, grads, torch_params)
    buffers = _buffers(grads)
    if _interop.is_cuda(grads[0]):
        return _clip_on_device(buffers, grads, max_norm, norm_type, error_if_nonfinite)
    result = _as_scalar(buffers.norm(norm_type), buffers, grads, torch_params)
    # Clip by the norm as returned, so the decision and the scale agree with what the caller sees.
    total = float(result)
    if error_if_nonfinite and not math.isfinite(total):
        raise _nonfinite_error(norm_type)
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # NaN scales too, making every gradient NaN as in torch
        buffers.scale(coef)
    return result


def _nonfinite_error(norm_type):
    return RuntimeError(
        f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
        "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
        "norm anyway, set `error_if_nonfinite=False`")


def _stream(grads):
    torch = _interop.torch_module()
    return torch.cuda.current_stream(grads[0].device).cuda_stream


def _clip_on_device(buffers, grads, max_norm, norm_type, error_if_nonfinite):
    """clip_grad_norm_ for CUDA gradients: the norm is reduced into a device float64 and the
    clip coefficient is computed from it on the device, so nothing waits for the GPU unless
    error_if_nonfinite needs the value. (Unlike the CPU path, the coefficient uses the float64
    norm, not the norm rounded to the gradients' dtype: a difference of one rounding.)"""
    torch = _interop.torch_module()
    device, stream = grads[0].device, _stream(grads)
    total = torch.empty((), dtype=torch.float64, device=device)
    # Scratch from torch's caching allocator: stream-ordered, reused, never a device-wide sync.
    scratch = torch.empty(buffers.scratch_size(), dtype=torch.float64, device=device)
    buffers.norm_on_device(norm_type, total.data_ptr(), scratch.data_ptr(), stream)
    if error_if_nonfinite and not bool(torch.isfinite(total)):
        raise _nonfinite_error(norm_type)
    buffers.clip_on_device(max_norm, total.data_ptr(), stream)
    return total.to(_interop.torch_dtype(buffers.result_dtype()))


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place."""
    clip_value = float(clip_value)
    grads, _ = _grads(parameters)
    if grads:
        _buffers(grads).clamp(clip_value, _stream(grads) if _interop.is_cuda(grads[0]) else 0)
