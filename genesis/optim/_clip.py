"""Deferred (fused) gradient clipping of genesis optimizers: ``optimizer.clip_grad_norm_``,
``optimizer.clip_grad_value_`` and GradScaler's lazy ``unscale_``
(docs/mixed-precision.md#fused-clipping).

NOTE: [deferred clip] Written the torch way, a clipped mixed-precision step streams the gradients
four or five times (unscale: read and write; norm: read; clip: read and write; update: read).
Here it takes two: one read computes the norm of the unscaled gradients and the inf check
together (``BufferList.norm_scaled``), and the update multiplies each gradient by 1/scale and the
clip coefficient (and clamps it) in registers as it loads it (``load_grad`` in
include/genesis/update_element.h). What is pending between the clip and the step lives in a
``PendingClip`` on the optimizer:

- it applies only to the gradients it was computed from: each gradient object and its torch
  version counter (bumped by every in-place change: a backward that accumulates, an in-place
  clip) is recorded, and ``step()`` raises if they changed, instead of clipping other gradients
  by a stale coefficient;
- ``zero_grad()`` and ``step()`` (taken or skipped) discard it, so it never reaches a later step.
"""

import contextlib
import math
import weakref

import numpy as np

from .. import _C, _interop
from ..nn.utils import clip_grad as _cg

# Optimizers whose GradScaler unscale_ is pending (lazy): genesis.nn.utils' clip functions
# look here, and unscale such gradients in place first (see materialize_unscale).
_LAZY = weakref.WeakSet()
# Optimizers whose lazy unscale_ materialize_unscale made eager: all that is pending for them is
# its inf check, which genesis.nn.utils' own in-place clips keep current (see eager_write).
_UNSCALED = weakref.WeakSet()


class PendingClip:
    """What the next step applies to the gradients, and the gradients it was computed for."""

    __slots__ = ("inv_scale", "found_inf", "coef", "coef_on", "limit", "fingerprint", "__weakref__")

    def __init__(self):
        self.inv_scale = None  # float32 1/scale of a lazy GradScaler unscale_, or None
        self.found_inf = None  # the norm pass's inf/NaN check (None: not checked yet)
        self.coef = None  # clip_grad_norm_'s coefficient: float (CPU), device float64 (CUDA)
        self.coef_on = {}  # CUDA: the coefficient's copy on each device that needs one
        self.limit = None  # clip_grad_value_'s bound
        self.fingerprint = None

    def control(self, cuda_device):
        """The ``_C.StepControl`` keywords of the clip for a group on ``cuda_device`` (None: the
        CPU); the scale is handed over separately. A device coefficient is copied (device to
        device, no sync) to a group on another GPU; the copy lives as long as this object,
        which the optimizer keeps until its next step."""
        out = {}
        if self.coef is not None:
            if cuda_device is None:
                out["clip_coef"] = self.coef
            else:
                if cuda_device not in self.coef_on:
                    self.coef_on[cuda_device] = self.coef.to(cuda_device)
                out["clip_coef_ptr"] = self.coef_on[cuda_device].data_ptr()
        if self.limit is not None:
            out["clip_value"] = self.limit
        return out


def _params(optimizer):
    return [p for g in optimizer.param_groups for p in g["params"]]


def _fingerprint(optimizer):
    """The optimizer's gradients as they are now: each parameter's gradient object and its
    version counter (NOTE: [grad fingerprint] in csrc/python/bindings.cpp)."""
    return _C.GradFingerprint(optimizer.param_groups)


def _current(pending, optimizer):
    """Whether the gradients are still the ones the pending clip was computed for."""
    fp = pending.fingerprint
    return fp is None or fp.matches(optimizer.param_groups)


_CHANGED = (
    "the gradients changed after clip_grad_norm_/clip_grad_value_ or GradScaler.unscale_ "
    "(another backward, an in-place edit such as torch.nn.utils.clip_grad_norm_, or new "
    "gradient tensors): what is pending was computed for the old ones. Call "
    "optimizer.zero_grad() (which discards it), or clip again after the backward"
)


def _pending(optimizer, create=True):
    """The optimizer's pending clip. A clip computed for gradients that have changed since is
    dropped (a new clip replaces it); a lazy unscale_ of other gradients cannot be, as they may
    hold anything now: that raises."""
    pending = optimizer.__dict__.get("_pending_clip")
    if pending is not None and not _current(pending, optimizer):
        if pending.inv_scale is not None:
            raise RuntimeError(_CHANGED)
        pending = None
        discard(optimizer)
    if pending is None and create:
        pending = optimizer.__dict__["_pending_clip"] = PendingClip()
    return pending


def _fused(optimizer):
    """Whether every update of this optimizer runs through the fused core, which applies the
    deferred scale and clip as it loads the gradients. differentiable=True groups run torch's
    traceable update instead (_differentiable.py), so they keep the eager passes."""
    return getattr(optimizer, "_fused_grad_transform", False) and not any(
        g.get("differentiable") for g in optimizer.param_groups
    )


def _check_supported(optimizer, what):
    if not _fused(optimizer):
        raise TypeError(
            f"{type(optimizer).__name__} does not support the deferred {what} "
            f"(not a fused rule optimizer, or a group with differentiable=True); "
            f"use genesis.nn.utils.{what} on its parameters"
        )


def supports_lazy_unscale(optimizer):
    """Whether GradScaler may defer unscale_ into the step: a fused optimizer without DTensor
    parameters (their inf check must agree across ranks, and their norm comes from torch: both
    want the gradients unscaled in place, NOTE: [DTensor parameters])."""
    return _fused(optimizer) and not getattr(optimizer, "_has_dtensors", False)


def lazy_unscale(optimizer, inv_scale):
    """GradScaler.unscale_ for a genesis rule optimizer: nothing is written; the next
    clip_grad_norm_ of the optimizer takes the norm of the gradients times ``inv_scale`` (and
    finds inf/NaN on the way), and the step multiplies by it as it loads them."""
    pending = _pending(optimizer)
    pending.inv_scale = inv_scale
    pending.fingerprint = _fingerprint(optimizer)
    _LAZY.add(optimizer)


def scaler_inputs(optimizer):
    """For GradScaler.step after unscale_: (whether the gradients still need 1/scale inside the
    update, the inf/NaN flag, or None if nothing has checked the gradients yet)."""
    pending = optimizer.__dict__.get("_pending_clip")
    if pending is None:
        return True, None
    if not _current(pending, optimizer):
        raise RuntimeError(_CHANGED)
    return pending.inv_scale is not None, pending.found_inf


def materialize_unscale(grads):
    """Before genesis.nn.utils clips ``grads`` in place: unscale (in place, as torch's unscale_
    does) the gradients of every optimizer whose lazy unscale_ covers any of them, so the clip
    sees true gradients. The inf check comes with it and is kept for GradScaler.step."""
    ids = {id(g) for g in grads}
    for optimizer in list(_LAZY):
        pending = optimizer.__dict__.get("_pending_clip")
        if pending is None or pending.inv_scale is None:
            _LAZY.discard(optimizer)
            continue
        mine = [p.grad for p in _params(optimizer) if p.grad is not None]
        if not any(id(g) in ids for g in mine):
            continue
        found = bool(_cg._scaled_buffers(mine).unscale(pending.inv_scale))
        pending.inv_scale = None
        pending.found_inf = found if pending.found_inf is None else (found or pending.found_inf)
        pending.fingerprint = _fingerprint(optimizer)
        _LAZY.discard(optimizer)
        _UNSCALED.add(optimizer)


@contextlib.contextmanager
def eager_write(grads):
    """Around an in-place clip of ``grads`` by genesis.nn.utils: first unscale what a lazy
    unscale_ left scaled (materialize_unscale); then, after the write, keep current the pending
    inf checks of the optimizers whose gradients it rewrote. The write advances the gradients'
    version counters (NOTE: [version counters] in csrc/python/bindings.cpp), which the check
    would otherwise take for a change; like torch's unscale_, it holds through a clip after it.
    A pending deferred clip is not kept: its coefficient was computed for the gradients before
    this clip, so step() refuses it (as after torch's clip)."""
    if _LAZY:
        materialize_unscale(grads)
    keep = []
    if _UNSCALED:
        ids = {id(g) for g in grads}
        for optimizer in list(_UNSCALED):
            pending = optimizer.__dict__.get("_pending_clip")
            if (
                pending is None
                or pending.inv_scale is not None
                or pending.coef is not None
                or pending.limit is not None
            ):
                _UNSCALED.discard(optimizer)
                continue
            params = _params(optimizer)
            if _current(pending, optimizer) and any(id(p.grad) in ids for p in params if p.grad is not None):
                keep.append((pending, optimizer))
    yield
    for pending, optimizer in keep:
        pending.fingerprint = _fingerprint(optimizer)


def take(optimizer):
    """The pending clip for this step (None if there is none), removed from the optimizer.
    Raises, leaving it in place, if the gradients changed since it was computed."""
    pending = optimizer.__dict__.get("_pending_clip")
    if pending is None:
        return None
    if not _current(pending, optimizer):
        raise RuntimeError(_CHANGED)
    discard(optimizer)
    return pending


def discard(optimizer):
    optimizer.__dict__.pop("_pending_clip", None)
    _LAZY.discard(optimizer)
    _UNSCALED.discard(optimizer)


def _norm_pass(grads, buffers, norm_type, inv, torch_params):
    """(total norm of the gradients times ``inv``, any such value inf/NaN), the norm as
    genesis.nn.utils.clip_grad_norm_ takes it of gradients that unscale_ multiplied by ``inv``."""
    if norm_type > 0:
        flag = []

        def scaled(b):
            total, bad = b.norm_scaled(norm_type, inv)
            flag.append(bad)
            return total

        if torch_params:
            total = _cg._torch_cpu_norm(buffers, grads, norm_type, norm=scaled)
        else:
            total = scaled(buffers)
        return total, flag[0]
    # Norm types the core does not take (0, negative, -inf, NaN): on float32-rounded copies.
    scaled = [g * np.float32(inv) if isinstance(g, np.ndarray) else g * inv for g in grads]
    return float(_cg._norm_in_python(scaled, norm_type)), bool(_cg._buffers(scaled).has_nonfinite())


def clip_grad_norm(optimizer, max_norm, norm_type, error_if_nonfinite):
    _check_supported(optimizer, "clip_grad_norm_")
    max_norm, norm_type = float(max_norm), float(norm_type)
    params = _params(optimizer)
    pending = _pending(optimizer)
    if pending.coef is not None:
        raise RuntimeError(
            "clip_grad_norm_ was already called on this optimizer since its last "
            "step; deferred clips do not compose (clip once per step)"
        )
    if pending.limit is not None:
        raise RuntimeError(
            "clip_grad_norm_ after clip_grad_value_ is not supported by the "
            "deferred clip (the update clamps after scaling): call "
            "clip_grad_norm_ first"
        )
    grads, torch_params = _cg._grads(params)
    if not grads:
        return _cg._as_scalar(0.0, None, grads, torch_params)
    buffers = _cg._plain_buffers(grads, writeable=False)  # the step scales the gradients themselves
    if buffers is None:
        if _interop.any_dtensor(grads):  # never lazily unscaled (supports_lazy_unscale)
            total = _cg.dtensor_norm(grads, norm_type, error_if_nonfinite)
            coef = max_norm / (float(_interop.full_value(total)) + 1e-6)
            pending.coef = 1.0 if coef >= 1.0 else coef
            pending.fingerprint = _fingerprint(optimizer)
            return total
        grads = _cg._complex_views(grads, norm_type)[0]
        buffers = _cg._buffers(grads, writeable=False)
    inv = 1.0 if pending.inv_scale is None else pending.inv_scale
    if _interop.is_cuda(grads[0]):
        total = _clip_on_device(buffers, grads, max_norm, norm_type, error_if_nonfinite, pending)
    else:
        total, found = _norm_pass(grads, buffers, norm_type, inv, torch_params)
        result = _cg._as_scalar(total, buffers, grads, torch_params)
        total = float(result)  # clip by the norm as returned, as genesis.nn.utils does
        if error_if_nonfinite and not math.isfinite(total):
            raise _cg._nonfinite_error(norm_type)
        coef = max_norm / (total + 1e-6)
        pending.coef = 1.0 if coef >= 1.0 else coef  # NaN stays NaN, as in torch
        if pending.inv_scale is not None:
            pending.found_inf = found
        total = result
    pending.fingerprint = _fingerprint(optimizer)
    return total


def _clip_on_device(buffers, grads, max_norm, norm_type, error_if_nonfinite, pending):
    """CUDA: the norm into a device float64 and the coefficient computed from it there, as
    genesis.nn.utils does it, but kept for the update instead of applied: no host sync unless
    error_if_nonfinite asks for the value."""
    torch = _interop.torch_module()
    device = grads[0].device
    if norm_type > 0:
        total = torch.empty((), dtype=torch.float64, device=device)
        scratch = torch.empty(buffers.scratch_size(), dtype=torch.float64, device=device)
        buffers.norm_on_device(norm_type, total.data_ptr(), scratch.data_ptr(), _cg._stream(grads))
    else:
        total = _cg._norm_in_python(grads, norm_type)
    if error_if_nonfinite and not bool(torch.isfinite(total)):
        raise _cg._nonfinite_error(norm_type)
    # min(c, 1) with NaN kept (torch.clamp propagates NaN), as the eager kernel scales. A true
    # division of two tensors: torch computes `number / tensor` as a reciprocal times the
    # number, which rounds differently.
    pending.coef = torch.div(torch.full_like(total, max_norm), total + 1e-6).clamp(max=1.0)
    return total.to(_interop.torch_dtype(buffers.result_dtype()))


def clip_grad_value(optimizer, clip_value):
    _check_supported(optimizer, "clip_grad_value_")
    clip_value = float(clip_value)
    if not (clip_value >= 0 and math.copysign(1.0, clip_value) > 0):
        raise ValueError(
            f"the deferred clip_grad_value_ needs clip_value >= 0, got {clip_value}; "
            "use genesis.nn.utils.clip_grad_value_ for other bounds"
        )
    params = _params(optimizer)
    _cg.check_clampable(params)  # the update would clamp real and imaginary parts apart
    pending = _pending(optimizer)
    # Clamping twice is clamping once to the smaller bound.
    pending.limit = clip_value if pending.limit is None else min(pending.limit, clip_value)
    pending.fingerprint = _fingerprint(optimizer)
