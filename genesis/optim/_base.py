"""What genesis optimizers derive from, and the hooks around their steps.

Where torch is importable, ``genesis.optim.Optimizer`` is a subclass of
``torch.optim.Optimizer``, so that everything in the torch ecosystem that checks for one (its
lr schedulers, SWALR, torch.amp.GradScaler, torch.distributed's checkpoint helpers and
ZeroRedundancyOptimizer, Hugging Face, Lightning) accepts genesis optimizers. Without torch
(NumPy users), or with ``GENESIS_NO_TORCH=1`` in the environment, the same classes derive from
``StandaloneBase``, which provides the part of torch's base that genesis does not implement
itself: registering hooks. Everything else (param groups, state, step, state_dict) is
genesis's own code in optimizer.py, one code path for both bases.

torch's base wraps every subclass's ``step`` in a profiler region plus the hook calls; that
costs microseconds per step. genesis wraps ``step`` in ``with_step_hooks`` instead, which only
looks at the hook tables and calls the original directly when they are empty.
"""

import functools
import os
from collections import OrderedDict
from itertools import chain

_torch_optimizer = None
if not os.environ.get("GENESIS_NO_TORCH"):
    try:
        import torch.optim.optimizer as _torch_optimizer
    except ImportError:  # NumPy-only installs
        _torch_optimizer = None

HAS_TORCH_BASE = _torch_optimizer is not None


class _Handle:
    """Removes one hook from its table (torch.utils.hooks.RemovableHandle's interface)."""

    _next_id = 0

    def __init__(self, table):
        self._table = table
        self.id = _Handle._next_id
        _Handle._next_id += 1

    def remove(self):
        self._table.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _register(table, hook, prepend=False):
    handle = _Handle(table)
    table[handle.id] = hook
    if prepend:
        table.move_to_end(handle.id, last=False)
    return handle


if HAS_TORCH_BASE:
    _global_pre_hooks = _torch_optimizer._global_optimizer_pre_hooks
    _global_post_hooks = _torch_optimizer._global_optimizer_post_hooks
    register_optimizer_step_pre_hook = _torch_optimizer.register_optimizer_step_pre_hook
    register_optimizer_step_post_hook = _torch_optimizer.register_optimizer_step_post_hook
else:
    _global_pre_hooks = OrderedDict()
    _global_post_hooks = OrderedDict()

    def register_optimizer_step_pre_hook(hook):
        """Register a pre-step hook for every optimizer: ``hook(optimizer, args, kwargs)``
        may return ``(new_args, new_kwargs)``. Returns a handle with ``remove()``."""
        return _register(_global_pre_hooks, hook)

    def register_optimizer_step_post_hook(hook):
        """Register a post-step hook for every optimizer: ``hook(optimizer, args, kwargs)``."""
        return _register(_global_post_hooks, hook)


class StandaloneBase:
    """The base of genesis optimizers where torch is absent: the hook registration methods
    of torch.optim.Optimizer, with the same signatures and order of calls."""

    def register_step_pre_hook(self, hook):
        """``hook(optimizer, args, kwargs)`` runs before each step; it may return
        ``(new_args, new_kwargs)``."""
        return _register(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook):
        """``hook(optimizer, args, kwargs)`` runs after each step."""
        return _register(self._optimizer_step_post_hooks, hook)

    def register_state_dict_pre_hook(self, hook, prepend=False):
        """``hook(optimizer)`` runs before state_dict() builds its result."""
        return _register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook, prepend=False):
        """``hook(optimizer, state_dict)`` runs on state_dict()'s result and may return a
        replacement."""
        return _register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook, prepend=False):
        """``hook(optimizer, state_dict)`` runs before load_state_dict() and may return a
        replacement state_dict."""
        return _register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook, prepend=False):
        """``hook(optimizer)`` runs after load_state_dict() succeeded."""
        return _register(self._optimizer_load_state_dict_post_hooks, hook, prepend)


Base = _torch_optimizer.Optimizer if HAS_TORCH_BASE else StandaloneBase

HOOK_TABLES = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


def init_hook_tables(optimizer):
    """Give an optimizer (new, or unpickled from an older version) its empty hook tables."""
    for name in HOOK_TABLES:
        if name not in optimizer.__dict__:
            setattr(optimizer, name, OrderedDict())


# torch.compile: a step runs compiled code that Dynamo cannot trace (pybind11 functions), so a
# compiled training step that calls optimizer.step() must break its graph there. Left to itself
# Dynamo would compile every genesis frame the step enters (even when the step runs after an
# earlier graph break, its frames are offered to Dynamo), break at each call into the core and
# warn about each. So the step is wrapped in torch.compiler.disable: one clean graph break,
# the whole step run eagerly. It costs about a microsecond per step in eager mode (1.2 us on
# this machine, against 30 us for the smallest step, one tensor of 10 elements).
_no_dynamo = lambda fn: fn  # noqa: E731
if HAS_TORCH_BASE:
    import torch.compiler

    if hasattr(torch.compiler, "disable"):
        _no_dynamo = torch.compiler.disable


# torch.profiler: torch's base runs every step() and zero_grad() inside a record_function region
# named "Optimizer.step#AdamW.step" ("Optimizer.zero_grad#AdamW.zero_grad"), which costs about
# 6 us a call even when no profiler is running. genesis enters the same region only while one is
# (a 40 ns check), so a profile shows genesis's steps under torch's names.
profiling = lambda: False  # noqa: E731
record_function = None
if HAS_TORCH_BASE:
    import torch.autograd
    from torch.autograd.profiler import record_function

    profiling = torch.autograd._profiler_enabled


def with_step_hooks(step):
    """Wrap an optimizer class's ``step`` so that the global and per-optimizer step hooks run
    around it exactly as around torch's (global pre hooks, then the optimizer's; after the
    step, the optimizer's post hooks, then the global ones), all inside torch's profiler region
    while a profiler runs. With no hook registered and no profiler, the cost is one profiler
    check and four empty-table checks."""
    if getattr(step, "_genesis_hooked", False):
        return step

    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        if profiling():
            with record_function(f"Optimizer.step#{type(self).__name__}.step"):
                return unprofiled(self, *args, **kwargs)
        return unprofiled(self, *args, **kwargs)

    def unprofiled(self, *args, **kwargs):
        if not (
            _global_pre_hooks or _global_post_hooks or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
        ):
            return step(self, *args, **kwargs)
        return hooked(self, *args, **kwargs)

    def hooked(self, *args, **kwargs):
        for pre_hook in chain(_global_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"{step} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
        out = step(self, *args, **kwargs)
        for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    wrapper = functools.wraps(step)(_no_dynamo(wrapper))
    wrapper._genesis_hooked = True
    wrapper.hooked = True  # torch's own marker: its base then leaves this step alone
    return wrapper
