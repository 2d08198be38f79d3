"""genesis.autocast: run a region of torch code in low precision (docs/mixed-precision.md).

A thin switch over ``torch.autocast``, governed by the module flag ``genesis.enable_autocast``.
"""

import functools

import genesis

from . import _interop

__all__ = ["autocast"]

# torch.autocast's default low-precision dtype for each device genesis picks by itself.
_DEFAULT_DTYPES = {"cuda": "float16", "cpu": "bfloat16"}


class autocast:
    """Context manager (and decorator) for mixed-precision regions.

    ``enabled=None`` (the default) follows ``genesis.enable_autocast``, read when the region is
    entered: while the flag is False such a region does nothing at all, so a model that never
    asked for mixed precision runs exactly as written. ``enabled=True`` enters
    ``torch.autocast`` whatever the flag says, and ``enabled=False`` enters a disabled
    ``torch.autocast``, which turns off an enclosing autocast region as in torch.

    ``device_type`` defaults to ``"cuda"`` when CUDA is available, else ``"cpu"``; ``dtype`` (a
    torch dtype or its name) defaults to float16 on CUDA and bfloat16 on the CPU. Regions nest
    and the same object may be entered again while active. torch is only looked at when the
    region is entered: if the program has not imported torch, it has no torch tensors to cast
    and the region does nothing.
    """

    def __init__(self, enabled=None, dtype=None, device_type=None):
        self.enabled = enabled
        self.dtype = dtype
        self.device_type = device_type
        self._active = []  # the torch.autocast entered by each pending __enter__ (None: no-op)

    def _torch_context(self):
        enabled = genesis.enable_autocast if self.enabled is None else bool(self.enabled)
        torch = _interop.torch_module()
        if torch is None or (self.enabled is None and not enabled):
            return None
        device_type = self.device_type or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.dtype or _DEFAULT_DTYPES.get(device_type)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        return torch.autocast(device_type, dtype=dtype, enabled=enabled)

    def __enter__(self):
        context = self._torch_context()
        if context is not None:
            context.__enter__()
        self._active.append(context)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        context = self._active.pop()
        if context is not None:
            return context.__exit__(exc_type, exc_value, traceback)
        return False

    def __call__(self, func):
        """Use as a decorator: every call of ``func`` runs inside a fresh region with these
        settings."""

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with autocast(self.enabled, self.dtype, self.device_type):
                return func(*args, **kwargs)

        return wrapper

    def __repr__(self):
        return f"genesis.autocast(enabled={self.enabled!r}, dtype={self.dtype!r}, device_type={self.device_type!r})"
