"""genesis.nn.Parameter: a parameter for arrays that have no autograd of their own."""

import numpy as np


class Parameter:
    """Holds a parameter's values in ``.data`` and its gradient in ``.grad``.

    ``data`` is a NumPy array, or any array exporting ``__dlpack__`` on the CPU, which is
    wrapped as a NumPy view of the same memory (so the producer sees every update). The
    optimizer updates ``data`` in place; ``grad`` is ``None`` or an array of the same shape
    and dtype that the user (their own backward pass) fills in.
    """

    __slots__ = ("data", "grad", "__weakref__")

    def __init__(self, data, grad=None):
        if not isinstance(data, np.ndarray):
            if not hasattr(data, "__dlpack__"):
                raise TypeError(
                    f"genesis.nn.Parameter needs a NumPy array or a DLPack array, got {type(data).__name__}"
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
