"""Muon on the compiled core: torch.optim.Muon's update (torch 2.13), with the element-wise
parts fused in the core and the Newton-Schulz matrix products in the parameter's library."""

import math
import numbers

import numpy as np

from .. import _C, _interop
from ._newton_schulz import orthogonalize
from .optimizer import Optimizer, as_float, precision_defaults

# torch.optim.Muon's defaults (Keller Jordan's constants).
EPS = 1e-7
DEFAULT_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
DEFAULT_NS_STEPS = 5
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def adjusted_lr(lr, adjust_lr_fn, shape):
    """torch's learning rate for a matrix of this shape: ``original`` (the default) scales it
    by sqrt(max(1, rows/cols)), ``match_rms_adamw`` by 0.2*sqrt(max(rows, cols))."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


def _shape(param):
    return tuple(_interop.array_of(param).shape)


class Muon(Optimizer):
    """``torch.optim.Muon``: momentum, then Newton-Schulz orthogonalization of each 2-D parameter's
    update, then decoupled weight decay and the step (docs/migrating-from-torch.md#muon)::

        B = lerp(B, G, 1 - momentum)                         # state["momentum_buffer"]
        U = lerp(G, B, momentum) if nesterov else B
        O = NS(U)                                            # ns_steps quintic iterations
        P = P * (1 - lr * weight_decay) - adjusted_lr(lr, shape) * O

    Only 2-D parameters (torch's error otherwise). The two element-wise stages are fused
    multi-tensor calls of the core (include/genesis/rules/muon.h); NS runs per parameter with
    the array library's matrix product (torch.matmul for torch tensors, CPU or CUDA, giving
    torch's bits; numpy.matmul for NumPy arrays), in bfloat16 as torch does.

    genesis additions: ``ns_dtype`` ("float32"/"float64"/a dtype) runs NS in that dtype instead
    of torch's bfloat16, and the mixed-precision options of ``genesis.optim.Optimizer``
    (``master_weights``, ``state_dtype``, ``stochastic_rounding``, ``seed``). Like the
    mixed-precision keys, ``ns_dtype`` appears in a param group only when given.
    """

    _counts_steps = False
    # The momentum stage reads the gradients through the core's gradient transform, so the
    # deferred clip and the lazy unscale apply there (_control); O is never rescaled.
    _fused_grad_transform = True
    # Its stages keep the momentum buffer outside the element-wise plan's state handling.
    _supports_8bit_state = False

    def __init__(
        self,
        params,
        lr=1e-3,
        weight_decay=0.1,
        momentum=0.95,
        nesterov=True,
        ns_coefficients=DEFAULT_NS_COEFFICIENTS,
        eps=EPS,
        ns_steps=DEFAULT_NS_STEPS,
        adjust_lr_fn=None,
        *,
        ns_dtype=None,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            **precision_defaults(precision),
        )
        if ns_dtype is not None:
            defaults["ns_dtype"] = ns_dtype
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                shape = _shape(p)
                if len(shape) != 2:
                    size = p.size() if _interop.is_torch(p) else shape
                    raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: {size}")

    # ----------------------------------------------------------------- hyperparameters
    def _check_group(self, group):
        """torch's constructor checks in torch's order and with its messages (lr, momentum,
        weight_decay, adjust_lr_fn), then the checks every genesis optimizer makes."""
        lr = group["lr"]
        lr = as_float(lr, "lr")  # a tensor lr of more than one element: torch's ValueError
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        _C.validate(self._options(group))  # momentum
        weight_decay = as_float(group["weight_decay"], "weight_decay")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
            raise ValueError(f"Adjust learning rate function {group['adjust_lr_fn']} is not supported")
        if group.get("ns_dtype") is not None:
            _ns_dtype(group)
        super()._check_group(group)

    def _options(self, group):
        return _C.MuonMomentumOptions(
            momentum=as_float(group["momentum"], "momentum"), nesterov=bool(group["nesterov"])
        )

    def _state_names(self, group):
        return ("momentum_buffer",)

    # -------------------------------------------------------------------------- step
    # Optimizer.step() runs Muon like any optimizer: _prepare() validates every gradient and
    # creates missing state before any update, _control() hands each group's step inputs to
    # _run(). Muon's hooks below fit its two stages around the matrix products into that.
    def _prepare(self):
        """Everything torch refuses at its step (complex or sparse gradients, non-2-D
        gradients, ns_steps >= 100, not three coefficients) is refused here, before anything
        changes (torch raises after updating the parameters before the bad one)."""
        self._check_step()
        super()._prepare()

    def _control(self, group, cached, grad_scale, found_inf, clip=None):
        """(momentum stage control, update stage control, group's first parameter index): the
        momentum stage reads the gradients (GradScaler's 1/scale and a deferred clip apply
        there), the update stage reads O and is the one that rounds stochastically."""
        momentum = super()._control(dict(group, stochastic_rounding=False), cached, grad_scale, found_inf, clip)
        first_index = 0
        for g in self.param_groups:
            if g is group:
                break
            first_index += len(g["params"])
        # CUDA: the device copies of 1/scale and found_inf that the momentum stage's kernels
        # read are replaced in `cached` by the next call; keep them, as `cached` keeps its own,
        # until this group's next step (the launches are asynchronous).
        self.__dict__.setdefault("_stage_inputs", {})[first_index] = (cached.inv_scale, cached.found_inf)
        return momentum, super()._control(group, cached, None, found_inf), first_index

    def _check_step(self):
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if _interop.is_torch(p) and p.is_complex():
                    raise RuntimeError("Muon does not support complex parameters")
                if _interop.is_torch(grad) and grad.is_sparse:
                    raise RuntimeError("Muon does not support sparse gradients")
                if len(grad.shape) != 2:
                    raise ValueError("Param gradient must be a 2D matrix")
            steps, coefficients = group["ns_steps"], group["ns_coefficients"]
            if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
                raise ValueError(f"ns_steps must be a non-negative integer, got {steps!r}")
            if steps >= 100:
                raise ValueError("Number of steps must be less than 100 for computational efficiency")
            if len(coefficients) != 3:
                raise ValueError("Coefficients must be a tuple of exactly 3 values")

    def _run(self, plan, group, control):
        """The group's step (`plan`, the group's cached plan, has gathered and checked the
        gradients; the stages run through plans of their own arrays)."""
        control_momentum, control_update, first_index = control
        params, seen = [], set()
        for i, p in enumerate(group["params"]):
            if p.grad is not None and id(p) not in seen:  # a duplicate is updated once
                seen.add(id(p))
                params.append((i, p))
        if not params:
            return
        lr = _torch_scalar(group["lr"])

        # 1. B and the NS input U for every parameter, one fused call.
        inputs = [_new_like(_interop.array_of(p)) for _, p in params]
        holders = [_holder(u, _contiguous(p.grad)) for u, (_, p) in zip(inputs, params)]
        stage = _C.GroupPlan(holders)
        for k, ((i, p), u) in enumerate(zip(params, inputs)):
            state_code, _ = self._storage(group, _interop.array_of(p))
            buf = self._staged_state(p, group, "momentum_buffer")
            stage.admit(k, u, [buf], [], state_code, None, None, False, first_index + i, _interop.is_cuda(u))
        _gather(stage, holders)
        stage.muon_momentum(self._options(group), control_momentum)

        # 2. NS per parameter, in its library.
        dtype = _ns_dtype(group)
        coefficients = tuple(float(c) for c in group["ns_coefficients"])
        steps, eps = int(group["ns_steps"]), float(group["eps"])
        updates = [orthogonalize(u, coefficients, steps, eps, dtype) for u in inputs]

        # 3. P = P * (1 - lr * wd) - adjusted_lr * O: one fused call per adjusted lr (the
        # matrices' aspect ratios decide it; a model has a few).
        by_lr = {}
        for (i, p), o in zip(params, updates):
            by_lr.setdefault(float(adjusted_lr(lr, group["adjust_lr_fn"], _shape(p))), []).append((i, p, o))
        # As torch: 1 - lr * wd and the adjusted lr in Python floats, or in float32 from a
        # float32 tensor lr (torch keeps it a tensor through these expressions).
        decay = float(1 - lr * group["weight_decay"])
        for adj, items in by_lr.items():
            self._apply_update(group, items, decay, adj, control_update, first_index)

    def _apply_update(self, group, items, decay, adj, control, first_index):
        holders, targets, writebacks = [], [], []
        for i, p, o in items:
            arr = _interop.array_of(p)
            target = _target(arr)
            if _interop.is_torch(arr) and not arr.is_contiguous():
                writebacks.append((arr, target))
            holders.append(_holder(target, _cast_like(o, target)))
            targets.append((i, p, target))
        plan = _C.GroupPlan(holders)
        for k, (i, p, target) in enumerate(targets):
            state_code, master = self._storage(group, target)
            master_param = self._staged_state(p, group, "master_param") if master else None
            plan.admit(
                k, target, [], [], state_code, None, master_param, False, first_index + i, _interop.is_cuda(target)
            )
        _gather(plan, holders)
        options = _C.MuonUpdateOptions(decay=decay, adjusted_lr=adj)
        plan.muon_update(options, control)
        if writebacks:
            torch = _interop.torch_module()
            with torch.no_grad():
                for arr, target in writebacks:
                    arr.copy_(target)

    def _staged_state(self, param, group, name):
        """A state array of `param`: _prepare() created it, except for a strided parameter
        (which the base class stages instead of admitting), whose state is created here."""
        state = self._state[param]
        if dict.get(state, name) is None:
            arr = _interop.array_of(param)
            if name == "master_param":
                value = _interop.copy_into_like(arr, arr, _interop.FLOAT32)
            else:
                value = _interop.zeros_like(arr, self._storage(group, arr)[0])
            dict.__setitem__(state, name, value)
        return dict.__getitem__(state, name)

    def _run_staged(self, cached, group, control, first_index, inputs):
        """Strided parameters and gradients need no staging plan: _run() updated them with the
        rest, each stage working on contiguous arrays of its own."""


def _torch_scalar(lr):
    """torch's view of a group's lr (torch.optim.optimizer._to_scalar): a 1-element tensor
    stays a (0-dim) tensor, anything else is a Python float."""
    if _interop.is_torch(lr):
        return lr.detach().reshape(()).cpu()
    return as_float(lr, "lr")


def _ns_dtype(group):
    """The dtype code NS runs in: torch's bfloat16 unless the group's ns_dtype says otherwise."""
    name = group.get("ns_dtype")
    if name is None:
        return _interop.BFLOAT16
    try:
        code = _interop.dtype_code_of_name(name)
    except TypeError:
        code = None
    if code not in _interop.SUPPORTED_CODES:  # "int8" names a state storage, not a float dtype
        raise ValueError(f"ns_dtype must be bfloat16, float16, float32 or float64, got {name!r}")
    return code


def _new_like(arr):
    """A contiguous scratch array of the parameter's library, dtype, device and shape."""
    if _interop.is_torch(arr):
        return _interop.torch_module().empty(arr.shape, dtype=arr.dtype, device=arr.device)
    return np.empty(arr.shape, dtype=arr.dtype)


def _contiguous(grad):
    return grad.contiguous() if _interop.is_torch(grad) else grad


def _target(arr):
    """The array the update stage writes: the parameter's own memory, or a contiguous copy of a
    strided torch parameter (copied back after the update)."""
    if _interop.is_torch(arr):
        view = arr.detach()
        return view if view.is_contiguous() else view.contiguous()
    return arr


def _cast_like(update, arr):
    """O in the parameter's dtype and layout, as the core's update stage reads it."""
    if _interop.is_torch(update):
        # One pass, also for a tall matrix's O (a transposed view).
        return _interop.torch_module().empty(arr.shape, dtype=arr.dtype, device=arr.device).copy_(update)
    return np.ascontiguousarray(update, dtype=arr.dtype)


def _holder(data, grad):
    """What a GroupPlan reads an entry's array and "gradient" from (the stage's input)."""
    if _interop.is_torch(data):
        holder = data.detach()
        holder.grad = grad
        return holder
    from ..nn.parameter import Parameter

    return Parameter(data, grad)


def _gather(plan, holders):
    if plan.gather(holders, True):
        raise RuntimeError("genesis internal error: Muon's stage arrays could not be prepared")
