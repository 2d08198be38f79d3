"""Learning-rate schedulers for genesis optimizers.

A drop-in for ``torch.optim.lr_scheduler``: the same classes, constructor signatures,
attributes (``last_epoch``, ``base_lrs``, ``get_last_lr()``), ``state_dict()`` /
``load_state_dict()``, warnings and errors.  Every scheduler produces the same learning-rate
sequence as torch's (the same floating-point expressions, evaluated in the same order), so
schedulers compose in :class:`ChainedScheduler` as torch's do.  One deliberate difference:
resuming is exact whichever of the optimizer's and the scheduler's states is restored first
(NOTE: [resume in either order]); torch's is exact only when the scheduler is built first.

A scheduler drives any optimizer object that has ``param_groups`` (a list of dicts with an
``"lr"`` entry, and ``"momentum"`` or ``"betas"`` for the schedulers that cycle momentum)
and a ``step`` method: genesis optimizers, torch optimizers, or user classes.  This module
does not import torch; a ``torch.Tensor`` learning rate is handled by duck typing (it is
cloned when read and filled in place when written, as torch does).

Per-step work is a few float operations per param group: no copies of the optimizer's
groups, parameters or state.
"""

from __future__ import annotations

import itertools
import math
import types
import warnings
import weakref
from bisect import bisect_right
from collections import Counter
from functools import wraps

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "CyclicLR",
    "SequentialLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
]

# The leading sentences of the warnings below are torch's, word for word, so that warning
# filters written for torch (which match on the start of the message) keep working.
_EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available."
)
_STEP_OVERRIDDEN_WARNING = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
    "initialization. Please, make sure to call `optimizer.step()` before "
    "`lr_scheduler.step()`."
)
_STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
    "Call them in the opposite order: `optimizer.step()` before `lr_scheduler.step()`. "
    "Otherwise the first value of the learning rate schedule is skipped."
)
_GET_LR_WARNING = "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."

# Attribute set on the wrapper that replaces ``optimizer.step``.  torch uses the same name
# and the same ``_opt_called`` flag, so a genesis scheduler and a torch scheduler attached
# to one optimizer share a single wrapper instead of stacking two.
_WRAPPED_MARK = "_wrapped_by_lr_sched"


def _require_optimizer(optimizer) -> None:
    """Raise ``TypeError`` (torch's message) unless ``optimizer`` looks like an optimizer."""
    if not hasattr(optimizer, "param_groups") or not callable(getattr(optimizer, "step", None)):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _snapshot(value):
    """Return ``value``, or a clone of it when it is a tensor.

    torch optimizers may hold a tensor ``lr``; cloning keeps the values a scheduler hands
    out or remembers from aliasing the group's live tensor.
    """
    if type(value) is float:  # the common case; skip the attribute lookup
        return value
    clone = getattr(value, "clone", None)
    return value if clone is None else clone()


def _assign(group: dict, key: str, value) -> None:
    """Set ``group[key] = value``; a tensor entry is filled in place instead.

    Filling in place keeps a tensor learning rate's identity, which capturable / compiled
    optimizer steps rely on (this is torch's behaviour).
    """
    fill = getattr(group[key], "fill_", None)
    if fill is None:
        group[key] = value
    else:
        squeeze = getattr(value, "squeeze", None)  # fill_ needs a 0-dim tensor or a number
        fill(value if squeeze is None else squeeze())


def _group_values(optimizer, key: str) -> list:
    """``[group[key] for each group]`` without aliasing tensor entries."""
    return [_snapshot(group[key]) for group in optimizer.param_groups]


def _per_group(name: str, optimizer, value) -> list:
    """Broadcast a scalar hyperparameter to one value per param group, or check a list's length."""
    n_groups = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n_groups:
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(value)} values, param_groups has {n_groups}."
            )
        return [_snapshot(v) for v in value]
    return [_snapshot(value)] * n_groups


def _momentum_key(optimizer) -> str:
    """Name of the group entry holding momentum: ``"betas"`` (beta1 is cycled) or ``"momentum"``."""
    groups = optimizer.param_groups
    for key in ("betas", "momentum"):
        if all(key in group for group in groups):
            return key
    raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")


def _set_momentum(group: dict, key: str, momentum) -> None:
    """Write ``momentum`` to ``group["momentum"]``, or as beta1 of ``group["betas"]``."""
    if key == "betas":
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def _saved_callable(fn):
    """What a state_dict keeps of a user callable.

    Plain functions and lambdas cannot be saved portably and are restored from the
    constructor, so they are stored as ``None``; a callable object's attributes are saved.
    """
    return None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()


def _attribute_state(scheduler, excluded) -> dict:
    """A scheduler's attributes except ``excluded``, with list and dict values copied (one
    level) so that the result is a snapshot, independent of the scheduler."""
    return {
        key: (value.copy() if type(value) in (list, dict) else value)
        for key, value in scheduler.__dict__.items()
        if key not in excluded
    }


def _track_optimizer_steps(optimizer) -> None:
    """Wrap ``optimizer.step`` so that it records on the optimizer that it has been called.

    :meth:`LRScheduler.step` reads that record to warn when the scheduler is stepped before
    the optimizer (which silently skips the schedule's first value).  The wrapper holds the
    optimizer through a weak reference so that it does not keep the optimizer alive through a
    reference cycle (optimizer -> wrapper -> optimizer).
    """
    step = optimizer.step
    if getattr(step, _WRAPPED_MARK, False):
        return
    opt_ref = weakref.ref(optimizer)
    func = getattr(step, "__func__", None)
    if func is not None and getattr(step, "__self__", None) is optimizer:
        # A bound method: call its function with the optimizer re-bound on each call.
        @wraps(func)
        def wrapper(*args, **kwargs):
            opt = opt_ref()
            opt._opt_called = True
            return func(opt, *args, **kwargs)

    else:
        # Any other callable (e.g. a function stored on the instance) is called as is.
        @wraps(step)
        def wrapper(*args, **kwargs):
            opt_ref()._opt_called = True
            return step(*args, **kwargs)

    setattr(wrapper, _WRAPPED_MARK, True)
    optimizer.step = wrapper


def _equal(a, b) -> bool:
    """``a == b`` as a bool; False where the comparison has no single truth value."""
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return False


def _group_entries(optimizer) -> list:
    """Each param group's entries except its parameters (tensor values cloned)."""
    return [
        {key: _snapshot(value) for key, value in group.items() if key != "params"} for group in optimizer.param_groups
    ]


# Construction order of the schedulers, so that a composite scheduler can tell which of its
# children was built first (see _Construction).
_construction_order = itertools.count()


class _Construction:
    """What building a scheduler wrote into its optimizer's param groups, kept until the
    scheduler first steps so that ``load_state_dict`` can take it back.

    NOTE: [resume in either order] A training script resumes by building the optimizer and the
    scheduler and loading both states, with the optimizer's state loaded either before or after
    the scheduler is built.  Building a scheduler writes the groups (the epoch-0 rate, and for
    OneCycleLR / CyclicLR also momentum and their bounds); when the optimizer's state was loaded
    first, those writes replace the restored values (torch then runs the first resumed step, or
    with a chainable scheduler every step, at a wrong rate).  So ``load_state_dict`` called
    before the scheduler's first step puts back every entry that construction changed and that
    still holds the value construction left, provided the groups are still the dicts that
    construction saw: an optimizer ``load_state_dict`` after construction (genesis's and
    torch's both build new group dicts) replaces them, and then the loaded values stand, as in
    torch.
    """

    def __init__(self, optimizer) -> None:
        self.order = next(_construction_order)
        self.groups = list(optimizer.param_groups)
        self.before = _group_entries(optimizer)
        self.after = None

    def finish(self, optimizer) -> None:
        """Record what the groups hold once construction is over."""
        self.after = _group_entries(optimizer)

    def take_back(self, optimizer, before=None) -> None:
        """Restore ``before`` (default: the entries this construction found) where
        construction changed them; nothing if the optimizer's groups were replaced since."""
        groups = optimizer.param_groups
        if self.after is None or len(groups) != len(self.groups):
            return
        if any(group is not seen for group, seen in zip(groups, self.groups)):
            return
        for group, old, new in zip(groups, before or self.before, self.after):
            for key, value in old.items():
                if key in group and key in new and not _equal(value, new[key]) and _equal(group[key], new[key]):
                    _assign(group, key, value)


class LRScheduler:
    """Base class of the learning-rate schedulers.

    A subclass implements :meth:`get_lr` (the learning rates for ``last_epoch``, usually
    computed from the current ``group["lr"]`` so that schedulers can be chained) and
    optionally ``_get_closed_form_lr`` (used when an explicit epoch is passed to
    :meth:`step`).

    The constructor stores ``initial_lr`` in each param group (when ``last_epoch == -1``),
    records ``base_lrs``, wraps ``optimizer.step`` to detect a wrong call order, and takes
    the initial step, which sets ``last_epoch`` to ``last_epoch + 1`` (0 for a fresh run).

    Args:
        optimizer: the optimizer whose ``param_groups`` are scheduled.
        last_epoch: index of the last epoch; ``-1`` starts a new schedule.  When resuming
            with a value ``>= 0``, every group must already hold ``initial_lr``.

    Creating a scheduler writes the optimizer's learning rates.  When restoring a checkpoint,
    the optimizer's ``load_state_dict`` may come before or after the scheduler is created: the
    scheduler's ``load_state_dict``, called before its first step, takes back what creating it
    wrote over the loaded values (NOTE: [resume in either order]).
    """

    # Flags that are True only during a step (class-level defaults); they, the optimizer and
    # the construction record are never saved.
    _get_lr_called_within_step = False
    _is_initial = False
    _construction = None
    _NOT_SAVED = frozenset({"optimizer", "_get_lr_called_within_step", "_is_initial", "_construction"})

    def _begin_construction(self, optimizer) -> None:
        """Note the param groups before this scheduler writes to them (the first call counts:
        subclasses that write before ``LRScheduler.__init__`` call it first)."""
        if self._construction is None:
            self._construction = _Construction(optimizer)

    def __init__(self, optimizer, last_epoch: int = -1) -> None:
        _require_optimizer(optimizer)
        self._begin_construction(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", _snapshot(group["lr"]))
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        "resuming scheduler with last_epoch >= 0. Load the optimizer's "
                        "state before resuming, or use last_epoch=-1 for a fresh run."
                    )
        self.base_lrs = _group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        _track_optimizer_steps(optimizer)
        self._initial_step()
        self._construction.finish(optimizer)

    def _initial_step(self) -> None:
        """Reset the step count and take the constructor's step (``last_epoch`` += 1)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def state_dict(self) -> dict:
        """Return the scheduler's state: every attribute except the optimizer.

        The returned dict is a snapshot: it does not change when the scheduler keeps
        stepping, and editing it does not change the scheduler.
        """
        return _attribute_state(self, self._NOT_SAVED)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state returned by :meth:`state_dict`.

        Load the optimizer's state as well (before or after creating the scheduler):
        chainable schedulers continue from the optimizer's current ``group["lr"]``.
        """
        if self._construction is not None:
            self._construction.take_back(self.optimizer)
            self._construction = None
        self.__dict__.update(state_dict)

    def get_last_lr(self) -> list:
        """The learning rates the last :meth:`step` set, one per param group."""
        return list(self._last_lr)

    def get_lr(self) -> list:
        """Compute the learning rates for ``last_epoch`` (called by :meth:`step`).

        To read the current learning rates use :meth:`get_last_lr`.
        """
        raise NotImplementedError

    def _warn_if_get_lr_called_directly(self) -> None:
        if not self._get_lr_called_within_step:
            warnings.warn(_GET_LR_WARNING, UserWarning, stacklevel=3)

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule by one step and write the new learning rates.

        Call it after ``optimizer.step()``.

        Args:
            epoch: deprecated (as in torch); sets ``last_epoch`` to ``epoch`` and uses the
                closed form where the scheduler has one.
        """
        if self._step_count == 1:
            # The first step after the constructor's: by now the optimizer should have
            # stepped once.  Checked once only, so steady-state steps pay nothing for it.
            if not getattr(self.optimizer.step, _WRAPPED_MARK, False):
                warnings.warn(_STEP_OVERRIDDEN_WARNING, UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, "_opt_called", False):
                warnings.warn(_STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(_EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        """Move to ``epoch`` (or the next epoch) and write the learning rates to the groups."""
        if epoch is None:
            self.last_epoch += 1
            self._write_lrs(self.get_lr)
        else:
            self.last_epoch = epoch
            self._write_lrs(getattr(self, "_get_closed_form_lr", None) or self.get_lr)

    def _write_lrs(self, compute) -> None:
        """Write the rates returned by ``compute()`` (``get_lr`` or the closed form) to the groups."""
        self._get_lr_called_within_step = True
        try:
            values = compute()
        finally:
            self._get_lr_called_within_step = False
        groups = self.optimizer.param_groups
        if len(values) != len(groups):
            # Schedules computed from per-group lists (base_lrs, lambdas, ...) cannot cover
            # a param group added after the scheduler was created.
            raise ValueError(
                f"{type(self).__name__} computed {len(values)} learning rates for "
                f"{len(groups)} param groups; was a param group added after the scheduler was created?"
            )
        for group, lr in zip(groups, values):
            _assign(group, "lr", lr)
        self._last_lr = _group_values(self.optimizer, "lr")
        if not self._is_initial:
            self._construction = None  # stepped: the construction's writes are history


class _LambdaScheduler(LRScheduler):
    """Shared constructor and state handling of :class:`LambdaLR` and :class:`MultiplicativeLR`."""

    def __init__(self, optimizer, lr_lambda, last_epoch: int = -1) -> None:
        _require_optimizer(optimizer)
        n_groups = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n_groups:
                raise ValueError(f"Expected {n_groups} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n_groups
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict:
        """The scheduler's state; lambdas are saved only when they are callable objects
        (their ``__dict__``), not plain functions or lambdas."""
        state = super().state_dict()
        state["lr_lambdas"] = [_saved_callable(fn) for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state; the given dict is left unchanged."""
        state = dict(state_dict)
        saved_lambdas = state.pop("lr_lambdas")
        super().load_state_dict(state)
        for fn, saved in zip(self.lr_lambdas, saved_lambdas):
            if saved is not None:
                fn.__dict__.update(saved)


class LambdaLR(_LambdaScheduler):
    """Set each group's learning rate to ``initial_lr * lr_lambda(epoch)``.

    Args:
        optimizer: the optimizer.
        lr_lambda: a function of the epoch returning a factor, or a list with one function
            per param group.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        return [base_lr * fn(self.last_epoch) for fn, base_lr in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaScheduler):
    """Multiply each group's learning rate by ``lr_lambda(epoch)`` on every step.

    Args:
        optimizer: the optimizer.
        lr_lambda: a function of the epoch returning a factor, or a list with one function
            per param group.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch: int = -1) -> None:
        for fn in lr_lambda if isinstance(lr_lambda, (list, tuple)) else [lr_lambda]:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, lr_lambda, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * fn(self.last_epoch) for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups)]


class StepLR(LRScheduler):
    """Multiply each group's learning rate by ``gamma`` every ``step_size`` epochs.

    Args:
        optimizer: the optimizer.
        step_size: period of the decay, in epochs.
        gamma: decay factor.  Default: 0.1.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply each group's learning rate by ``gamma`` at each milestone epoch.

    A milestone listed ``n`` times multiplies by ``gamma ** n``.

    Args:
        optimizer: the optimizer.
        milestones: epoch indices (increasing).
        gamma: decay factor.  Default: 0.1.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        if self.last_epoch not in self.milestones:
            return _group_values(self.optimizer, "lr")
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch) for base_lr in self.base_lrs]

    def state_dict(self) -> dict:
        """The scheduler's state, with the milestones as a sorted list (repeats kept), so
        that the state holds only plain containers."""
        state = super().state_dict()
        state["milestones"] = sorted(self.milestones.elements())
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state (milestones given as a list, or as a mapping like torch's Counter)."""
        super().load_state_dict(state_dict)
        self.milestones = Counter(state_dict["milestones"])


class ConstantLR(LRScheduler):
    """Multiply each group's learning rate by ``factor`` until epoch ``total_iters``.

    Args:
        optimizer: the optimizer.
        factor: the factor, in [0, 1].  Default: 1/3.
        total_iters: the number of epochs during which the factor applies.  Default: 5.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [
            base_lr * (self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor))
            for base_lr in self.base_lrs
        ]


class LinearLR(LRScheduler):
    """Scale each group's learning rate by a factor going linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` epochs.

    Args:
        optimizer: the optimizer.
        start_factor: factor at epoch 0, in (0, 1].  Default: 1/3.
        end_factor: factor from epoch ``total_iters`` on, in [0, 1].  Default: 1.
        total_iters: length of the ramp in epochs.  Default: 5.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(
        self,
        optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        # Ratio of the factor at this epoch to the factor at the previous one.
        delta = self.end_factor - self.start_factor
        ratio = 1.0 + delta / (self.total_iters * self.start_factor + (self.last_epoch - 1) * delta)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [
            base_lr
            * (
                self.start_factor
                + (self.end_factor - self.start_factor) * min(self.total_iters, self.last_epoch) / self.total_iters
            )
            for base_lr in self.base_lrs
        ]


class ExponentialLR(LRScheduler):
    """Multiply each group's learning rate by ``gamma`` every epoch.

    Args:
        optimizer: the optimizer.
        gamma: decay factor.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        # When resuming, the constructor's step must not decay the restored rates once more.
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    """Decay each group's learning rate as ``initial_lr * (1 - t/total_iters) ** power``,
    reaching 0 at ``t = total_iters`` and staying there.

    Args:
        optimizer: the optimizer.
        total_iters: number of decay epochs.  Default: 5.
        power: the polynomial's power.  Default: 1.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        t, total = self.last_epoch, self.total_iters
        factor = ((1.0 - t / total) / (1.0 - (t - 1) / total)) ** self.power
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [
            base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
            for base_lr in self.base_lrs
        ]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing: ``eta_min + (initial_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``.

    Each step updates the group's current rate as torch does, by the ratio of consecutive
    cosine factors, ``eta_min + (lr - eta_min) * (1 + cos(pi*t/T_max)) / (1 + cos(pi*(t-1)/T_max))``
    (adding the step's increment instead at the minimum, where the ratio is 0/0).  On its own
    this follows the closed form above up to rounding; and because it continues from the
    group's current rate, it composes with another scheduler in a :class:`ChainedScheduler`
    (e.g. a LinearLR warm-up), continues from a rate changed by hand, keeps the group's
    current rate at construction (epoch 0), and resumes exactly whichever of the optimizer and
    the scheduler is restored first: all exactly as torch's.  ``step(epoch)`` evaluates the
    closed form.  Past ``T_max`` the cosine continues (the rate rises again), as in torch.

    Args:
        optimizer: the optimizer.
        T_max: half-period, in epochs.
        eta_min: minimum learning rate.  Default: 0.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        t, T_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if (t - 1 - T_max) % (2 * T_max) == 0:
            # Leaving the minimum: the ratio below would be 0/0.
            increment = (1 - math.cos(math.pi / T_max)) / 2
            return [
                group["lr"] + (base_lr - eta_min) * increment
                for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)
            ]
        ratio = (1 + math.cos(math.pi * t / T_max)) / (1 + math.cos(math.pi * (t - 1) / T_max))
        return [ratio * (group["lr"] - eta_min) + eta_min for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        scale = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * scale for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing with warm restarts (SGDR).

    ``lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`` where
    ``T_cur`` counts epochs since the last restart and ``T_i`` (first ``T_0``) is multiplied
    by ``T_mult`` at every restart.  :meth:`step` accepts a fractional epoch
    (``scheduler.step(epoch + i / iters)``) without a deprecation warning.  As in torch,
    this scheduler does not warn about the optimizer/scheduler call order.

    Args:
        optimizer: the optimizer.
        T_0: epochs until the first restart (positive int).
        T_mult: growth factor of the period after each restart (int >= 1).  Default: 1.
        eta_min: minimum learning rate.  Default: 0.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        scale = (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * scale for base_lr in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        """Advance one epoch, or jump to ``epoch`` (which may be fractional)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch < self.T_0:
                self.T_i = self.T_0
                self.T_cur = epoch
            elif self.T_mult == 1:
                self.T_cur = epoch % self.T_0
            else:
                # Index n of the current period: T_0 * (T_mult**n - 1) / (T_mult - 1) epochs
                # (a geometric series) precede it.
                n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                self.T_i = self.T_0 * self.T_mult ** (n)
        self.last_epoch = math.floor(epoch)
        self._write_lrs(self.get_lr)


class OneCycleLR(LRScheduler):
    """The 1cycle policy: warm up from ``max_lr / div_factor`` to ``max_lr``, then anneal to
    ``initial_lr / final_div_factor`` (optionally in three phases), cycling momentum inversely.

    Momentum is cycled in ``group["momentum"]``, or in beta1 of ``group["betas"]`` for
    Adam-like optimizers.  ``step()`` is meant to be called after every batch; stepping past
    ``total_steps`` raises ``ValueError``.

    Args:
        optimizer: the optimizer.
        max_lr: peak learning rate (a float, or a list with one per param group).
        total_steps: number of steps in the cycle; or give ``epochs`` and ``steps_per_epoch``.
        epochs, steps_per_epoch: used when ``total_steps`` is None.
        pct_start: fraction of the cycle spent increasing the rate.  Default: 0.3.
        anneal_strategy: ``"cos"`` or ``"linear"``.  Default: ``"cos"``.
        cycle_momentum: cycle momentum inversely to the rate.  Default: True.
        base_momentum, max_momentum: momentum bounds (float or per-group list).
            Defaults: 0.85, 0.95.
        div_factor: ``initial_lr = max_lr / div_factor``.  Default: 25.
        final_div_factor: ``min_lr = initial_lr / final_div_factor``.  Default: 1e4.
        three_phase: warm up, anneal back to ``initial_lr``, then to ``min_lr``.  Default: False.
        last_epoch: index of the last batch; -1 starts a new schedule.
    """

    def __init__(
        self,
        optimizer,
        max_lr,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum=0.85,
        max_momentum=0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _require_optimizer(optimizer)
        self._begin_construction(optimizer)  # before this constructor writes the groups
        self.optimizer = optimizer

        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")

        # Each phase anneals between two group entries, up to (and including) its end step.
        warmup_end = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._schedule_phases = [
                {"end_step": warmup_end, "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": float(2 * pct_start * self.total_steps) - 2, "start_lr": "max_lr",
                 "end_lr": "initial_lr", "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
                {"end_step": self.total_steps - 1, "start_lr": "initial_lr", "end_lr": "min_lr",
                 "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
            ]  # fmt: skip
        else:
            self._schedule_phases = [
                {"end_step": warmup_end, "start_lr": "initial_lr", "end_lr": "max_lr",
                 "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
                {"end_step": self.total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr",
                 "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            ]  # fmt: skip

        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy

        max_lrs = _per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for group, group_max_lr in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = group_max_lr / div_factor
                group["max_lr"] = group_max_lr
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self._momentum_key = _momentum_key(optimizer)
            self.use_beta1 = self._momentum_key == "betas"
            max_momentums = _per_group("max_momentum", optimizer, max_momentum)
            base_momentums = _per_group("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for group, m_max, m_base in zip(optimizer.param_groups, max_momentums, base_momentums):
                    _set_momentum(group, self._momentum_key, m_max)
                    group["max_momentum"] = m_max
                    group["base_momentum"] = m_base
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        """Interpolate from ``start`` (pct=0) to ``end`` (pct=1)."""
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(
                f"Tried to step {step_num} times. The specified number of total steps is {self.total_steps}"
            )
        # The phase depends only on the step, not on the group: find it once.
        phases = self._schedule_phases
        start_step = 0.0
        for i, phase in enumerate(phases):
            if step_num <= phase["end_step"] or i == len(phases) - 1:
                break
            start_step = phase["end_step"]
        pct = (step_num - start_step) / (phase["end_step"] - start_step)

        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
            if self.cycle_momentum:
                momentum = self._anneal(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                _set_momentum(group, self._momentum_key, momentum)
        return lrs


class CyclicLR(LRScheduler):
    """Cyclical learning rates (CLR): cycle each group's rate between ``base_lr`` and
    ``max_lr``, and momentum inversely between ``max_momentum`` and ``base_momentum``.

    Policies: ``"triangular"`` (constant amplitude), ``"triangular2"`` (amplitude halved each
    cycle), ``"exp_range"`` (amplitude scaled by ``gamma ** iteration``), or a custom
    ``scale_fn`` evaluated on the cycle number or the iteration (``scale_mode``).  Momentum
    is cycled in ``group["momentum"]``, or in beta1 of ``group["betas"]``.

    Args:
        optimizer: the optimizer.
        base_lr, max_lr: lower and upper rate (float or per-group list).
        step_size_up: iterations in the increasing half of a cycle.  Default: 2000.
        step_size_down: iterations in the decreasing half.  Default: ``step_size_up``.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"`` (ignored with ``scale_fn``).
        gamma: base of ``"exp_range"``.  Default: 1.
        scale_fn: custom amplitude scale, a function of one argument with values in [0, 1].
        scale_mode: ``"cycle"`` or ``"iterations"``: the argument given to ``scale_fn``.
        cycle_momentum: cycle momentum as well.  Default: True.
        base_momentum, max_momentum: momentum bounds (float or per-group list).
            Defaults: 0.8, 0.9.
        last_epoch: index of the last batch; -1 starts a new schedule.
    """

    def __init__(
        self,
        optimizer,
        base_lr,
        max_lr,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn=None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum=0.8,
        max_momentum=0.9,
        last_epoch: int = -1,
    ) -> None:
        _require_optimizer(optimizer)
        self._begin_construction(optimizer)  # before this constructor writes the groups
        self.optimizer = optimizer
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for group, lr in zip(optimizer.param_groups, base_lrs):
                _assign(group, "lr", lr)
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)

        step_size_up = float(step_size_up)
        step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
        self.total_size = step_size_up + step_size_down
        self.step_ratio = step_size_up / self.total_size

        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        if scale_fn is None:
            # The built-in policies fix what they are evaluated on.
            scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.scale_mode = scale_mode

        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self._momentum_key = _momentum_key(optimizer)
            self.use_beta1 = self._momentum_key == "betas"
            self.base_momentums = _per_group("base_momentum", optimizer, base_momentum)
            self.max_momentums = _per_group("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for group, m_max, m_base in zip(optimizer.param_groups, self.max_momentums, self.base_momentums):
                    _set_momentum(group, self._momentum_key, m_max)
                    group["max_momentum"] = m_max
                    group["base_momentum"] = m_base
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def scale_fn(self, x) -> float:
        """The amplitude scale of the policy at ``x`` (a cycle number or an iteration)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def get_lr(self) -> list:
        self._warn_if_get_lr_called_directly()
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle  # position in the cycle, [0, 1)
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)

        lrs = [
            base_lr + (max_lr - base_lr) * scale_factor * scale for base_lr, max_lr in zip(self.base_lrs, self.max_lrs)
        ]
        if self.cycle_momentum:
            for group, m_base, m_max in zip(self.optimizer.param_groups, self.base_momentums, self.max_momentums):
                _set_momentum(group, self._momentum_key, m_max - (m_max - m_base) * scale_factor * scale)
        return lrs

    def state_dict(self) -> dict:
        """The scheduler's state; a custom ``scale_fn`` is saved only when it is a callable
        object (its ``__dict__``), not a plain function or lambda."""
        state = super().state_dict()
        fn = self._scale_fn_custom
        state["_scale_fn_custom"] = None if fn is None else _saved_callable(fn)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state; the given dict is left unchanged."""
        state = dict(state_dict)
        saved_fn = state.pop("_scale_fn_custom")
        super().load_state_dict(state)
        if saved_fn is not None:
            self._scale_fn_custom.__dict__.update(saved_fn)


class SequentialLR(LRScheduler):
    """Run schedulers one after another, switching at the milestone epochs.

    At milestone ``milestones[i - 1]`` scheduler ``i`` restarts from its epoch 0.

    Args:
        optimizer: the optimizer shared by all the schedulers.
        schedulers: the schedulers (constructed on ``optimizer``).
        milestones: the switch epochs, one fewer than the schedulers.
        last_epoch: index of the last epoch; -1 starts a new schedule.
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch: int = -1) -> None:
        _check_scheduler_list(self, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more "
                f"than the number of milestone points, but got number of schedulers {len(schedulers)} and the "
                f"number of milestones to be equal to {len(milestones)}"
            )
        self._begin_construction(optimizer)
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer

        # Each scheduler took its constructor step on the optimizer; undo those steps and
        # restart from the initial rates with only the scheduler that owns epoch 0.
        for group in optimizer.param_groups:
            _assign(group, "lr", group["initial_lr"])
        for scheduler in schedulers:
            _undo_initial_step(scheduler)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()
        self._construction.finish(optimizer)

    def step(self) -> None:
        """Step the scheduler that owns the next epoch (restarting it at a milestone)."""
        self._construction = None
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        """The scheduler's state, with each wrapped scheduler's state nested."""
        return _state_with_children(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state and the wrapped schedulers'; the given dict is left unchanged."""
        _load_state_with_children(self, state_dict)


class ChainedScheduler(LRScheduler):
    """Step several chainable schedulers together, so that their effects compose.

    ``last_epoch`` counts the calls to :meth:`step` (torch's ChainedScheduler has no
    ``last_epoch``).

    Args:
        schedulers: the schedulers, stepped in this order.
        optimizer: the optimizer they share.  Default: the first scheduler's.
    """

    def __init__(self, schedulers, optimizer=None) -> None:
        if len(schedulers) < 1:
            raise ValueError(
                f"{self.__class__.__name__} expects at least one scheduler to be chained, but got no scheduler."
            )
        optimizer = optimizer or schedulers[0].optimizer
        _check_scheduler_list(self, optimizer, schedulers)
        self._begin_construction(optimizer)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self.last_epoch = 0
        self._last_lr = _group_values(optimizer, "lr")
        self._construction.finish(optimizer)

    def step(self) -> None:
        """Step every scheduler, in order."""
        self._construction = None
        for scheduler in self._schedulers:
            scheduler.step()
        self.last_epoch += 1
        self._last_lr = _group_values(self.optimizer, "lr")

    def state_dict(self) -> dict:
        """The scheduler's state, with each wrapped scheduler's state nested."""
        return _state_with_children(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state and the wrapped schedulers'; the given dict is left unchanged."""
        _load_state_with_children(self, state_dict)


def _check_scheduler_list(owner, optimizer, schedulers) -> None:
    """Validate the schedulers given to SequentialLR / ChainedScheduler (torch's errors)."""
    name = type(owner).__name__
    if len(schedulers) < 1:
        raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
    for idx, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{name} at index {idx} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{name} does not support `ReduceLROnPlateau` scheduler as it "
                "requires additional kwargs to be specified when calling `step`, "
                f"but got one at index {idx} in the given schedulers sequence."
            )
        if optimizer != scheduler.optimizer:
            raise ValueError(
                f"{name} expects all schedulers to belong to the same optimizer, but "
                f"got scheduler {type(scheduler).__name__} at index {idx} has {scheduler.optimizer}, "
                f"which is different from {type(optimizer).__name__}."
            )


def _undo_initial_step(scheduler) -> None:
    """Step back the epoch counter of ``scheduler`` (recursing into composite schedulers)."""
    children = getattr(scheduler, "_schedulers", None)
    if children is not None:
        for child in children:
            _undo_initial_step(child)
    elif hasattr(scheduler, "last_epoch"):
        scheduler.last_epoch -= 1


def _state_with_children(scheduler) -> dict:
    """State of SequentialLR / ChainedScheduler: their attributes plus each child's state_dict."""
    state = _attribute_state(scheduler, scheduler._NOT_SAVED | {"_schedulers"})
    state["_schedulers"] = [child.state_dict() for child in scheduler._schedulers]
    return state


def _constructions(scheduler) -> list:
    """The pending construction records of ``scheduler`` and of all the schedulers it wraps,
    which are cleared (their writes are taken back once, by the composite)."""
    records = [scheduler._construction] if scheduler._construction is not None else []
    scheduler._construction = None
    for child in getattr(scheduler, "_schedulers", ()):
        records += _constructions(child)
    return records


def _load_state_with_children(scheduler, state_dict: dict) -> None:
    """Inverse of :func:`_state_with_children`; the given dict is left unchanged.

    Before the composite's first step, what building it and its children wrote is taken back
    (NOTE: [resume in either order]): the groups as the first-built child found them, where
    they still hold what the composite's construction left.
    """
    state = dict(state_dict)
    children = state.pop("_schedulers")
    if len(children) != len(scheduler._schedulers):  # checked before anything changes
        raise ValueError(
            f"the state holds {len(children)} schedulers, this {type(scheduler).__name__} has "
            f"{len(scheduler._schedulers)}"
        )
    own = scheduler._construction
    records = _constructions(scheduler)
    if own is not None:
        first = min(records, key=lambda record: record.order)
        if len(first.groups) == len(own.groups) and all(a is b for a, b in zip(first.groups, own.groups)):
            own.take_back(scheduler.optimizer, before=first.before)
    scheduler.__dict__.update(state)
    for child, child_state in zip(scheduler._schedulers, children):
        child.load_state_dict(child_state)


class ReduceLROnPlateau(LRScheduler):
    """Multiply the learning rates by ``factor`` when a metric stops improving.

    ``step(metric)`` is called once per evaluation.  After more than ``patience``
    consecutive evaluations without improvement (beyond ``threshold``) the rates are
    reduced (not below ``min_lr``; changes smaller than ``eps`` are skipped), then
    ``cooldown`` evaluations are ignored.

    Args:
        optimizer: the optimizer.
        mode: ``"min"`` (lower is better) or ``"max"``.  Default: ``"min"``.
        factor: reduction factor, < 1.  Default: 0.1.
        patience: tolerated evaluations without improvement.  Default: 10.
        threshold: minimum improvement.  Default: 1e-4.
        threshold_mode: ``"rel"`` (``best * (1 -/+ threshold)``) or ``"abs"``
            (``best -/+ threshold``).  Default: ``"rel"``.
        cooldown: evaluations to wait after a reduction.  Default: 0.
        min_lr: lower bound of the rates (float or per-group list).  Default: 0.
        eps: minimum change applied to a rate.  Default: 1e-8.
    """

    def __init__(
        self,
        optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr=0,
        eps: float = 1e-8,
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        _require_optimizer(optimizer)
        self.optimizer = optimizer
        n_groups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n_groups:
                raise ValueError(f"expected {n_groups} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * n_groups
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        # Unlike torch's, this scheduler too records initial_lr (genesis's contract: every
        # scheduler does); it never changes the rates at construction.
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", _snapshot(group["lr"]))
        self._last_lr = _group_values(optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        """Forget the best value, the bad-epoch count and the cooldown."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics, epoch=None) -> None:
        """Record one evaluation of the monitored metric and reduce the rates if it plateaued."""
        current = float(metrics)  # also accepts a 0-dim tensor or array
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(_EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch

        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self) -> None:
        """Multiply every group's rate by ``factor``, bounded below by its ``min_lr``."""
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            # A param group was added after construction.
            if self.default_min_lr is None:
                raise RuntimeError(
                    "The number of param groups in the `optimizer` "
                    f"({len(groups)}) differs "
                    f"from when `ReduceLROnPlateau` was initialized "
                    f"({len(self.min_lrs)}), usually due to a new "
                    "param group being added to the optimizer. Please "
                    "modify the `min_lrs` field to match the length "
                    "of the `optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                _assign(group, "lr", new_lr)

    @property
    def in_cooldown(self) -> bool:
        """Whether evaluations are being ignored after a reduction."""
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        """Whether metric ``a`` improves on ``best`` by more than the threshold."""
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        """Validate and store the comparison settings."""
        if mode not in ("min", "max"):
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state (and re-validate the mode settings it carries)."""
        super().load_state_dict(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)
