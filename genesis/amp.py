"""genesis.amp: loss scaling for mixed-precision training (docs/mixed-precision.md).

``GradScaler`` has torch.amp.GradScaler's interface and scale-update rule. With a genesis
optimizer it does not unscale the gradients in a pass of its own: ``step()`` checks them for
inf/NaN in one read-only pass and hands the scale to the optimizer, whose fused update multiplies
each gradient by 1/scale as it loads it (or, if a gradient was not finite, changes nothing at
all). Any other optimizer (a torch one, say) gets torch's treatment: unscale in place, then step
unless a gradient was not finite.
"""

import warnings
from collections import defaultdict
from enum import Enum
from itertools import chain

import numpy as np

from . import _interop
from .nn.utils.clip_grad import _buffers, _grads
from .optim import _clip
from .optim.optimizer import Optimizer

__all__ = ["GradScaler", "OptState"]


class OptState(Enum):
    """Where an optimizer is in the current iteration: nothing done yet, its gradients unscaled
    by ``unscale_``, or stepped."""

    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _agreed(found, grads):
    """Whether any rank found inf/NaN, where the gradients include DTensors (FSDP2, tensor
    parallelism): each rank checked only its shards, and every rank holding a shard must skip
    the same steps (NOTE: [DTensor parameters] in genesis/_interop.py). A MAX all-reduce of the
    flag over each device mesh of those gradients, dimension by dimension; anything else as is."""
    if not _interop.any_dtensor(grads):
        return found
    torch = _interop.torch_module()
    flag = torch.tensor(1.0 if found else 0.0)
    meshes = {}
    for g in grads:
        if _interop.is_dtensor(g):
            meshes.setdefault(id(g.device_mesh), g.device_mesh)
    for mesh in meshes.values():
        for dim in range(mesh.ndim):
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=mesh.get_group(dim))
    return bool(flag.item())


def _fresh_optimizer_state():
    return {"stage": OptState.READY, "found_inf": None}


def _names_cuda(device):
    """Whether GradScaler's ``device`` argument makes torch check for CUDA: the string "cuda"
    exactly (torch compares the argument with "cuda"; a torch.device, even of type cuda, is not
    equal to it). Anything but None, a string or a torch.device is refused: a number there is
    most likely an init_scale passed first, as genesis's GradScaler took it before it took
    torch's signature."""
    if device is None:
        return False
    if isinstance(device, str):
        return device == "cuda"
    torch = _interop.torch_module()
    if torch is not None and isinstance(device, torch.device):
        return False
    raise TypeError(
        f"GradScaler's device must be a device name such as 'cuda' or 'cpu' (torch.amp.GradScaler's "
        f"first argument), got {device!r}; pass init_scale by keyword"
    )


def _cuda_available():
    """A CUDA device for torch tensors, or for genesis's own CUDA build (CuPy arrays)."""
    torch = _interop.torch_module()
    if torch is not None and torch.cuda.is_available():
        return True
    from . import _C

    return _C.cuda_built() and _C.cuda_device_count() > 0


def _float32(value):
    """``value`` rounded to float32, as a Python float (torch keeps the scale in a float32
    tensor, so every value of the scale, and 1/scale, is a float32)."""
    return float(np.float32(value))


class GradScaler:
    """Scales the loss so that small low-precision gradients do not underflow, and unscales the
    gradients before the update.

    Typical use::

        scaler = genesis.amp.GradScaler()
        for data, target in loader:
            optimizer.zero_grad()
            with genesis.autocast():
                loss = criterion(model(data), target)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)          # only if the gradients are needed unscaled,
            clip_grad_norm_(params, max_norm)   # e.g. for clipping
            scaler.step(optimizer)
            scaler.update()

    The scale starts at ``init_scale``. ``update()`` multiplies it by ``backoff_factor`` after an
    iteration in which some gradient was inf or NaN (that iteration's steps are skipped), and by
    ``growth_factor`` after ``growth_interval`` consecutive iterations without one.
    ``enabled=False`` turns every method into a pass-through: ``scale`` returns the loss
    unchanged and ``step`` just calls ``optimizer.step()``.

    ``device`` is torch.amp.GradScaler's first argument, so that ``GradScaler("cuda", ...)``
    carries over from torch unchanged. genesis keeps the scale on the host and multiplies each
    loss on its own device, so the argument only decides what torch decides with it: a scaler
    for ``"cuda"`` on a machine without CUDA warns and disables itself, as torch's does. The
    default, ``None``, names no device (torch's default is ``"cuda"``, which disables its scaler
    on a CPU-only machine; genesis's default scaler stays enabled there).
    """

    def __init__(
        self, device=None, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True
    ):
        if _names_cuda(device) and enabled and not _cuda_available():  # the device is checked first
            warnings.warn("torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.", stacklevel=2)
            enabled = False
        self._device = device
        self._enabled = enabled
        if enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
            self._init_scale = init_scale
            self._scale = None  # set by the first scale(), as torch does
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker = None
            self._per_optimizer_states = defaultdict(_fresh_optimizer_state)

    # ----------------------------------------------------------------------------- scaling
    def scale(self, outputs):
        """Multiply a loss (or a list/tuple, possibly nested, of losses) by the current scale.

        A torch tensor is multiplied by a float32 scale tensor on its device (so the result
        has the dtype torch's GradScaler gives); anything else (a NumPy array, a float) by the
        scale as a Python float."""
        if not self._enabled:
            return outputs
        if self._scale is None:
            self._scale = _float32(self._init_scale)
            self._growth_tracker = self._init_growth_tracker
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(v) for v in outputs)
        if _interop.is_torch(outputs):
            torch = _interop.torch_module()
            return outputs * torch.tensor(self._scale, dtype=torch.float32, device=outputs.device)
        return outputs * self._scale

    def _check_started(self, funcname):
        if self._scale is None:
            raise AssertionError(
                f"Attempted {funcname} but _scale is None.  This may indicate "
                "your script did not use scaler.scale(loss or outputs) earlier "
                "in the iteration."
            )

    @staticmethod
    def _optimizer_grads(optimizer):
        grads, _ = _grads(chain.from_iterable(g["params"] for g in optimizer.param_groups))
        if any(_interop.is_cuda(g) for g in grads):
            # The scale lives on the host here; CUDA needs it on the device to avoid a sync.
            raise ValueError(
                "genesis.amp.GradScaler handles CPU parameters; for CUDA parameters "
                "use torch.amp.GradScaler('cuda'), which drives genesis optimizers "
                "with the unscale and the inf check on the device"
            )
        # A sparse gradient (nn.Embedding(sparse=True)) is checked and unscaled through its
        # values: both are element-wise, and writing them in place changes the gradient itself.
        return [g._values() if _interop.is_torch(g) and g.is_sparse else g for g in grads]

    def unscale_(self, optimizer):
        """Divide the optimizer's gradients by the scale, in place, and record whether any of
        them is inf or NaN (one pass over the gradients).

        For a genesis rule optimizer (SGD, Adam, ...) it is lazy: nothing is written, ``p.grad``
        keeps the scaled values; ``optimizer.clip_grad_norm_`` then reads the gradients times
        1/scale (the inf check rides on its norm) and the step multiplies by 1/scale as it
        loads them. ``genesis.nn.utils.clip_grad_norm_``/``clip_grad_value_`` unscale such
        gradients in place first, so the torch-style sequence keeps working; other code that
        reads or edits ``p.grad`` in between sees scaled values (an in-place edit of torch
        gradients makes ``step()`` raise instead of using them: NOTE: [deferred clip]).

        Call it at most once per optimizer per iteration, after backward and before ``step``,
        when the gradients are needed unscaled (for ``clip_grad_norm_``, say); ``step`` then
        updates with them as they are. As in torch, a non-genesis optimizer may not have float16
        gradients here; genesis optimizers accept them."""
        if not self._enabled:
            return
        self._check_started("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        grads = self._optimizer_grads(optimizer)
        if not isinstance(optimizer, Optimizer) and any(_interop.dtype_code(g) == _interop.FLOAT16 for g in grads):
            raise ValueError("Attempting to unscale FP16 gradients.")
        # 1/scale rounded to float32, as torch computes it.
        inv_scale = _float32(1.0 / self._scale)
        if _clip.supports_lazy_unscale(optimizer):
            # Lazy (NOTE: [deferred clip]): the gradients stay scaled; optimizer.clip_grad_norm_
            # reads them times 1/scale (the inf check comes with its norm), genesis.nn.utils'
            # clip functions unscale them in place first, and step() multiplies as it loads.
            _clip.lazy_unscale(optimizer, inv_scale)
            state["found_inf"] = None
            state["lazy"] = True
        elif grads:
            state["found_inf"] = _agreed(_buffers(grads).unscale(inv_scale), grads)
        else:  # no gradient: nothing to unscale, no inf check recorded (as torch; step refuses)
            state["found_inf"] = None
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Update with the unscaled gradients, unless one of them is inf or NaN; return what
        ``optimizer.step(*args, **kwargs)`` returns (``None`` when the step is skipped).

        For a genesis optimizer that ``unscale_`` has not visited, the gradients are only
        checked here (read-only); the optimizer's fused update divides them by the scale.
        Closures are not supported while scaling is enabled (as in torch)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_started("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if not any(p.grad is not None for group in optimizer.param_groups for p in group["params"]):
            # As torch's: an optimizer without a single gradient has no inf check to step on
            # (its scaler records one per device that holds a gradient). Stops at the first one.
            raise AssertionError("No inf checks were recorded for this optimizer.")
        if isinstance(optimizer, Optimizer):
            retval = self._fused_step(optimizer, state, args, kwargs)
        else:
            if state["stage"] is OptState.READY:
                self.unscale_(optimizer)
            retval = None if state["found_inf"] else optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def _fused_step(self, optimizer, state, args, kwargs):
        """A genesis optimizer's step through the GradScaler protocol (``grad_scale`` and
        ``found_inf`` attributes, read by ``Optimizer.step``): the check here, the unscale and
        the skip inside the core's update."""
        lazy, found = True, None
        if state["stage"] is OptState.UNSCALED and not state.get("lazy"):
            lazy, found = False, state["found_inf"]  # unscale_ divided them in place
        elif state["stage"] is OptState.UNSCALED:
            lazy, found = _clip.scaler_inputs(optimizer)
            if not lazy:  # unscale_ divided the gradients in place (and checked them)
                found = state["found_inf"] if found is None else found
        if found is None:
            # Nothing has read the gradients yet: one read-only check pass. An update cannot
            # find its own inf and undo what it already wrote (the gradients are split across
            # threads, an inf in one share is seen after the others have committed), so without
            # a clip the check is its own pass: 4 bytes per float32 gradient against the
            # update's 28 (docs/mixed-precision.md#fused-clipping).
            grads = self._optimizer_grads(optimizer)
            found = bool(grads) and _agreed(_buffers(grads, writeable=False).has_nonfinite(), grads)
        state["found_inf"] = bool(found)
        optimizer.grad_scale = self._scale if lazy else None
        optimizer.found_inf = 1.0 if state["found_inf"] else 0.0
        try:
            return optimizer.step(*args, **kwargs)
        finally:
            del optimizer.grad_scale, optimizer.found_inf

    def update(self, new_scale=None):
        """Update the scale at the end of an iteration (after every optimizer's ``step``):
        times ``backoff_factor`` if any step of the iteration found an inf/NaN gradient; else
        count the iteration, and after ``growth_interval`` in a row times ``growth_factor``
        (only if the result is finite). ``new_scale`` (a number or a one-element array) sets
        the scale instead."""
        if not self._enabled:
            return
        self._check_started("update")
        if new_scale is not None:
            if not isinstance(new_scale, (int, float)):
                if getattr(new_scale, "requires_grad", False) or int(np.prod(new_scale.shape)) != 1:
                    raise AssertionError(
                        "new_scale should be a float or a 1-element torch.FloatTensor with requires_grad=False."
                    )
                new_scale = new_scale.item()
            self._scale = _float32(new_scale)
        else:
            found = [s["found_inf"] for s in self._per_optimizer_states.values() if s["found_inf"] is not None]
            if not found:
                raise AssertionError("No inf checks were recorded prior to update.")
            self._update_scale(any(found))
        self._per_optimizer_states = defaultdict(_fresh_optimizer_state)

    def _update_scale(self, found_inf):
        """torch's _amp_update_scale_: the products are taken in double precision and rounded
        to float32, and a growth that would overflow float32 is not taken."""
        if found_inf:
            self._scale = _float32(self._scale * self._backoff_factor)
            self._growth_tracker = 0
            return
        self._growth_tracker += 1
        if self._growth_tracker == self._growth_interval:
            with np.errstate(over="ignore"):
                grown = np.float32(self._scale * self._growth_factor)
            if np.isfinite(grown):
                self._scale = float(grown)
            self._growth_tracker = 0

    # ------------------------------------------------------------------ settings and state
    def get_scale(self):
        """The current scale as a Python float (1.0 when disabled)."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else self._scale

    def get_growth_factor(self):
        """The factor the scale grows by after ``growth_interval`` clean iterations."""
        return self._growth_factor

    def set_growth_factor(self, new_factor):
        self._growth_factor = new_factor

    def get_backoff_factor(self):
        """The factor the scale shrinks by after an iteration with an inf/NaN gradient."""
        return self._backoff_factor

    def set_backoff_factor(self, new_factor):
        self._backoff_factor = new_factor

    def get_growth_interval(self):
        """How many consecutive clean iterations make the scale grow."""
        return self._growth_interval

    def set_growth_interval(self, new_interval):
        self._growth_interval = new_interval

    def _get_growth_tracker(self):
        """Clean iterations since the scale last changed (0 when disabled)."""
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else self._growth_tracker

    def is_enabled(self):
        return self._enabled

    def state_dict(self):
        """torch's layout: ``scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval``
        and ``_growth_tracker`` (an empty dict when disabled). Take it after ``update()``."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._get_growth_tracker(),
        }

    def load_state_dict(self, state_dict):
        """Load a state saved by ``state_dict()`` (genesis's or torch's GradScaler). A no-op
        when disabled; an empty dict (from a disabled scaler) raises ``RuntimeError``."""
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler."
            )
        self._init_scale = state_dict["scale"]
        if self._scale is not None:
            self._scale = _float32(state_dict["scale"])
        self._growth_factor = state_dict["growth_factor"]
        self._backoff_factor = state_dict["backoff_factor"]
        self._growth_interval = state_dict["growth_interval"]
        self._init_growth_tracker = state_dict["_growth_tracker"]
        if self._growth_tracker is not None:
            self._growth_tracker = state_dict["_growth_tracker"]
