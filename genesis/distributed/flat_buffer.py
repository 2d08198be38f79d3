"""Contiguous parameter and gradient buffers: the parameters of one dtype and device become
views of one flat data buffer, their gradients views of one flat gradient buffer. Backward then
accumulates straight into the gradient buffer (autograd adds into an existing ``.grad`` in
place), and an optimizer given the flat buffer updates every parameter in one core call with no
per-tensor work."""

import torch

from .. import _interop
from . import layout as _layout


def check_params(params, where="parameters"):
    """The tensors a flat buffer can take over: distinct torch leaf tensors of a floating or
    complex dtype (a complex one is updated as its real view, as by the unsharded optimizer)."""
    seen = set()
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{where}: entry {i} is a {type(p).__name__}, not a torch tensor")
        if not p.is_leaf:
            raise ValueError(f"{where}: entry {i} is not a leaf tensor (a parameter must be)")
        if not (p.is_floating_point() or p.is_complex()):
            raise TypeError(f"{where}: entry {i} has dtype {p.dtype}, not a floating or complex dtype")
        if _interop.is_dtensor(p) or _interop.lacks_storage(p):  # FSDP2's DTensors, other wrappers
            raise TypeError(
                f"{where}: entry {i} is a {type(p).__qualname__}; a flat buffer takes tensors with memory of "
                "their own (a model sharded by FSDP2 or other DTensor placements is already sharded: "
                "give its parameters to a genesis optimizer directly)"
            )
        if id(p) in seen:
            raise ValueError(f"{where}: entry {i} appears more than once")
        seen.add(id(p))


class FlatBuffer:
    """Parameters of one dtype and device, moved into ``data`` (with their gradients in
    ``grad``), laid out in buckets for a world of `world_size` ranks (see layout.py). Padding
    elements are zero and stay zero: their gradient is zero, so no element-wise rule moves
    them. With ``grads=False`` there is no gradient buffer (``grad`` is None): the parameters
    keep autograd's own gradients (ZeroOptimizer's sharded gradient memory)."""

    def __init__(self, params, world_size=1, bucket_numel=None, grads=True):
        params = list(params)
        check_params(params)
        if len({(p.dtype, p.device) for p in params}) != 1:
            raise ValueError("a flat buffer holds parameters of one dtype and device")
        self.params = params
        self.layout = _layout.plan([p.numel() for p in params], world_size, bucket_numel)
        first = params[0]
        self.data = torch.zeros(self.layout.total, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.data) if grads else None
        with torch.no_grad():
            for p, offset in zip(params, self.layout.offsets):
                n = p.numel()
                self.data[offset : offset + n].copy_(p.reshape(-1))
                p.data = self.data[offset : offset + n].view(p.shape)
                if grads:
                    if p.grad is not None:
                        self.grad[offset : offset + n].copy_(p.grad.reshape(-1))
                    p.grad = self.grad[offset : offset + n].view(p.shape)

    def param_slice(self, index):
        """Buffer range of parameter `index`."""
        offset = self.layout.offsets[index]
        return offset, offset + self.layout.numels[index]

    def views_intact(self):
        """True while every parameter and gradient is still a view of this buffer (user code
        may have replaced a ``.data`` or set a ``.grad`` to None)."""
        for p, offset in zip(self.params, self.layout.offsets):
            for tensor, buf in ((p, self.data), (p.grad, self.grad)):
                if buf is None:
                    continue
                if (
                    tensor is None
                    or tensor.untyped_storage().data_ptr() != buf.untyped_storage().data_ptr()
                    or tensor.storage_offset() != offset
                ):
                    return False
        return True

    def reattach(self):
        """Make every parameter's data and gradient views of the buffers again (after
        ``zero_grad(set_to_none=True)`` of some other code set them to None)."""
        with torch.no_grad():
            for p, offset in zip(self.params, self.layout.offsets):
                n = p.numel()
                view = self.grad[offset : offset + n].view(p.shape)
                if p.grad is not None and p.grad.data_ptr() != view.data_ptr():
                    view.copy_(p.grad)
                elif p.grad is None:
                    view.zero_()
                p.grad = view

    def zero_grad(self):
        self.grad.zero_()


def _as_groups(params):
    params = list(params)
    if not params:
        raise ValueError("got an empty parameter list")
    if not isinstance(params[0], dict):
        params = [{"params": params}]
    groups = []
    for group in params:
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("param groups must be dicts with a 'params' entry")
        group = dict(group)
        group["params"] = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
        groups.append(group)
    check_params([p for g in groups for p in g["params"]])
    return groups


def split_by_storage(params):
    """Parameters grouped by (dtype, device), in first-appearance order."""
    kinds = {}
    for p in params:
        kinds.setdefault((p.dtype, p.device), []).append(p)
    return list(kinds.values())


class FlatParameters:
    """A model's parameters in contiguous buffers, one per param group and (dtype, device).

    ``flat = FlatParameters(model.parameters())`` (or a list of param groups) moves the
    parameters into the buffers; ``flat.param_groups`` is what to give a genesis optimizer
    (each group's ``params`` are its flat buffers, whose ``.grad`` is the gradient buffer), so
    ``step()`` is one core call per buffer. Call ``flat.zero_grad()`` to clear gradients: the
    optimizer's ``zero_grad(set_to_none=True)`` would detach the buffers' gradients (then
    ``flat.reattach()`` restores them)."""

    def __init__(self, params):
        groups = _as_groups(params)
        self.buffers = []
        self.param_groups = []
        for group in groups:
            flats = [FlatBuffer(ps) for ps in split_by_storage(group["params"])]
            self.buffers.extend(flats)
            for f in flats:
                f.data.grad = f.grad
            self.param_groups.append({**group, "params": [f.data for f in flats]})

    def zero_grad(self):
        for f in self.buffers:
            f.zero_grad()

    def reattach(self):
        for f in self.buffers:
            f.reattach()
            f.data.grad = f.grad
