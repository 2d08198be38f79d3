"""Muon's Newton-Schulz orthogonalization, in the parameter's own array library.

torch tensors (CPU or CUDA) go through exactly torch.optim.Muon's sequence of torch operations
(torch 2.13: the input cast to bfloat16, transposed when it has more rows than columns,
divided by its Frobenius norm clamped to eps, then ``ns_steps`` quintic iterations of two
``addmm`` each), so the result is torch's to the bit. NumPy has no bfloat16: its arrays run
the same sequence in float32 with every result rounded to bfloat16 (round to nearest even), as
torch's bfloat16 kernels round their float32 accumulations; the matrix products' summation
order is NumPy's, so a last bfloat16 bit may differ from torch's. ``dtype`` other than
bfloat16 (Muon's genesis-only ``ns_dtype``) runs the iteration in that dtype instead.
"""

import numpy as np

from .. import _interop


def orthogonalize(update, coefficients, steps, eps, dtype):
    """The orthogonalized update (bfloat16 for the default ``dtype``, a torch tensor or a
    NumPy array like ``update``); ``update`` may be overwritten."""
    if _interop.is_torch(update):
        return _torch_iteration(update, coefficients, steps, eps, _interop.torch_dtype(dtype))
    if dtype == _interop.BFLOAT16:
        return _iterate(update.astype(np.float32), coefficients, steps, eps, _round_bfloat16)
    return _iterate(update.astype(_NUMPY_DTYPES[dtype], copy=False), coefficients, steps, eps, None)


_NUMPY_DTYPES = {_interop.FLOAT32: np.float32, _interop.FLOAT64: np.float64, _interop.FLOAT16: np.float16}


def _torch_iteration(update, coefficients, steps, eps, dtype):
    torch = _interop.torch_module()
    a, b, c = coefficients
    x = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    # Spectral norm at most 1: divide by the Frobenius norm (an upper bound of it).
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def _round_bfloat16(x):
    """float32 array -> the nearest bfloat16 values (ties to even; NaN stays NaN), in float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    out = rounded.view(np.float32)
    return np.where(np.isnan(x), x, out).astype(np.float32, copy=False)


def _iterate(x, coefficients, steps, eps, rnd):
    """The iteration on NumPy arrays; `rnd` rounds each result to the working precision
    (bfloat16 emulation), or None when the dtype itself is the working precision."""
    r = rnd or (lambda v: v)
    a, b, c = (x.dtype.type(k) for k in coefficients)
    x = r(x)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    norm = r(np.asarray(np.sqrt(np.sum(np.square(x, dtype=x.dtype), dtype=x.dtype)), dtype=x.dtype))
    x = r(x / max(norm, r(np.asarray(eps, dtype=x.dtype))))
    for _ in range(steps):
        gram = r(np.matmul(x, x.T))
        poly = r(b * gram + c * np.matmul(gram, gram))
        x = r(a * x + np.matmul(poly, x))
    return np.ascontiguousarray(x.T if tall else x)
