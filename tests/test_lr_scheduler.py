"""Tests of genesis.optim.lr_scheduler against torch.optim.lr_scheduler.

Each genesis scheduler drives a genesis optimizer (or a torch one) with two param groups of
different base lr, side by side with the same torch scheduler on a torch optimizer; the
learning rates (and cycled momentum) must agree within 1e-12 relative at every one of 300
steps.  Resuming from a checkpoint in either order is tested in test_lr_scheduler_resume.py.
"""

import ast
import copy
import io
import math
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as tlr

import genesis
from genesis.optim import SGD, Adam, AdamW, RMSprop
from genesis.optim import lr_scheduler as glr

N_STEPS = 300
GROUP_LRS = (0.1, 0.02)
REL = 1e-12


def _groups():
    """Two float64 param groups with different lr; every parameter has a gradient."""
    params = []
    for i in range(2):
        p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64) * (i + 1))
        p.grad = torch.linspace(0.3, -0.2, 6, dtype=torch.float64)
        params.append(p)
    return [{"params": [p], "lr": lr} for p, lr in zip(params, GROUP_LRS)]


# name -> (optimizer under the genesis scheduler, torch reference optimizer of the same kind)
OPTIMIZERS = {
    "torch.SGD": (
        lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9),
        lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9),
    ),
    "SGD": (lambda g: SGD(g, lr=0.1, momentum=0.9), lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9)),
    "Adam": (lambda g: Adam(g), lambda g: torch.optim.Adam(g)),
    "AdamW": (lambda g: AdamW(g), lambda g: torch.optim.AdamW(g)),
    "RMSprop": (lambda g: RMSprop(g), lambda g: torch.optim.RMSprop(g)),
}


class _ScaleByCycle:
    """A callable object as CyclicLR scale_fn: its attributes go into the state_dict."""

    def __init__(self, decay):
        self.decay = decay

    def __call__(self, x):
        return 1.0 / (1.0 + self.decay * x)


# name -> builder(scheduler module, optimizer); every builder works with either module.
SCHEDULERS = {
    "LambdaLR": lambda m, o: m.LambdaLR(o, [lambda e: 0.97**e, lambda e: 1.0 / (1.0 + 0.05 * e)]),
    "MultiplicativeLR": lambda m, o: m.MultiplicativeLR(o, lambda e: 0.995 if e % 3 else 0.98),
    "StepLR": lambda m, o: m.StepLR(o, step_size=7, gamma=0.8),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[10, 50, 50, 120, 299], gamma=0.3),
    "ConstantLR": lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=40),
    "LinearLR": lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=100),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0.99),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o, total_iters=200, power=2.0),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=70, eta_min=1e-4),
    "CosineAnnealingLR-Tmax7": lambda m, o: m.CosineAnnealingLR(o, T_max=7),
    "CosineAnnealingWarmRestarts-Tmult1": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=25, eta_min=1e-4),
    "CosineAnnealingWarmRestarts-Tmult2": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-4),
    "OneCycleLR-cos": lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.05], total_steps=N_STEPS),
    "OneCycleLR-linear": lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, total_steps=N_STEPS, pct_start=0.25, anneal_strategy="linear"
    ),
    "OneCycleLR-three-phase": lambda m, o: m.OneCycleLR(
        o, max_lr=[0.5, 0.05], epochs=10, steps_per_epoch=30, three_phase=True, base_momentum=[0.8, 0.85]
    ),
    "CyclicLR-triangular": lambda m, o: m.CyclicLR(
        o, base_lr=[0.01, 0.001], max_lr=[0.1, 0.02], step_size_up=20, step_size_down=30
    ),
    "CyclicLR-triangular2": lambda m, o: m.CyclicLR(
        o, base_lr=[0.01, 0.001], max_lr=[0.1, 0.02], step_size_up=25, mode="triangular2"
    ),
    "CyclicLR-exp_range": lambda m, o: m.CyclicLR(
        o, base_lr=0.01, max_lr=[0.1, 0.02], step_size_up=15, mode="exp_range", gamma=0.995
    ),
    "CyclicLR-scale_fn": lambda m, o: m.CyclicLR(
        o, base_lr=0.01, max_lr=0.1, step_size_up=12, scale_fn=_ScaleByCycle(0.5), cycle_momentum=False
    ),
    "SequentialLR": lambda m, o: m.SequentialLR(
        o,
        [m.LinearLR(o, start_factor=0.1, total_iters=30), m.ExponentialLR(o, gamma=0.99), m.StepLR(o, 20, 0.5)],
        milestones=[30, 150],
    ),
    "ChainedScheduler": lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.1, total_iters=20), m.ExponentialLR(o, gamma=0.99), m.MultiStepLR(o, [100, 200])]
    ),
    # Linear warm-up then cosine decay, composed (the cosine scales the warmed-up rate).
    "WarmupCosine": lambda m, o: m.ChainedScheduler(
        [m.LinearLR(o, start_factor=0.05, total_iters=25), m.CosineAnnealingLR(o, T_max=N_STEPS, eta_min=1e-5)]
    ),
}


def _momentum(group):
    """The momentum a scheduler may cycle: beta1 for Adam-like groups, else 'momentum'."""
    return group["betas"][0] if "betas" in group else group.get("momentum")


def _observe(scheduler, optimizer):
    groups = optimizer.param_groups
    return {
        "last_lr": list(scheduler.get_last_lr()),
        "lr": [g["lr"] for g in groups],
        "initial_lr": [g.get("initial_lr") for g in groups],
        "momentum": [_momentum(g) for g in groups],
        "last_epoch": getattr(scheduler, "last_epoch", None),
    }


def _drive(scheduler, optimizer, n_steps):
    """Observe after construction, then after each of n_steps optimizer+scheduler steps."""
    rows = [_observe(scheduler, optimizer)]
    for _ in range(n_steps):
        optimizer.step()
        scheduler.step()
        rows.append(_observe(scheduler, optimizer))
    return rows


def _close(a, b):
    """Equal within REL relative (None only equals None)."""
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=REL, abs_tol=0.0)


def _assert_rows_match(rows, ref_rows):
    assert len(rows) == len(ref_rows)
    for step, (row, ref) in enumerate(zip(rows, ref_rows)):
        for key in ("last_lr", "lr", "initial_lr", "momentum"):
            assert len(row[key]) == len(ref[key]), (step, key)
            for i, (a, b) in enumerate(zip(row[key], ref[key])):
                assert _close(a, b), f"step {step}, {key}[{i}]: genesis {a!r} != torch {b!r}"


# ----------------------------------------------------------------------------------------------
# Side by side with torch
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("sched_name", list(SCHEDULERS))
def test_matches_torch_for_300_steps(sched_name, opt_name):
    make_opt, make_ref_opt = OPTIMIZERS[opt_name]
    build = SCHEDULERS[sched_name]
    opt, ref_opt = make_opt(_groups()), make_ref_opt(_groups())
    sched, ref_sched = build(glr, opt), build(tlr, ref_opt)

    rows, ref_rows = _drive(sched, opt, N_STEPS), _drive(ref_sched, ref_opt, N_STEPS)

    _assert_rows_match(rows, ref_rows)
    if not isinstance(sched, glr.ChainedScheduler):  # torch's ChainedScheduler has no last_epoch
        assert [r["last_epoch"] for r in rows] == [r["last_epoch"] for r in ref_rows]
    # The schedule really moved the rates, and recorded initial_lr in each group.
    assert len({tuple(r["lr"]) for r in rows}) >= 2
    assert all(None not in r["initial_lr"] for r in rows)


def test_chained_scheduler_counts_steps():
    opt = SGD(_groups(), lr=0.1)
    sched = SCHEDULERS["ChainedScheduler"](glr, opt)
    assert sched.last_epoch == 0
    for _ in range(7):
        opt.step()
        sched.step()
    assert sched.last_epoch == 7
    assert sched._schedulers[0].last_epoch == 7


# CosineAnnealingLR updates recursively as torch's does, lr_t = f(lr_{t-1}); on its own that
# follows the closed form eta_min + (base_lr - eta_min)*(1 + cos(pi*t/T_max))/2
# (docs/semantics.md#learning-rate-schedulers) up to rounding, within 1e-12 relative in these cases.
COSINE_CASES = [(70, 1e-4), (7, 0.0), (300, 1e-3), (1, 0.0)]


def _cosine_closed_form(base_lr, eta_min, t, T_max):
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("T_max,eta_min", COSINE_CASES)
def test_cosine_annealing_follows_closed_form(T_max, eta_min, opt_name):
    opt = OPTIMIZERS[opt_name][0](_groups())
    sched = glr.CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min)
    rows = _drive(sched, opt, N_STEPS)
    for t, row in enumerate(rows):
        assert row["last_epoch"] == t
        for base_lr, lr, last in zip(GROUP_LRS, row["lr"], row["last_lr"]):
            expected = _cosine_closed_form(base_lr, eta_min, t, T_max)
            assert _close(lr, expected) and lr == last, (t, lr, expected)
    if 2 * T_max <= N_STEPS:  # past T_max the cosine continues: back at base_lr at 2*T_max
        assert _close(rows[2 * T_max]["lr"][0], GROUP_LRS[0])


@pytest.mark.parametrize("T_max,eta_min", COSINE_CASES)
def test_cosine_annealing_is_torch_recursion_exactly(T_max, eta_min):
    opt, ref_opt = SGD(_groups(), lr=0.1), torch.optim.SGD(_groups(), lr=0.1)
    rows = _drive(glr.CosineAnnealingLR(opt, T_max, eta_min), opt, N_STEPS)
    ref_rows = _drive(tlr.CosineAnnealingLR(ref_opt, T_max, eta_min), ref_opt, N_STEPS)
    assert [r["lr"] for r in rows] == [r["lr"] for r in ref_rows]
    assert [r["last_epoch"] for r in rows] == [r["last_epoch"] for r in ref_rows]


def test_cosine_annealing_composes_with_a_rate_changed_by_hand():
    """A rate set by hand mid-run is annealed from (as torch does), not overwritten by the
    closed form."""
    rows = {}
    for m, make_opt in ((glr, SGD), (tlr, torch.optim.SGD)):
        opt = make_opt(_groups(), lr=0.1)
        sched = m.CosineAnnealingLR(opt, T_max=40, eta_min=1e-3)
        rows[m] = _drive(sched, opt, 10)
        for g in opt.param_groups:
            g["lr"] *= 0.5
        rows[m] += _drive(sched, opt, 50)[1:]
    _assert_rows_match(rows[glr], rows[tlr])
    closed_form = _cosine_closed_form(GROUP_LRS[0], 1e-3, 11, 40)
    assert rows[glr][11]["lr"][0] < 0.6 * closed_form


def test_cosine_annealing_in_sequential_lr_restarts_from_base_lr():
    opt, ref_opt = SGD(_groups(), lr=0.1), torch.optim.SGD(_groups(), lr=0.1)

    def build(m, o):
        return m.SequentialLR(o, [m.ConstantLR(o, 0.1, 10), m.CosineAnnealingLR(o, T_max=50)], milestones=[10])

    rows, ref_rows = _drive(build(glr, opt), opt, 100), _drive(build(tlr, ref_opt), ref_opt, 100)
    for row, ref in zip(rows, ref_rows):
        for base_lr, a, b in zip(GROUP_LRS, row["lr"], ref["lr"]):
            assert abs(a - b) <= 1e-11 * base_lr
    assert rows[10]["lr"] == list(GROUP_LRS)  # the milestone restarts the cosine at t=0
    assert _close(rows[35]["lr"][1], _cosine_closed_form(GROUP_LRS[1], 0.0, 25, 50))
    _assert_rows_match(rows, ref_rows)


def test_tensor_learning_rate_is_filled_in_place():
    # torch optimizers accept a tensor lr; the scheduler must keep the tensor's identity.
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))]
    groups = [{"params": [params[0]], "lr": torch.tensor(0.1)}, {"params": [params[1]], "lr": torch.tensor(0.02)}]
    ref_groups = copy.deepcopy(groups)
    opt, ref_opt = torch.optim.Adam(groups), torch.optim.Adam(ref_groups)
    lr_tensors = [g["lr"] for g in opt.param_groups]
    sched, ref_sched = glr.StepLR(opt, 3, 0.5), tlr.StepLR(ref_opt, 3, 0.5)
    for _ in range(10):
        opt.step()
        ref_opt.step()
        sched.step()
        ref_sched.step()
    assert all(g["lr"] is t for g, t in zip(opt.param_groups, lr_tensors))
    last = sched.get_last_lr()
    assert all(isinstance(v, torch.Tensor) and v is not t for v, t in zip(last, lr_tensors))
    assert [float(v) for v in last] == [float(v) for v in ref_sched.get_last_lr()]


# ----------------------------------------------------------------------------------------------
# The schedule reaches the optimizer's update
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opt_name", ["SGD", "Adam", "AdamW", "RMSprop"])
@pytest.mark.parametrize("sched_name", ["StepLR", "OneCycleLR-cos", "CyclicLR-triangular2"])
def test_optimizer_uses_scheduled_hyperparameters(sched_name, opt_name):
    """Same parameters as torch after 300 scheduled steps: the optimizer reads the lr (and the
    cycled momentum / beta1) that the scheduler writes, at every step."""
    make_opt, make_ref_opt = OPTIMIZERS[opt_name]
    groups, ref_groups = _groups(), _groups()
    opt, ref_opt = make_opt(groups), make_ref_opt(ref_groups)
    sched, ref_sched = SCHEDULERS[sched_name](glr, opt), SCHEDULERS[sched_name](tlr, ref_opt)
    params = [g["params"][0] for g in groups]
    ref_params = [g["params"][0] for g in ref_groups]
    with torch.no_grad():
        for step in range(N_STEPS):
            for p in params + ref_params:  # a gradient that changes with the parameter
                p.grad = 2.0 * (p - 0.5) + 0.01 * step
            opt.step()
            ref_opt.step()
            sched.step()
            ref_sched.step()
    for p, ref in zip(params, ref_params):
        torch.testing.assert_close(p.detach(), ref.detach(), rtol=1e-7, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# ReduceLROnPlateau
# ----------------------------------------------------------------------------------------------


def _loss_sequence():
    """300 losses: an improving trend with plateaus, small relative improvements and spikes."""
    losses = []
    for i in range(N_STEPS):
        level = 1.0 / (1 + i // 25)  # a new, better plateau every 25 evaluations
        wiggle = 1e-5 * ((i * 7) % 5)  # improvements below a relative 1e-4
        spike = 0.3 if i % 37 == 0 else 0.0
        losses.append(level + wiggle + spike)
    return losses


PLATEAU_CASES = [
    dict(mode="min"),
    dict(mode="min", patience=3, factor=0.5, threshold=1e-3),
    dict(mode="min", patience=2, threshold_mode="abs", threshold=1e-4, cooldown=4),
    dict(mode="max", patience=4, factor=0.3, cooldown=2, min_lr=1e-3),
    dict(mode="max", patience=1, threshold_mode="abs", threshold=0.05, min_lr=[1e-3, 1e-4]),
    dict(mode="min", patience=0, factor=0.9, eps=1e-3),
]


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("kwargs", PLATEAU_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_reduce_lr_on_plateau_matches_torch(kwargs, opt_name):
    make_opt, make_ref_opt = OPTIMIZERS[opt_name]
    opt, ref_opt = make_opt(_groups()), make_ref_opt(_groups())
    sched, ref_sched = glr.ReduceLROnPlateau(opt, **kwargs), tlr.ReduceLROnPlateau(ref_opt, **kwargs)
    reductions = 0
    for loss in _loss_sequence():
        metric = loss if kwargs["mode"] == "min" else 2.0 - loss  # an accuracy-like metric
        opt.step()
        ref_opt.step()
        before = [g["lr"] for g in opt.param_groups]
        sched.step(metric)
        ref_sched.step(metric)
        reductions += [g["lr"] for g in opt.param_groups] != before
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]
        assert sched.get_last_lr() == ref_sched.get_last_lr()
        for attr in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
            assert getattr(sched, attr) == getattr(ref_sched, attr), attr
    assert reductions > 0
    min_lrs = kwargs.get("min_lr", 0)
    min_lrs = min_lrs if isinstance(min_lrs, list) else [min_lrs] * 2
    assert all(g["lr"] >= m for g, m in zip(opt.param_groups, min_lrs))


def test_reduce_lr_on_plateau_hand_computed():
    opt = SGD(_groups(), lr=0.1)
    sched = glr.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2, cooldown=1, min_lr=0.006)
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85]
    lrs = []
    for loss in losses:
        opt.step()
        sched.step(loss)
        lrs.append(sched.get_last_lr())
    # Best 0.9 at epoch 2; epochs 3-5 are bad and the third (> patience=2) halves the lr.
    # Epoch 6 is the cooldown (ignored); epochs 7-9 would be bad again, but epoch 9 (0.8)
    # improves, so no reduction follows; epochs 10-12 are bad and the third reduces again,
    # group 0 to 0.025 and group 1 to its floor min_lr = 0.006 (0.005 would be below it).
    expected = [[0.1, 0.02]] * 4 + [[0.05, 0.01]] * 7 + [[0.025, 0.006]]
    assert len(lrs) == len(expected)
    for got, want in zip(lrs, expected):
        assert got == pytest.approx(want, rel=1e-15)
    assert sched.best == 0.8 and sched.last_epoch == len(losses)


def test_reduce_lr_on_plateau_rel_versus_abs_threshold():
    def bad_epochs(threshold_mode, mode, values):
        opt = SGD(_groups(), lr=0.1)
        sched = glr.ReduceLROnPlateau(opt, mode=mode, threshold=1e-3, threshold_mode=threshold_mode, patience=10)
        for v in values:
            sched.step(v)
        return sched.num_bad_epochs

    # From 10.0, 9.995 improves by 5e-3 absolute (> abs 1e-3) but 5e-4 relative (< rel 1e-3).
    assert bad_epochs("abs", "min", [10.0, 9.995]) == 0
    assert bad_epochs("rel", "min", [10.0, 9.995]) == 1
    assert bad_epochs("abs", "max", [10.0, 10.005]) == 0
    assert bad_epochs("rel", "max", [10.0, 10.005]) == 1
    # The metric may be a 0-dim tensor or a NumPy scalar.
    assert bad_epochs("rel", "min", [torch.tensor(1.0), np.float64(0.5), np.float32(0.6)]) == 1


def test_reduce_lr_on_plateau_records_initial_lr_and_keeps_rates():
    opt = SGD(_groups(), lr=0.1)
    sched = glr.ReduceLROnPlateau(opt)
    assert [g["initial_lr"] for g in opt.param_groups] == list(GROUP_LRS)
    assert [g["lr"] for g in opt.param_groups] == list(GROUP_LRS)
    assert sched.get_last_lr() == list(GROUP_LRS) and sched.last_epoch == 0


# ----------------------------------------------------------------------------------------------
# state_dict round trip
# ----------------------------------------------------------------------------------------------


def _resume(build, make_opt, sched_state, opt_state):
    """Resume as a training script does: new optimizer and scheduler, then load both states."""
    opt = make_opt(_groups())
    sched = build(glr, opt)  # before the optimizer's load_state_dict, which restores the rates
    opt.load_state_dict(opt_state)
    sched.load_state_dict(sched_state)
    return sched, opt


ROUND_TRIP_SCHEDULERS = SCHEDULERS


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("sched_name", list(ROUND_TRIP_SCHEDULERS))
def test_state_dict_round_trip_continues_identically(sched_name, opt_name):
    make_opt = OPTIMIZERS[opt_name][0]
    build = ROUND_TRIP_SCHEDULERS[sched_name]
    opt = make_opt(_groups())
    sched = build(glr, opt)
    _drive(sched, opt, 137)

    state = sched.state_dict()
    # The state is plain data (pickles without the optimizer or any lambda) ...
    saved = pickle.loads(pickle.dumps(state))
    opt_state = copy.deepcopy(opt.state_dict())
    # ... a snapshot: stepping on does not change it ...
    frozen = pickle.dumps(state)
    rows = _drive(sched, opt, N_STEPS - 137)[1:]
    assert pickle.dumps(state) == frozen
    # ... and independent of the scheduler: editing it does not reach the scheduler.
    for key in ("base_lrs", "_last_lr"):  # composite schedulers have no base_lrs
        if key in state:
            state[key][0] = 123.0
    assert 123.0 not in getattr(sched, "base_lrs", []) + sched.get_last_lr()

    resumed, resumed_opt = _resume(build, make_opt, saved, opt_state)
    resumed_rows = _drive(resumed, resumed_opt, N_STEPS - 137)[1:]
    assert resumed_rows == rows  # exactly


@pytest.mark.parametrize("sched_name", list(ROUND_TRIP_SCHEDULERS))
def test_checkpoint_with_genesis_save_resumes_identically(sched_name):
    """Scheduler and optimizer state in one genesis.save checkpoint
    (docs/semantics.md#checkpoints)."""
    build = ROUND_TRIP_SCHEDULERS[sched_name]
    make_opt = OPTIMIZERS["SGD"][0]
    opt = make_opt(_groups())
    sched = build(glr, opt)
    _drive(sched, opt, 90)
    buffer = io.BytesIO()
    genesis.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = genesis.load(buffer)
    assert checkpoint["scheduler"] == sched.state_dict()

    resumed, resumed_opt = _resume(build, make_opt, checkpoint["scheduler"], checkpoint["optimizer"])
    assert _drive(resumed, resumed_opt, 60) == _drive(sched, opt, 60)


RESUMABLE = {
    "LambdaLR": lambda m, o, e: m.LambdaLR(o, lambda t: 0.97**t, last_epoch=e),
    "MultiplicativeLR": lambda m, o, e: m.MultiplicativeLR(o, lambda t: 0.99, last_epoch=e),
    "StepLR": lambda m, o, e: m.StepLR(o, 7, 0.8, last_epoch=e),
    "MultiStepLR": lambda m, o, e: m.MultiStepLR(o, [10, 60, 60, 90], 0.3, last_epoch=e),
    "ConstantLR": lambda m, o, e: m.ConstantLR(o, 0.25, 70, last_epoch=e),
    "LinearLR": lambda m, o, e: m.LinearLR(o, 0.1, 0.9, 100, last_epoch=e),
    "ExponentialLR": lambda m, o, e: m.ExponentialLR(o, 0.99, last_epoch=e),
    "PolynomialLR": lambda m, o, e: m.PolynomialLR(o, 120, 2.0, last_epoch=e),
    "CosineAnnealingWarmRestarts": lambda m, o, e: m.CosineAnnealingWarmRestarts(o, 10, 2, 1e-4, last_epoch=e),
    "OneCycleLR": lambda m, o, e: m.OneCycleLR(o, [0.5, 0.05], total_steps=N_STEPS, last_epoch=e),
    "CyclicLR": lambda m, o, e: m.CyclicLR(o, [0.01, 0.001], 0.1, 20, mode="triangular2", last_epoch=e),
}


@pytest.mark.parametrize("sched_name", list(RESUMABLE))
def test_resume_with_last_epoch_matches_torch(sched_name):
    """Re-creating a scheduler with last_epoch=k on an optimizer that ran k steps (torch's
    older resume recipe) continues like torch, quirks included."""
    build = RESUMABLE[sched_name]
    opt, ref_opt = SGD(_groups(), lr=0.1, momentum=0.9), torch.optim.SGD(_groups(), lr=0.1, momentum=0.9)
    _drive(build(glr, opt, -1), opt, 50)
    _drive(build(tlr, ref_opt, -1), ref_opt, 50)
    sched, ref_sched = build(glr, opt, 49), build(tlr, ref_opt, 49)
    rows, ref_rows = _drive(sched, opt, 100), _drive(ref_sched, ref_opt, 100)
    _assert_rows_match(rows, ref_rows)
    assert [r["last_epoch"] for r in rows] == [r["last_epoch"] for r in ref_rows]
    assert rows[0]["last_epoch"] == 50


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_reduce_lr_on_plateau_state_dict_round_trip(opt_name):
    make_opt = OPTIMIZERS[opt_name][0]
    kwargs = dict(mode="max", patience=2, cooldown=3, factor=0.5, threshold_mode="abs", min_lr=[1e-3, 1e-4])
    losses = [2.0 - x for x in _loss_sequence()]
    opt = make_opt(_groups())
    sched = glr.ReduceLROnPlateau(opt, **kwargs)
    for loss in losses[:150]:
        sched.step(loss)
    saved = pickle.loads(pickle.dumps(sched.state_dict()))
    opt_state = copy.deepcopy(opt.state_dict())

    resumed, resumed_opt = _resume(lambda m, o: m.ReduceLROnPlateau(o, **kwargs), make_opt, saved, opt_state)
    for loss in losses[150:]:
        sched.step(loss)
        resumed.step(loss)
        assert resumed.get_last_lr() == sched.get_last_lr()
        assert [g["lr"] for g in resumed_opt.param_groups] == [g["lr"] for g in opt.param_groups]
        assert (resumed.best, resumed.num_bad_epochs, resumed.cooldown_counter) == (
            sched.best,
            sched.num_bad_epochs,
            sched.cooldown_counter,
        )
    assert sched.get_last_lr() != list(GROUP_LRS)


def test_load_state_dict_leaves_argument_unchanged_and_restores_callable_objects():
    opt = SGD(_groups(), lr=0.1, momentum=0.9)
    sched = SCHEDULERS["CyclicLR-scale_fn"](glr, opt)
    sched._scale_fn_custom.decay = 0.25
    state = sched.state_dict()
    assert state["_scale_fn_custom"] == {"decay": 0.25}
    snapshot = copy.deepcopy(state)

    other = SCHEDULERS["CyclicLR-scale_fn"](glr, SGD(_groups(), lr=0.1, momentum=0.9))
    other.load_state_dict(state)
    assert state == snapshot
    assert other._scale_fn_custom.decay == 0.25 and other._scale_fn_custom is not sched._scale_fn_custom

    lambda_sched = SCHEDULERS["LambdaLR"](glr, SGD(_groups(), lr=0.1))
    lambda_state = lambda_sched.state_dict()
    assert lambda_state["lr_lambdas"] == [None, None]  # plain lambdas are not saved
    lambda_sched.load_state_dict(lambda_state)
    assert "lr_lambdas" in lambda_state and callable(lambda_sched.lr_lambdas[0])

    # A composite scheduler's state must hold one state per wrapped scheduler.
    opt = SGD(_groups(), lr=0.1)
    three = SCHEDULERS["SequentialLR"](glr, opt).state_dict()
    two = glr.SequentialLR(opt, [glr.StepLR(opt, 2), glr.StepLR(opt, 3)], milestones=[5])
    with pytest.raises(ValueError, match="the state holds 3 schedulers, this SequentialLR has 2"):
        two.load_state_dict(three)


@pytest.mark.parametrize("sched_name", list(SCHEDULERS))
def test_loads_torch_scheduler_state(sched_name):
    """A torch scheduler's state_dict (same attribute names) resumes in genesis."""
    build = SCHEDULERS[sched_name]
    ref_opt = torch.optim.SGD(_groups(), lr=0.1, momentum=0.9)
    ref_sched = build(tlr, ref_opt)
    _drive(ref_sched, ref_opt, 100)

    opt = torch.optim.SGD(_groups(), lr=0.1, momentum=0.9)
    sched = build(glr, opt)
    opt.load_state_dict(ref_opt.state_dict())
    sched.load_state_dict(ref_sched.state_dict())
    _assert_rows_match(_drive(sched, opt, 100)[1:], _drive(ref_sched, ref_opt, 100)[1:])


# ----------------------------------------------------------------------------------------------
# Warnings
# ----------------------------------------------------------------------------------------------

ORDER_WARNING = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_warns_when_scheduler_steps_before_optimizer(opt_name):
    make_opt, make_ref_opt = OPTIMIZERS[opt_name]
    for module, opt in ((tlr, make_ref_opt(_groups())), (glr, make_opt(_groups()))):
        sched = module.StepLR(opt, step_size=2)
        with pytest.warns(UserWarning, match=ORDER_WARNING):
            sched.step()


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_no_warning_in_the_right_order(opt_name):
    opt = OPTIMIZERS[opt_name][0](_groups())
    sched = glr.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            opt.step()
            sched.step()
    assert sched.last_epoch == 5


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_optimizer_step_is_wrapped_once_and_still_works(opt_name):
    make_opt, make_ref_opt = OPTIMIZERS[opt_name]
    opt = make_opt(_groups())
    first = glr.StepLR(opt, 2)
    wrapped = opt.step
    second = glr.ExponentialLR(opt, 0.9)
    assert opt.step is wrapped  # a second scheduler reuses the wrapper
    ref_opt = make_ref_opt(_groups())
    ref_first, ref_second = tlr.StepLR(ref_opt, 2), tlr.ExponentialLR(ref_opt, 0.9)
    for _ in range(3):
        assert opt.step() is None
        ref_opt.step()
        for s in (first, second, ref_first, ref_second):
            s.step()
    # The wrapped step still updates the parameters (like the reference).
    for g, ref_g in zip(opt.param_groups, ref_opt.param_groups):
        torch.testing.assert_close(g["params"][0].detach(), ref_g["params"][0].detach())
    # A closure goes through the wrapper and its value comes back.
    assert opt.step(lambda: 3.5) == 3.5


def test_torch_and_genesis_schedulers_share_the_wrapper():
    opt = torch.optim.SGD(_groups(), lr=0.1)
    tlr.StepLR(opt, 2)
    wrapped = opt.step
    sched = glr.ExponentialLR(opt, 0.9)
    assert opt.step is wrapped
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
    assert sched.last_epoch == 1


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_warns_when_optimizer_step_is_replaced(opt_name):
    opt = OPTIMIZERS[opt_name][0](_groups())
    sched = glr.StepLR(opt, 2)
    opt.step = lambda closure=None: None
    opt.step()
    with pytest.warns(UserWarning, match=r"Seems like `optimizer\.step\(\)` has been overridden"):
        sched.step()


def test_a_step_function_stored_on_the_instance_is_tracked_too():
    opt = _PlainOptimizer(GROUP_LRS)
    calls = []
    opt.step = lambda closure=None: calls.append(closure)  # not a bound method
    sched = glr.ExponentialLR(opt, 0.5)
    with pytest.warns(UserWarning, match=ORDER_WARNING):
        sched.step()
    other_opt = _PlainOptimizer(GROUP_LRS)
    other_opt.step = lambda closure=None: calls.append(closure)
    other = glr.ExponentialLR(other_opt, 0.5)
    other_opt.step("closure")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other.step()
    assert calls == ["closure"] and other.get_last_lr() == [0.05, 0.01]


def test_warns_only_on_the_first_step():
    opt = SGD(_groups(), lr=0.1)
    sched = glr.ExponentialLR(opt, 0.5)
    with pytest.warns(UserWarning, match=ORDER_WARNING):
        sched.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
    assert sched.get_last_lr() == pytest.approx([0.025, 0.005])


def test_get_lr_outside_step_warns():
    opt = SGD(_groups(), lr=0.1)
    sched = glr.StepLR(opt, 2)
    with pytest.warns(UserWarning, match=r"please use `get_last_lr\(\)`"):
        assert sched.get_lr() == list(GROUP_LRS)


EPOCH_CASES = {
    "StepLR": lambda m, o: m.StepLR(o, 4, 0.5),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, [3, 9, 9], 0.5),
    "ConstantLR": lambda m, o: m.ConstantLR(o, 0.5, 6),
    "LinearLR": lambda m, o: m.LinearLR(o, 0.2, 0.8, 12),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, 0.9),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o, 20, 1.5),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, 15, 1e-3),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lambda e: 1.0 / (1 + e)),
}


@pytest.mark.parametrize("sched_name", list(EPOCH_CASES))
def test_step_with_epoch_warns_and_uses_closed_form(sched_name):
    build = EPOCH_CASES[sched_name]
    opt, ref_opt = SGD(_groups(), lr=0.1), torch.optim.SGD(_groups(), lr=0.1)
    sched, ref_sched = build(glr, opt), build(tlr, ref_opt)
    for epoch in (5, 17, 3, 40, 9, 12):
        opt.step()
        ref_opt.step()
        with pytest.warns(UserWarning, match="The epoch parameter in `scheduler.step\\(\\)` was not necessary"):
            sched.step(epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_sched.step(epoch)
        assert sched.last_epoch == ref_sched.last_epoch == epoch
        for a, b in zip(sched.get_last_lr(), ref_sched.get_last_lr()):
            assert _close(a, b)


@pytest.mark.parametrize("T_mult", [1, 2, 3])
def test_warm_restarts_fractional_epochs_match_torch(T_mult):
    opt, ref_opt = SGD(_groups(), lr=0.1), torch.optim.SGD(_groups(), lr=0.1)
    sched = glr.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=T_mult, eta_min=1e-3)
    ref_sched = tlr.CosineAnnealingWarmRestarts(ref_opt, T_0=3, T_mult=T_mult, eta_min=1e-3)
    iters = 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fractional epochs are the documented use: no warning
        for epoch in range(30):
            for i in range(iters):
                opt.step()
                ref_opt.step()
                sched.step(epoch + i / iters)
                ref_sched.step(epoch + i / iters)
                assert (sched.T_cur, sched.T_i, sched.last_epoch) == (
                    ref_sched.T_cur,
                    ref_sched.T_i,
                    ref_sched.last_epoch,
                )
                for a, b in zip(sched.get_last_lr(), ref_sched.get_last_lr()):
                    assert _close(a, b)
    with pytest.raises(ValueError, match="Expected non-negative epoch, but got -1"):
        sched.step(-1)


def test_reduce_lr_on_plateau_epoch_argument_warns():
    sched = glr.ReduceLROnPlateau(SGD(_groups(), lr=0.1))
    with pytest.warns(UserWarning, match="The epoch parameter"):
        sched.step(1.0, epoch=5)
    assert sched.last_epoch == 5


# ----------------------------------------------------------------------------------------------
# Errors: same type and message as torch
# ----------------------------------------------------------------------------------------------


def _step_n(sched, n):
    for _ in range(n):
        sched.optimizer.step()
        sched.step()


def _on_other_optimizer(m, o):
    """A scheduler list whose second member belongs to a different optimizer."""
    other = type(o)(_groups(), lr=0.1)
    return m.SequentialLR(o, [m.StepLR(o, 2), m.StepLR(other, 2)], milestones=[3])


ERROR_CASES = {
    "ConstantLR-factor": lambda m, o: m.ConstantLR(o, factor=1.5),
    "LinearLR-start": lambda m, o: m.LinearLR(o, start_factor=0.0),
    "LinearLR-end": lambda m, o: m.LinearLR(o, end_factor=1.5),
    "LambdaLR-count": lambda m, o: m.LambdaLR(o, [lambda e: 1.0] * 3),
    "MultiplicativeLR-not-callable": lambda m, o: m.MultiplicativeLR(o, 0.9),
    "WarmRestarts-T_0": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=0),
    "WarmRestarts-T_0-float": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=2.5),
    "WarmRestarts-T_mult": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0),
    "WarmRestarts-eta_min": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, eta_min="0"),
    "OneCycleLR-no-steps": lambda m, o: m.OneCycleLR(o, max_lr=0.1),
    "OneCycleLR-total_steps": lambda m, o: m.OneCycleLR(o, max_lr=0.1, total_steps=0),
    "OneCycleLR-epochs": lambda m, o: m.OneCycleLR(o, max_lr=0.1, epochs=0, steps_per_epoch=3),
    "OneCycleLR-steps_per_epoch": lambda m, o: m.OneCycleLR(o, max_lr=0.1, epochs=2, steps_per_epoch=-1),
    "OneCycleLR-pct_start": lambda m, o: m.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5),
    "OneCycleLR-pct_start-int": lambda m, o: m.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=0),
    "OneCycleLR-anneal": lambda m, o: m.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"),
    "OneCycleLR-max_lr-count": lambda m, o: m.OneCycleLR(o, max_lr=[0.1], total_steps=10),
    "OneCycleLR-past-end": lambda m, o: _step_n(m.OneCycleLR(o, max_lr=0.1, total_steps=10), 11),
    "CyclicLR-mode": lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, mode="sawtooth"),
    "CyclicLR-base_lr-count": lambda m, o: m.CyclicLR(o, base_lr=[0.01] * 3, max_lr=0.1),
    "CyclicLR-momentum-count": lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, max_momentum=[0.9]),
    "ReduceLROnPlateau-factor": lambda m, o: m.ReduceLROnPlateau(o, factor=1.0),
    "ReduceLROnPlateau-mode": lambda m, o: m.ReduceLROnPlateau(o, mode="avg"),
    "ReduceLROnPlateau-threshold_mode": lambda m, o: m.ReduceLROnPlateau(o, threshold_mode="pct"),
    "ReduceLROnPlateau-min_lr-count": lambda m, o: m.ReduceLROnPlateau(o, min_lr=[0.1]),
    "SequentialLR-empty": lambda m, o: m.SequentialLR(o, [], milestones=[]),
    "SequentialLR-milestones": lambda m, o: m.SequentialLR(o, [m.StepLR(o, 2), m.StepLR(o, 3)], milestones=[]),
    "SequentialLR-plateau": lambda m, o: m.SequentialLR(o, [m.StepLR(o, 2), m.ReduceLROnPlateau(o)], [3]),
    "SequentialLR-not-a-scheduler": lambda m, o: m.SequentialLR(o, [m.StepLR(o, 2), object()], [3]),
    "ChainedScheduler-empty": lambda m, o: m.ChainedScheduler([]),
    "ChainedScheduler-plateau": lambda m, o: m.ChainedScheduler([m.ReduceLROnPlateau(o)]),
    "not-an-optimizer": lambda m, o: m.StepLR(object(), 2),
}
# Messages that embed an object's repr (which differs between the libraries) or that genesis
# words for itself: only the exception type is compared.
TYPE_ONLY_ERRORS = {
    "SequentialLR-other-optimizer": _on_other_optimizer,
    "resume-without-initial_lr": lambda m, o: m.StepLR(o, 2, last_epoch=5),
}


@pytest.mark.parametrize("case", list(ERROR_CASES) + list(TYPE_ONLY_ERRORS))
def test_errors_match_torch(case):
    build = ERROR_CASES.get(case) or TYPE_ONLY_ERRORS[case]
    with pytest.raises(Exception) as ref_err:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build(tlr, torch.optim.SGD(_groups(), lr=0.1, momentum=0.9))
    with pytest.raises(type(ref_err.value)) as err:
        build(glr, SGD(_groups(), lr=0.1, momentum=0.9))
    assert type(err.value) is type(ref_err.value)
    if case in ERROR_CASES:
        assert str(err.value) == str(ref_err.value)


class _PlainOptimizer:
    """The least a scheduler needs: param_groups and step.  No momentum, no betas."""

    def __init__(self, lrs, params=()):
        self.param_groups = [{"params": list(params), "lr": lr} for lr in lrs]
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1


def test_momentum_cycling_needs_momentum_or_betas():
    message = "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
    ref_opt = torch.optim.Adagrad([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match=message):
        tlr.CyclicLR(ref_opt, base_lr=0.01, max_lr=0.1)
    for build in (
        lambda o: glr.CyclicLR(o, base_lr=0.01, max_lr=0.1),
        lambda o: glr.OneCycleLR(o, max_lr=0.1, total_steps=10),
    ):
        with pytest.raises(ValueError, match=message):
            build(_PlainOptimizer([0.1, 0.02]))
    # Without momentum cycling a plain optimizer is enough.
    opt = _PlainOptimizer([0.1, 0.02])
    sched = glr.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=4, cycle_momentum=False)
    _step_n(sched, 4)
    assert opt.steps == 4 and sched.get_last_lr() == pytest.approx([0.1, 0.1])


def test_reduce_lr_on_plateau_after_a_group_is_added():
    def run(m, make_opt, min_lr):
        opt = make_opt(_groups(), lr=0.1)
        sched = m.ReduceLROnPlateau(opt, patience=0, min_lr=min_lr)
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.5})
        sched.step(1.0)
        sched.step(2.0)  # a bad epoch: reduce
        return [g["lr"] for g in opt.param_groups]

    assert run(glr, SGD, 0.0) == pytest.approx([0.01, 0.002, 0.05])
    with pytest.raises(RuntimeError) as ref_err:
        run(tlr, torch.optim.SGD, [0.0, 0.0])
    with pytest.raises(RuntimeError) as err:
        run(glr, SGD, [0.0, 0.0])
    assert str(err.value) == str(ref_err.value)


def test_works_without_torch():
    """The schedulers need only an object with param_groups and step; torch stays optional."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from genesis.optim import lr_scheduler\n"
        "class Opt:\n"
        "    param_groups = [{'lr': 0.1, 'momentum': 0.9}, {'lr': 0.02, 'momentum': 0.9}]\n"
        "    def step(self):\n"
        "        pass\n"
        "opt = Opt()\n"
        "sched = lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2)\n"
        "opt.step()\n"
        "sched.step()\n"
        "print(repr((sched.get_last_lr(), opt.param_groups[0]['momentum'])))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lrs, momentum = ast.literal_eval(result.stdout)
    assert lrs == pytest.approx([0.055, 0.055]) and momentum == pytest.approx(0.85)


def test_param_group_added_after_the_scheduler():
    """As in torch: schedules computed from the current rates extend to the new group;
    schedules computed from per-group lists raise ValueError."""
    for module, opt in ((tlr, torch.optim.SGD(_groups(), lr=0.1)), (glr, SGD(_groups(), lr=0.1))):
        exponential, lambdas = module.ExponentialLR(opt, 0.5), module.LambdaLR(opt, lambda e: 1.0)
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.4})
        opt.step()
        exponential.step()
        assert exponential.get_last_lr() == pytest.approx([0.05, 0.01, 0.2])
        with pytest.raises(ValueError):
            lambdas.step()


# ----------------------------------------------------------------------------------------------
# Per-step cost
# ----------------------------------------------------------------------------------------------


class _Uncopyable:
    """A parameter stand-in that fails the test if anything copies or pickles it."""

    def __copy__(self):
        raise AssertionError("a scheduler copied a parameter")

    def __deepcopy__(self, memo):
        raise AssertionError("a scheduler deep-copied a parameter")

    def __reduce_ex__(self, protocol):
        raise AssertionError("a scheduler pickled a parameter")


def _big_plain_optimizer(n_params):
    opt = _PlainOptimizer(GROUP_LRS, params=[_Uncopyable()] * n_params)
    for g in opt.param_groups:
        g["momentum"] = 0.9
    return opt


@pytest.mark.parametrize("sched_name", list(ROUND_TRIP_SCHEDULERS))
def test_step_and_state_dict_never_copy_the_optimizer(sched_name):
    opt = _big_plain_optimizer(1000)
    sched = ROUND_TRIP_SCHEDULERS[sched_name](glr, opt)
    _step_n(sched, N_STEPS)
    state = pickle.dumps(sched.state_dict())  # would raise on a reference to a parameter
    assert opt.steps == N_STEPS and len(state) < 20_000


class _UntouchableParams(list):
    """A group's parameter list that fails the test if a scheduler looks into it: whatever a
    scheduler does per step must not depend on the model's size."""

    def _touched(self, *args, **kwargs):
        raise AssertionError("a scheduler step looked at the parameters")

    __iter__ = __getitem__ = __len__ = __contains__ = __copy__ = __deepcopy__ = _touched
    __reduce_ex__ = _touched


TOUCH_FREE = ["StepLR", "LambdaLR", "OneCycleLR-cos", "CyclicLR-triangular2", "SequentialLR", "ChainedScheduler"]


@pytest.mark.parametrize("sched_name", TOUCH_FREE)
def test_step_never_looks_at_the_parameters(sched_name):
    """The scheduler's per-step work is a few float operations per group, independent of the
    model's size: it never iterates, copies or pickles a group's parameter list."""
    opt = _PlainOptimizer(GROUP_LRS)
    for g in opt.param_groups:
        g["momentum"] = 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the optimizer is not stepped here
        sched = SCHEDULERS[sched_name](glr, opt)
        for g in opt.param_groups:
            g["params"] = _UntouchableParams()
        _step_n(sched, 50)
        pickle.dumps(sched.state_dict())
    assert opt.steps == 50 and sched.last_epoch >= 50
