"""Resuming every scheduler from a checkpoint, in either order
(docs/semantics.md#learning-rate-schedulers).

A training script resumes by building a new optimizer and scheduler and loading both states.
The optimizer's state may be loaded after the scheduler is built (order "scheduler first",
which torch documents) or before it (order "optimizer first"). Either way the resumed run must
continue exactly like a run that was never interrupted, and so like torch's scheduler driving a
torch optimizer, to 1e-12 relative: the learning rates (and cycled momentum) the optimizer sees
at every step. (torch itself is exact only in the first order; in the second its constructor's
writes survive the load, for one step or, with a chainable scheduler, for good.)
"""

import copy
import math
import os
import pickle
import sys
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as tlr

from genesis.optim import SGD, Adam
from genesis.optim import lr_scheduler as glr

sys.path.insert(0, os.path.dirname(__file__))
from test_lr_scheduler import SCHEDULERS, _close, _groups, _momentum  # noqa: E402

N_STEPS = 300

RESUMED = {
    **SCHEDULERS,
    "SequentialLR-cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=20), m.CosineAnnealingLR(o, T_max=200)], milestones=[20]
    ),
    "ReduceLROnPlateau": lambda m, o: m.ReduceLROnPlateau(o, factor=0.5, patience=4, cooldown=2, min_lr=1e-4),
}
# genesis optimizer, torch optimizer of the same kind ("betas": momentum cycled as beta1)
OPTIMIZERS = {
    "SGD": (lambda g: SGD(g, lr=0.1, momentum=0.9), lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9)),
    "Adam": (lambda g: Adam(g), lambda g: torch.optim.Adam(g)),
}


def _metric(step):
    """A loss for ReduceLROnPlateau that falls, then plateaus with noise (several reductions)."""
    return 1.0 / (1 + step) if step < 60 else 0.02 + 0.001 * math.sin(step)


def _advance(sched, step):
    if isinstance(sched, (glr.ReduceLROnPlateau, tlr.ReduceLROnPlateau)):
        sched.step(_metric(step))
    else:
        sched.step()


def _run(sched, opt, start, stop):
    """Steps start..stop-1: the rates and momentum the optimizer steps with, then the
    scheduler's get_last_lr after its step (as floats: a tensor lr is filled in place)."""
    rows = []
    for step in range(start, stop):
        groups = opt.param_groups
        rows.append(([float(g["lr"]) for g in groups], [_momentum(g) for g in groups]))
        opt.step()
        _advance(sched, step)
        rows.append(([float(lr) for lr in sched.get_last_lr()], None))
    return rows


def _assert_same(rows, ref_rows):
    assert len(rows) == len(ref_rows)
    for i, (row, ref) in enumerate(zip(rows, ref_rows)):
        for values, ref_values in zip(row, ref):
            if ref_values is None:
                continue
            assert len(values) == len(ref_values), i
            for a, b in zip(values, ref_values):
                assert _close(a, b), f"step {i // 2}: genesis {a!r}, torch {b!r}"


def _torch_run(build, make_opt):
    opt = make_opt(_groups())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation chatter
        sched = build(tlr, opt)
        return _run(sched, opt, 0, N_STEPS)


def _resume(build, make_opt, opt_state, sched_state, order):
    opt = make_opt(_groups())
    if order == "scheduler first":
        sched = build(glr, opt)
        opt.load_state_dict(copy.deepcopy(opt_state))
    else:
        opt.load_state_dict(copy.deepcopy(opt_state))
        sched = build(glr, opt)
    sched.load_state_dict(pickle.loads(sched_state))
    return sched, opt


@pytest.mark.parametrize("at", [0, 137])
@pytest.mark.parametrize("order", ["scheduler first", "optimizer first"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("sched_name", list(RESUMED))
def test_resume_in_either_order_matches_an_uninterrupted_torch_run(sched_name, opt_name, order, at):
    build = RESUMED[sched_name]
    make_opt, make_ref_opt = OPTIMIZERS[opt_name]
    ref_rows = _torch_run(build, make_ref_opt)

    opt = make_opt(_groups())
    sched = build(glr, opt)
    rows = _run(sched, opt, 0, at)
    opt_state, sched_state = copy.deepcopy(opt.state_dict()), pickle.dumps(sched.state_dict())
    sched, opt = _resume(build, make_opt, opt_state, sched_state, order)
    rows += _run(sched, opt, at, N_STEPS)

    _assert_same(rows, ref_rows)


@pytest.mark.parametrize("sched_name", ["LinearLR", "ConstantLR", "OneCycleLR-cos", "WarmupCosine"])
def test_torch_itself_resumes_exactly_only_scheduler_first(sched_name):
    """The reference above is the right one: torch's scheduler-first resume reproduces its
    uninterrupted run, while its optimizer-first resume does not (so genesis differs from torch
    there, on purpose)."""
    build, make_opt = RESUMED[sched_name], OPTIMIZERS["SGD"][1]
    ref_rows = _torch_run(build, make_opt)
    opt = make_opt(_groups())
    sched = build(tlr, opt)
    rows = _run(sched, opt, 0, 100)
    opt_state, sched_state = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    results = {}
    for order in ("scheduler first", "optimizer first"):
        new_opt = make_opt(_groups())
        if order == "scheduler first":
            new_sched = build(tlr, new_opt)
            new_opt.load_state_dict(copy.deepcopy(opt_state))
        else:
            new_opt.load_state_dict(copy.deepcopy(opt_state))
            new_sched = build(tlr, new_opt)
        new_sched.load_state_dict(copy.deepcopy(sched_state))
        results[order] = rows + _run(new_sched, new_opt, 100, N_STEPS)
    _assert_same(results["scheduler first"], ref_rows)
    with pytest.raises(AssertionError):
        _assert_same(results["optimizer first"], ref_rows)


def test_cosine_built_after_the_optimizer_state_keeps_its_rate():
    """No jump back to initial_lr at construction: epoch 0 keeps the group's current rate,
    as torch's does, before and after the scheduler's own state is loaded."""
    opt = SGD(_groups(), lr=0.1)
    sched = glr.CosineAnnealingLR(opt, T_max=50)
    for _ in range(20):
        opt.step()
        sched.step()
    opt_state, sched_state = copy.deepcopy(opt.state_dict()), sched.state_dict()
    resumed_at = [g["lr"] for g in opt.param_groups]
    assert resumed_at[0] < 0.7 * 0.1

    for module, make in ((glr, SGD), (tlr, torch.optim.SGD)):
        new_opt = make(_groups(), lr=0.1)
        new_opt.load_state_dict(copy.deepcopy(opt_state))
        new_sched = module.CosineAnnealingLR(new_opt, T_max=50)
        assert [g["lr"] for g in new_opt.param_groups] == resumed_at
        assert new_sched.get_last_lr() == resumed_at
    sched.step()
    new_sched = glr.CosineAnnealingLR(opt_new := SGD(_groups(), lr=0.1), T_max=50)
    opt_new.load_state_dict(copy.deepcopy(opt_state))
    new_sched.load_state_dict(sched_state)
    assert [g["lr"] for g in opt_new.param_groups] == resumed_at
    new_sched.step()
    assert [g["lr"] for g in opt_new.param_groups] == sched.get_last_lr()


def test_load_state_dict_keeps_a_rate_set_by_hand_after_construction():
    """Only what construction wrote, and what still holds that value, is taken back."""
    opt = SGD(_groups(), lr=0.1)
    source = glr.LinearLR(opt, start_factor=0.5, total_iters=10)
    state = source.state_dict()
    opt = SGD(_groups(), lr=0.1)
    sched = glr.LinearLR(opt, start_factor=0.5, total_iters=10)
    opt.param_groups[0]["lr"] = 0.0123
    sched.load_state_dict(state)
    assert [g["lr"] for g in opt.param_groups] == [0.0123, 0.02]


def test_load_state_dict_after_a_step_leaves_the_rates():
    opt = SGD(_groups(), lr=0.1)
    sched = glr.ConstantLR(opt, factor=0.5, total_iters=10)
    state = sched.state_dict()
    opt.step()
    sched.step()
    sched.load_state_dict(state)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.01]


def test_construction_record_is_not_saved():
    opt = SGD(_groups(), lr=0.1)
    for name in ("OneCycleLR-cos", "SequentialLR", "ChainedScheduler", "StepLR"):
        state = RESUMED[name](glr, opt).state_dict()
        assert "_construction" not in state
        assert all("_construction" not in child for child in state.get("_schedulers", []))


@pytest.mark.parametrize("order", ["scheduler first", "optimizer first"])
@pytest.mark.parametrize(
    "sched_name", ["WarmupCosine", "OneCycleLR-three-phase", "CyclicLR-triangular2", "SequentialLR"]
)
def test_genesis_scheduler_on_a_torch_optimizer_resumes_in_either_order(sched_name, order):
    """torch's optimizers replace their group dicts on load_state_dict too, so the same rule
    holds when a genesis scheduler drives one."""
    build = RESUMED[sched_name]
    make_opt = OPTIMIZERS["SGD"][1]
    ref_rows = _torch_run(build, make_opt)
    opt = make_opt(_groups())
    sched = build(glr, opt)
    rows = _run(sched, opt, 0, 90)
    opt_state, sched_state = copy.deepcopy(opt.state_dict()), pickle.dumps(sched.state_dict())
    sched, opt = _resume(build, make_opt, opt_state, sched_state, order)
    rows += _run(sched, opt, 90, N_STEPS)
    _assert_same(rows, ref_rows)


def test_nested_composite_resumes_in_either_order():
    def build(m, o):
        warmup = m.SequentialLR(o, [m.ConstantLR(o, 0.2, 5), m.LinearLR(o, 0.3, total_iters=10)], milestones=[5])
        return m.ChainedScheduler([warmup, m.CosineAnnealingLR(o, T_max=N_STEPS), m.StepLR(o, 40, 0.7)])

    make_opt = OPTIMIZERS["SGD"][0]
    ref_rows = _torch_run(build, OPTIMIZERS["SGD"][1])
    for order in ("scheduler first", "optimizer first"):
        opt = make_opt(_groups())
        sched = build(glr, opt)
        rows = _run(sched, opt, 0, 3)
        opt_state, sched_state = copy.deepcopy(opt.state_dict()), pickle.dumps(sched.state_dict())
        sched, opt = _resume(build, make_opt, opt_state, sched_state, order)
        rows += _run(sched, opt, 3, N_STEPS)
        _assert_same(rows, ref_rows)


def test_tensor_learning_rate_keeps_its_identity_when_taken_back():
    """A torch optimizer may hold a tensor lr: taking back construction's write fills it in
    place, like every other write of a scheduler."""

    def make_opt():
        p = torch.nn.Parameter(torch.zeros(3))
        p.grad = torch.ones(3)
        return torch.optim.SGD([p], lr=torch.tensor(0.1), momentum=0.9)

    build = RESUMED["WarmupCosine"]
    ref_opt = make_opt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_rows = _run(build(tlr, ref_opt), ref_opt, 0, 40)
    opt = make_opt()
    sched = build(glr, opt)
    rows = _run(sched, opt, 0, 12)
    opt_state, sched_state = copy.deepcopy(opt.state_dict()), pickle.dumps(sched.state_dict())
    opt = make_opt()
    opt.load_state_dict(opt_state)
    lr = opt.param_groups[0]["lr"]
    sched = build(glr, opt)
    sched.load_state_dict(pickle.loads(sched_state))
    assert opt.param_groups[0]["lr"] is lr
    rows += _run(sched, opt, 12, 40)
    _assert_same(rows, ref_rows)
