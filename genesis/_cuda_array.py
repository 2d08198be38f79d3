"""CUDA arrays of other libraries (CuPy, Numba, ...): read through ``__cuda_array_interface__``
(versions 2 and 3; docs/semantics.md#cuda-arrays), so that none of them is a dependency of genesis.

A ``genesis.nn.Parameter`` whose ``.data`` exposes the interface is updated in place on its
device, by the CUDA backend, on the stream the interface names (CuPy's current stream when the
array is looked at); its gradient must be such an array too, of the same shape, dtype and device,
on the same stream. This module parses and validates the interface with named errors; the
compiled core reads the same dictionary on every step (csrc/python/bindings.cpp, NOTE: [CUDA
array interface]) and sends anything unexpected back here.
"""

import sys
from typing import NamedTuple

import numpy as np

INTERFACE = "__cuda_array_interface__"

# typestr (NumPy's array interface: byte order, kind, item size) -> the core's dtype code
# (include/genesis/dtype.h). '|' (not applicable) is how one-byte types are written.
_NATIVE = "<" if sys.byteorder == "little" else ">"
_CODES = {"f4": 0, "f8": 1, "f2": 2, "u1": 4}
_ITEMSIZE = {0: 4, 1: 8, 2: 2, 4: 1}
_NUMPY = {0: np.float32, 1: np.float64, 2: np.float16, 4: np.uint8}
_REQUIRED = ("shape", "typestr", "data", "version")


class Interface(NamedTuple):
    """What genesis needs of an array's interface, validated."""

    ptr: int
    readonly: bool
    shape: tuple
    typestr: str
    code: object  # the core's dtype code, or None for a dtype genesis does not handle
    contiguous: bool
    stream: object  # None (no synchronization needed), or the cudaStream_t as an integer


def is_cuda_array(x):
    """An array exposing __cuda_array_interface__ (torch tensors are handled as torch's)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return False
    return not isinstance(x, np.ndarray) and (hasattr(type(x), INTERFACE) or INTERFACE in getattr(x, "__dict__", ()))


def interface(arr, where="the array"):
    """The validated interface of `arr`; TypeError/ValueError naming `where` and the problem."""
    try:
        iface = getattr(arr, INTERFACE)
    except Exception as e:  # a producer may refuse to export (CuPy raises for some arrays)
        raise TypeError(f"{where}: reading its __cuda_array_interface__ failed ({e})") from e
    if not isinstance(iface, dict):
        raise TypeError(f"{where}: __cuda_array_interface__ is a {type(iface).__name__}, not a dict")
    missing = [k for k in _REQUIRED if k not in iface]
    if missing:
        raise TypeError(f"{where}: __cuda_array_interface__ lacks {', '.join(repr(k) for k in missing)}")
    version = iface["version"]
    if not isinstance(version, int) or version < 2:
        raise TypeError(
            f"{where}: __cuda_array_interface__ version {version!r} is not supported (genesis reads versions 2 and 3)"
        )
    data = iface["data"]
    if not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], int)):
        raise TypeError(f"{where}: __cuda_array_interface__ 'data' must be (pointer, read-only flag), got {data!r}")
    shape = iface["shape"]
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise TypeError(f"{where}: __cuda_array_interface__ 'shape' must be a tuple of sizes, got {shape!r}")
    typestr = iface["typestr"]
    if not (isinstance(typestr, str) and len(typestr) >= 3):
        raise TypeError(f"{where}: __cuda_array_interface__ 'typestr' must be a string such as '<f4', got {typestr!r}")
    if typestr[0] not in (_NATIVE, "|"):
        raise ValueError(f"{where} has non-native byte order ({typestr}); genesis reads native numbers only")
    code = _CODES.get(typestr[1:])
    if iface.get("mask") is not None:
        raise ValueError(f"{where} is a masked array (__cuda_array_interface__ 'mask'); genesis updates every element")
    contiguous = _contiguous(shape, iface.get("strides"), _ITEMSIZE.get(code), where)
    stream = iface.get("stream")
    if stream is not None and (isinstance(stream, bool) or not isinstance(stream, int)):
        raise TypeError(f"{where}: __cuda_array_interface__ 'stream' must be an integer or None, got {stream!r}")
    if stream == 0:  # version 3 forbids it: ambiguous between the legacy and per-thread streams
        raise ValueError(f"{where}: __cuda_array_interface__ 'stream' is 0, which the protocol disallows")
    return Interface(data[0], bool(data[1]), shape, typestr, code, contiguous, stream)


def _contiguous(shape, strides, itemsize, where):
    if strides is None:
        return True
    if not (isinstance(strides, tuple) and len(strides) == len(shape) and all(isinstance(s, int) for s in strides)):
        raise TypeError(f"{where}: __cuda_array_interface__ 'strides' must be None or one integer per dimension")
    if itemsize is None or 0 in shape:
        return True
    expected = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expected:  # a dimension of extent 1 may have any stride (NumPy's rule)
            return False
        expected *= n
    return True


def numel(iface):
    n = 1
    for d in iface.shape:
        n *= d
    return n


def device_of(arr):
    """ "cuda:N" from the array's device (CuPy: ``.device.id``); "cuda" when the producer does
    not say (the kernels take the device from the pointer)."""
    device = getattr(arr, "device", None)
    ordinal = getattr(device, "id", None)
    return f"cuda:{ordinal}" if isinstance(ordinal, int) else "cuda"


def numpy_dtype(code):
    return np.dtype(_NUMPY[code])


def namespace(arr):
    """The array's own library (CuPy: ``cupy``), to create state arrays of the same kind: the
    package the array's type comes from when it has ``zeros``, else the array API namespace."""
    module = sys.modules.get(type(arr).__module__.partition(".")[0])
    if module is not None and hasattr(module, "zeros"):
        return module
    if hasattr(arr, "__array_namespace__"):
        return arr.__array_namespace__()
    raise TypeError(f"cannot create state arrays like a {type(arr).__name__} (no zeros() in its library)")


class _OnDevice:
    """Makes the array's device current while its library allocates (CuPy allocates on the
    current device; its Device objects are context managers)."""

    def __init__(self, arr):
        device = getattr(arr, "device", None)
        self.device = device if hasattr(device, "__enter__") else None

    def __enter__(self):
        if self.device is not None:
            self.device.__enter__()

    def __exit__(self, *exc):
        if self.device is not None:
            return self.device.__exit__(*exc)
        return False


def zeros(arr, shape, code):
    """A zero-filled contiguous array of `arr`'s library and device."""
    with _OnDevice(arr):
        return namespace(arr).zeros(tuple(shape), dtype=numpy_dtype(code))


def filled(arr, shape, code, value):
    """A new contiguous array of `arr`'s library and device holding `value` (a NumPy array, an
    array of that library, or a number), cast to dtype `code` and reshaped to `shape`."""
    xp = namespace(arr)
    with _OnDevice(arr):
        out = xp.zeros(tuple(shape), dtype=numpy_dtype(code))
        out[...] = xp.asarray(value).astype(numpy_dtype(code)).reshape(tuple(shape))
        return out
