"""genesis.nn.Parameter: a parameter for arrays that have no autograd of their own."""

import numpy as np

from .. import _cuda_array

_DLPACK_CPU = 1  # DLDeviceType kDLCPU


def _dlpack_device_type(data):
    try:
        return data.__dlpack_device__()[0]
    except Exception:
        return None  # no way to ask: np.from_dlpack decides


class Parameter:
    """Holds a parameter's values in ``.data`` and its gradient in ``.grad``.

    ``data`` is a NumPy array, any array exporting ``__dlpack__`` on the CPU, which is wrapped
    as a NumPy view of the same memory (so the producer sees every update), or a CUDA array
    exposing ``__cuda_array_interface__`` (CuPy), kept as it is and updated on its device by the
    CUDA backend (docs/semantics.md#cuda-arrays). The
    optimizer updates ``data`` in place; ``grad`` is ``None`` or an array of the same shape
    and dtype that the user (their own backward pass) fills in.
    """

    __slots__ = ("data", "grad", "__weakref__")

    def __init__(self, data, grad=None):
        if not isinstance(data, np.ndarray) and not _cuda_array.is_cuda_array(data):
            if not hasattr(data, "__dlpack__"):
                raise TypeError(
                    f"genesis.nn.Parameter needs a NumPy array, a CUDA array or a DLPack array, got {type(data).__name__}"
                )
            if _dlpack_device_type(data) not in (None, _DLPACK_CPU):
                raise TypeError(
                    f"genesis.nn.Parameter: this {type(data).__name__} is not in CPU memory and has no "
                    "__cuda_array_interface__; genesis reads CUDA arrays through that interface (CuPy, Numba)"
                )
            data = np.from_dlpack(data)
        self.data = data
        self.grad = grad

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def numel(self):
        return self.data.size

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"
