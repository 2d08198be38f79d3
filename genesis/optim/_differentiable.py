"""``differentiable=True``: a step that autograd records (docs/semantics.md#differentiable-steps).

The compiled core writes memory that autograd cannot see, so a param group with
``differentiable=True`` is updated by torch's own single-tensor implementation of the same rule
instead: the functional API that ships inside the installed torch (``torch.optim.adam.adam``
and its siblings), called with ``foreach=False, differentiable=True``. It runs on genesis's
state, which has torch's layout (names, shapes, dtypes, 0-dim float32 ``step``), so switching
the flag on or off in the middle of training continues with the same numbers. Everything
genesis adds around the call is what torch's own ``step`` does around it: the grad mode of the
whole step follows ``defaults["differentiable"]``, missing state is created as torch creates
it, and a leaf parameter that requires grad is refused (before anything changes) as torch's
in-place update would refuse it.
"""

import functools
import importlib
import inspect

from .. import _interop

# rule -> (torch.optim module and function, the state lists it takes after params and grads,
# in its positional order). "step" is the 0-dim step counter; NAdam's mu_product and ASGD's
# eta and mu are per-tensor scalars (Optimizer._scalars).
_FUNCTIONALS = {  # torch.optim.<name>.<name>
    "sgd": ("sgd", ("momentum_buffer",)),
    "adam": ("adam", ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")),
    "rmsprop": ("rmsprop", ("square_avg", "grad_avg", "momentum_buffer", "step")),
    "adagrad": ("adagrad", ("sum", "step")),
    "adadelta": ("adadelta", ("square_avg", "acc_delta", "step")),
    "adamax": ("adamax", ("exp_avg", "exp_inf", "step")),
    "nadam": ("nadam", ("exp_avg", "exp_avg_sq", "mu_product", "step")),
    "radam": ("radam", ("exp_avg", "exp_avg_sq", "step")),
    "asgd": ("asgd", ("ax", "mu", "eta", "step")),
    "rprop": ("rprop", ("prev", "step_size", "step")),
}

# Group keys holding a pair that the functional takes as two keywords.
_PAIRS = {
    "betas": ("beta1", "beta2"),
    "etas": ("etaminus", "etaplus"),
    "step_sizes": ("step_size_min", "step_size_max"),
}


def _group_lr(optimizer, group):
    from .optimizer import as_float  # optimizer.py imports this module

    return as_float(group["lr"])


# State that torch does not start at zero: (rule, name) -> its start, from (optimizer, group).
# Adagrad's sum starts at the optimizer's default, which torch reads whatever the group says.
_FILLED = {
    ("rprop", "step_size"): _group_lr,
    ("adagrad", "sum"): lambda optimizer, group: optimizer._initial_sum(),
}

MIXED_PRECISION = ("master_weights", "state_dtype", "stochastic_rounding")


def supports(rule):
    """Whether torch has a differentiable implementation of this rule (Lion: no)."""
    return rule in _FUNCTIONALS


@functools.lru_cache(maxsize=None)
def _functional(rule):
    name = _FUNCTIONALS[rule][0]
    fn = getattr(importlib.import_module(f"torch.optim.{name}"), name)
    return fn, frozenset(inspect.signature(fn).parameters)


def check_group(optimizer, group):
    """The constructor's (and load_state_dict's) checks of a group with differentiable=True."""
    rule = getattr(optimizer, "_rule", None)
    if not supports(rule):
        raise ValueError(
            f"{type(optimizer).__name__} does not support differentiable=True "
            "(torch has no differentiable implementation of it)"
        )
    if _interop.torch_module() is None:
        raise ValueError("differentiable=True needs torch: the step is recorded by torch's autograd")
    used = [k for k in MIXED_PRECISION if group.get(k)]
    if used:
        raise ValueError(
            f"differentiable=True runs torch's own update, which has no "
            f"{', '.join(used)}; drop them or use differentiable=False"
        )


def check_params(params, where):
    """NumPy arrays (genesis.nn.Parameter) have no autograd: refuse them clearly."""
    for i, p in enumerate(params):
        if not _interop.is_torch(p):
            raise TypeError(
                f"differentiable=True needs torch tensors (autograd records the step), "
                f"but parameter {i} of {where} is a {type(p).__name__}"
            )


def prepare(optimizer, group, group_index):
    """Validate one differentiable group for this step, changing nothing, and return the
    function that updates it (given GradScaler's grad_scale, or None)."""
    torch = _interop.torch_module()
    where = f"param group {group_index}"
    check_group(optimizer, group)
    check_params(group["params"], where)
    grad_enabled = bool(optimizer.defaults.get("differentiable"))
    params = []
    for i, p in enumerate(group["params"]):
        if p.grad is None:
            continue
        _interop.check_grad(p, p.grad, f"parameter {i} of {where}", sparse_ok=optimizer._supports_sparse)
        if grad_enabled and p.requires_grad and p.is_leaf:
            # What torch's in-place update raises, here before any state changes.
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        step = dict.get(optimizer.state[p], "step") if p in optimizer.state else None
        if isinstance(step, torch.Tensor) and step.requires_grad:
            raise RuntimeError("`requires_grad` is not supported for `step` in differentiable mode")
        params.append(p)
    return functools.partial(_run, optimizer, group, params, grad_enabled)


def _run(optimizer, group, params, grad_enabled, grad_scale):
    if not params:
        return
    torch = _interop.torch_module()
    rule = optimizer._rule
    fn, accepted = _functional(rule)
    names = optimizer._state_names(group)
    scalars = dict(optimizer._scalars(group))
    with torch.set_grad_enabled(grad_enabled):
        grads = [p.grad for p in params]
        if grad_scale is not None:  # GradScaler hands genesis the scale instead of unscaling
            inv = 1.0 / float(grad_scale)
            grads = [g * inv for g in grads]
        lists = []
        for name in _FUNCTIONALS[rule][1]:
            used = name in names or name in scalars or (name == "step" and optimizer._counts_steps)
            lists.append([_state_of(optimizer, group, rule, p, name, scalars) for p in params] if used else [])
        kwargs = {}
        for key, value in group.items():
            if key in _PAIRS:
                kwargs.update(zip(_PAIRS[key], value))
            elif key in accepted and key not in ("params", "foreach", "fused"):
                kwargs[key] = value
        for key, value in (
            ("foreach", False),
            ("differentiable", True),
            ("has_complex", any(torch.is_complex(p) for p in params)),
            ("has_sparse_grad", any(g.is_sparse for g in grads)),
        ):
            if key in accepted:
                kwargs[key] = value
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        fn(params, grads, *lists, **kwargs)
    if rule == "sgd" and "momentum_buffer" in names:
        # torch's sgd creates a missing buffer from the gradient and returns it in the list.
        for p, buf in zip(params, lists[0]):
            dict.__setitem__(optimizer.state[p], "momentum_buffer", buf)
    optimizer._state_changed()  # the compiled plans re-check every pointer before they run again


def _state_of(optimizer, group, rule, p, name, scalars):
    """The parameter's state entry `name`, created as torch creates it if it is missing (SGD's
    momentum buffer stays None: torch's sgd builds it from the first gradient)."""
    state = optimizer.state[p]
    value = dict.get(state, name)
    if value is not None or (rule == "sgd" and name == "momentum_buffer"):
        return value
    from .optimizer import _new_state_array

    arr = _interop.core_view(p.detach())
    if name == "step":
        value = _interop.new_step(arr)
    elif name in scalars:
        value = _interop.new_step(arr, scalars[name])
    else:
        value = _new_state_array(p, arr, optimizer._storage(group, arr)[0])
        if (rule, name) in _FILLED:
            # Through the real view: complex state starts at v + v*j, as torch's.
            _interop.core_view(value).fill_(_FILLED[rule, name](optimizer, group))
    dict.__setitem__(state, name, value)
    return value
