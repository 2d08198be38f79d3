"""8-bit optimizer state on the Python side (docs/low-bit-state.md): which parameters get it,
its arrays, and the conversions of load_state_dict and float32_state_dict.

A state array ``name`` of a parameter with 8-bit state is two entries of its state dict: the
uint8 codes ``state[name]`` (the parameter's shape, as torch lays out state) and the float32
block scales ``state[name + "_absmax"]`` (one per block of ``BLOCK`` elements, 1-D). The maps
are the core's (include/genesis/quantized.h, NOTE: [8-bit state maps]): non-negative states
(``_C.<Options>.nonnegative_states()``) use the unsigned one.
"""

import numpy as np

from .. import _C, _cuda_array, _interop

BLOCK = _C.QUANT_BLOCK
DEFAULT_MIN_SIZE = _C.DEFAULT_MIN_8BIT_SIZE
FLOAT_PARAM_CODES = (_interop.FLOAT32, _interop.FLOAT16, _interop.BFLOAT16)


def absmax_name(name):
    return name + "_absmax"


def blocks(numel):
    return -(-numel // BLOCK)


def check_min_size(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"min_8bit_size must be a non-negative integer, got {value!r}")


def storage(group, code, arr, has_state):
    """The state code of a parameter of a group that asks for 8-bit state: UINT8, or FLOAT32
    for a tensor below the group's ``min_8bit_size`` (or a rule without state arrays). An empty
    tensor (an FSDP1 rank's empty shard) has nothing to quantize, and its codes and scales no
    memory for the core to point at: it keeps empty float32 state even with min_8bit_size=0."""
    if code not in FLOAT_PARAM_CODES:
        raise ValueError(f"state_dtype int8 is not supported for {_interop.CODE_NAMES[code]} parameters")
    numel = _interop.numel(arr)
    if not has_state or numel == 0 or numel < group.get("min_8bit_size", DEFAULT_MIN_SIZE):
        return _interop.FLOAT32
    return _interop.UINT8


def new_absmax(arr, values=None):
    """A 1-D float32 array of the block scales of `arr`'s state, in `arr`'s library and device
    (zeros, or `values`)."""
    n = blocks(_interop.numel(arr))
    if values is None:
        values = np.zeros(n, dtype=np.float32)
    if _interop.is_torch(arr):
        torch = _interop.torch_module()
        src = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
        return src.detach().to(device=arr.device, dtype=torch.float32, copy=True).reshape(n).contiguous()
    if _cuda_array.is_cuda_array(arr):  # CuPy and the like: on the parameter's device, as its codes are
        host = values if _cuda_array.is_cuda_array(values) else _host(values, np.float32)
        return _cuda_array.filled(arr, (n,), _interop.FLOAT32, host)
    return np.array(_host(values, np.float32).reshape(n), dtype=np.float32)


def filled(arr, value, unsigned):
    """(codes, absmax) of state holding `value` everywhere, in `arr`'s library, device, shape."""
    codes, absmax = _C.quantize(np.full(_interop.numel(arr), value, dtype=np.float32), unsigned)
    return _interop.copy_into_like(codes, arr, _interop.UINT8), new_absmax(arr, absmax)


def _host(value, dtype):
    """A flat host NumPy copy of a tensor or array, as `dtype`."""
    if _interop.is_torch(value):
        value = value.detach().cpu()
        value = value.float() if dtype == np.float32 else value
        value = value.numpy()
    return np.ascontiguousarray(np.asarray(value), dtype=dtype).reshape(-1)


def is_codes(value):
    if _interop.is_torch(value):
        return value.dtype == _interop.torch_module().uint8
    return isinstance(value, np.ndarray) and value.dtype == np.uint8


def quantize(value, unsigned):
    """(codes, absmax) of a float state array, as host NumPy arrays."""
    return _C.quantize(_host(value, np.float32), unsigned)


def dequantize(codes, absmax, unsigned):
    """The float32 values of 8-bit state, as a flat host NumPy array."""
    return _C.dequantize(_host(codes, np.uint8), _host(absmax, np.float32), unsigned)


def convert_entries(entries, names, quantized, unsigned_names, key):
    """A loaded parameter's state entries in the form the optimizer keeps: float state is
    quantized where the parameter has 8-bit state, and 8-bit state (codes plus scales) is
    dequantized where it has float state."""
    out = dict(entries)
    for name in names:
        value, scale = out.get(name), absmax_name(name)
        if out.get(scale) is not None and not hasattr(out[scale], "shape"):
            raise TypeError(
                f"state '{scale}' of parameter {key} must be an array of block scales, got {type(out[scale]).__name__}"
            )
        if value is None or not hasattr(value, "shape"):
            if out.get(scale) is not None:
                raise ValueError(f"state '{scale}' of parameter {key} holds block scales, but '{name}' holds no codes")
            continue
        if is_codes(value):
            if out.get(scale) is None:
                raise ValueError(
                    f"state '{name}' of parameter {key} holds 8-bit codes, but '{scale}' (its block scales) is missing"
                )
            if int(np.prod(out[scale].shape)) != blocks(int(np.prod(value.shape))):
                raise ValueError(
                    f"state '{scale}' of parameter {key} has {int(np.prod(out[scale].shape))} "
                    f"block scales; {int(np.prod(value.shape))} codes need "
                    f"{blocks(int(np.prod(value.shape)))}"
                )
            if not quantized:
                out[name] = dequantize(value, out.pop(scale), name in unsigned_names)
        elif quantized:
            out[name], out[scale] = quantize(value, name in unsigned_names)
    return out


def float32_entries(entries, names, unsigned_names, arr):
    """A parameter's state_dict entries with every 8-bit state array as float32 (the
    library, device and shape of the parameter's array `arr`; complex for a complex torch
    parameter, torch's layout) and without the block scales."""
    out = dict(entries)
    core = _interop.core_view(arr)
    for name in names:
        value, scale = out.get(name), out.get(absmax_name(name))
        if value is not None and scale is not None and is_codes(value):
            values = dequantize(value, out.pop(absmax_name(name)), name in unsigned_names)
            out[name] = _interop.copy_into_like(values, core, _interop.FLOAT32)
            if core is not arr and _interop.is_torch(arr) and arr.is_complex():
                out[name] = _interop.torch_module().view_as_complex(out[name])
    return out
