"""Exact resume from a genesis checkpoint (docs/semantics.md#the-optimizer-interface,
docs/semantics.md#learning-rate-schedulers and docs/semantics.md#checkpoints).

Train 10 steps, ``genesis.save`` the model, optimizer and scheduler state_dicts, rebuild
everything from scratch, ``genesis.load`` and load them back, train 10 more: the parameters are
bit-identical to those of an uninterrupted 20-step run. Also: a float32 checkpoint loaded into
float64 parameters is cast (``step`` stays a count), and the same exact resume with NumPy
parameters (``genesis.nn.Parameter``) whose state_dict ``step`` is a Python float.
"""

import numpy as np
import pytest
import torch
from torch import nn

import genesis
from genesis.nn import Parameter
from genesis.optim import SGD, Adam, AdamW, RMSprop
from genesis.optim.lr_scheduler import CosineAnnealingLR, StepLR

STEPS = 20
SPLIT = 10

# Each factory gets two param groups (weights, biases) so that state indices span groups.
OPTIMIZERS = {
    "sgd": lambda groups: SGD(groups, lr=0.1),
    "sgd_momentum": lambda groups: SGD(groups, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    "sgd_nesterov": lambda groups: SGD(groups, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda groups: Adam(groups, lr=0.01, weight_decay=1e-3),
    "adam_amsgrad": lambda groups: Adam(groups, lr=0.01, amsgrad=True),
    "adamw": lambda groups: AdamW(groups, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda groups: RMSprop(groups, lr=0.01),
    "rmsprop_centered_momentum": lambda groups: RMSprop(
        groups, lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3
    ),
}

SCHEDULERS = {
    "steplr": lambda opt: StepLR(opt, step_size=3, gamma=0.5),
    "cosine": lambda opt: CosineAnnealingLR(opt, T_max=STEPS, eta_min=1e-4),
}

# State each optimizer must have created (and the checkpoint must carry).
EXPECTED_STATE = {
    "sgd": set(),
    "sgd_momentum": {"momentum_buffer"},
    "sgd_nesterov": {"momentum_buffer"},
    "adam": {"step", "exp_avg", "exp_avg_sq"},
    "adam_amsgrad": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
    "adamw": {"step", "exp_avg", "exp_avg_sq"},
    "rmsprop": {"step", "square_avg"},
    "rmsprop_centered_momentum": {"step", "square_avg", "grad_avg", "momentum_buffer"},
}


def make_batches(dtype=torch.float32):
    g = torch.Generator().manual_seed(1234)
    return [
        (torch.randn(8, 4, generator=g, dtype=dtype), torch.randn(8, 2, generator=g, dtype=dtype)) for _ in range(STEPS)
    ]


def build(opt_name, sched_name, seed, dtype=torch.float32):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = OPTIMIZERS[opt_name]([{"params": weights}, {"params": biases, "weight_decay": 0.0}])
    sched = SCHEDULERS[sched_name](opt)
    return model, opt, sched


def train(model, opt, sched, batches):
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def save_checkpoint(path, model, opt, sched):
    genesis.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, path)


def restore(path, model, opt, sched):
    ckpt = genesis.load(path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    return ckpt


def ordered_state(model, opt):
    """The optimizer state of each model parameter, in model order."""
    return [opt.state[p] if p in opt.state else {} for p in model.parameters()]


def assert_same_state(state_a, state_b):
    assert len(state_a) == len(state_b)
    for a, b in zip(state_a, state_b):
        assert set(a) == set(b)
        for name in a:
            assert type(a[name]) is type(b[name]), name
            if isinstance(a[name], torch.Tensor):
                assert a[name].dtype == b[name].dtype, name
                assert torch.equal(a[name], b[name]), name
            else:
                assert a[name] == b[name], name


# ------------------------------------------------------------------------ torch parameters


@pytest.mark.parametrize("sched_name", SCHEDULERS)
@pytest.mark.parametrize("opt_name", OPTIMIZERS)
def test_exact_resume(tmp_path, opt_name, sched_name):
    batches = make_batches()

    model_ref, opt_ref, sched_ref = build(opt_name, sched_name, seed=0)
    losses_ref = train(model_ref, opt_ref, sched_ref, batches)

    model_a, opt_a, sched_a = build(opt_name, sched_name, seed=0)
    losses_a = train(model_a, opt_a, sched_a, batches[:SPLIT])
    path = tmp_path / "checkpoint.genesis"
    save_checkpoint(path, model_a, opt_a, sched_a)

    # A fresh model (other initial weights), optimizer and scheduler, all restored from disk.
    model_b, opt_b, sched_b = build(opt_name, sched_name, seed=1)
    ckpt = restore(path, model_b, opt_b, sched_b)
    saved_state = ckpt["optimizer"]["state"]
    # The model's 4 tensors, indexed across both groups (plain SGD keeps no state at all).
    assert sorted(saved_state) == ([0, 1, 2, 3] if EXPECTED_STATE[opt_name] else [])
    for entries in saved_state.values():
        assert set(entries) == EXPECTED_STATE[opt_name]
        assert all(isinstance(v, torch.Tensor) for v in entries.values())
        if "step" in entries:
            assert entries["step"].dim() == 0 and entries["step"].dtype == torch.float32
            assert float(entries["step"]) == SPLIT
    assert [g["lr"] for g in opt_b.param_groups] == [g["lr"] for g in opt_a.param_groups]
    assert sched_b.last_epoch == sched_a.last_epoch == SPLIT
    assert sched_b.get_last_lr() == sched_a.get_last_lr()
    if EXPECTED_STATE[opt_name]:
        assert_same_state(ordered_state(model_b, opt_b), ordered_state(model_a, opt_a))

    losses_b = train(model_b, opt_b, sched_b, batches[SPLIT:])

    assert losses_a + losses_b == losses_ref
    for p_ref, p_b in zip(model_ref.parameters(), model_b.parameters()):
        assert torch.equal(p_ref, p_b)
    assert_same_state(ordered_state(model_b, opt_b), ordered_state(model_ref, opt_ref))
    assert sched_b.get_last_lr() == sched_ref.get_last_lr()
    assert [g["lr"] for g in opt_b.param_groups] == [g["lr"] for g in opt_ref.param_groups]
    # The run really trained (the comparison is not between two frozen models).
    assert losses_ref[-1] < losses_ref[0]
    assert not torch.equal(model_ref[0].weight, build(opt_name, sched_name, seed=0)[0][0].weight)


@pytest.mark.parametrize("opt_name", OPTIMIZERS)
def test_float32_checkpoint_into_float64_params(tmp_path, opt_name):
    batches32 = make_batches(torch.float32)
    model32, opt32, sched32 = build(opt_name, "steplr", seed=0)
    train(model32, opt32, sched32, batches32[:SPLIT])
    path = tmp_path / "checkpoint32.genesis"
    save_checkpoint(path, model32, opt32, sched32)
    saved = ordered_state(model32, opt32)

    # Load into a float64 model: every state array is cast, step stays a float32 count.
    model64, opt64, sched64 = build(opt_name, "steplr", seed=1)
    model64.double()
    restore(path, model64, opt64, sched64)
    loaded = ordered_state(model64, opt64)
    assert [set(s) for s in loaded] == [EXPECTED_STATE[opt_name]] * 4
    for param, entries, entries32 in zip(model64.parameters(), loaded, saved):
        assert param.dtype == torch.float64
        for name, value in entries.items():
            assert isinstance(value, torch.Tensor)
            if name == "step":
                assert value.dim() == 0 and value.dtype == torch.float32
                assert float(value) == SPLIT
            else:
                assert value.dtype == torch.float64, (name, value.dtype)
                assert value.shape == param.shape
                assert torch.equal(value, entries32[name].double()), name

    # Reference: a float64 run that loaded the same state, cast to float64 before loading.
    model_ref, opt_ref, sched_ref = build(opt_name, "steplr", seed=2)
    model_ref.double()
    ckpt = genesis.load(path)
    model_ref.load_state_dict(ckpt["model"])
    sd = ckpt["optimizer"]
    sd["state"] = {
        k: {n: (v if n == "step" else v.double()) for n, v in entries.items()} for k, entries in sd["state"].items()
    }
    opt_ref.load_state_dict(sd)
    sched_ref.load_state_dict(ckpt["scheduler"])

    batches64 = [(x.double(), y.double()) for x, y in batches32[SPLIT:]]
    losses64 = train(model64, opt64, sched64, batches64)
    losses_ref = train(model_ref, opt_ref, sched_ref, batches64)
    assert all(np.isfinite(losses64))
    assert losses64 == losses_ref
    for p64, p_ref in zip(model64.parameters(), model_ref.parameters()):
        assert p64.dtype == torch.float64 and torch.isfinite(p64).all()
        assert torch.equal(p64, p_ref)
    assert_same_state(ordered_state(model64, opt64), ordered_state(model_ref, opt_ref))
    for entries in ordered_state(model64, opt64):
        for name, value in entries.items():
            assert value.dtype == (torch.float32 if name == "step" else torch.float64)
            if name == "step":
                assert float(value) == STEPS


# ------------------------------------------------------------------------ NumPy parameters

CURVATURE = {"w": np.linspace(0.5, 2.0, 12).reshape(3, 4), "b": np.array([1.0, 3.0, 0.2, 0.7])}
TARGET = {"w": np.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": np.array([0.5, -0.5, 2.0, 0.0])}


def numpy_params(dtype=np.float32):
    rng = np.random.default_rng(7)
    return {"w": Parameter(rng.normal(size=(3, 4)).astype(dtype)), "b": Parameter(rng.normal(size=4).astype(dtype))}


def numpy_optimizer(params):
    opt = AdamW([{"params": [params["w"]]}, {"params": [params["b"]], "weight_decay": 0.0}], lr=0.05, weight_decay=0.1)
    return opt, StepLR(opt, step_size=4, gamma=0.7)


def numpy_train(params, opt, sched, steps):
    """Quadratic loss 0.5 * sum(c * (p - target)^2); gradient c * (p - target), by hand."""
    losses = []
    for _ in range(steps):
        loss = 0.0
        for key, p in params.items():
            diff = p.data - TARGET[key].astype(p.dtype)
            loss += 0.5 * float(np.sum(CURVATURE[key] * diff * diff))
            p.grad = (CURVATURE[key].astype(p.dtype) * diff).astype(p.dtype)
        opt.step()
        sched.step()
        losses.append(loss)
    return losses


def test_exact_resume_numpy_adamw(tmp_path):
    params_ref = numpy_params()
    opt_ref, sched_ref = numpy_optimizer(params_ref)
    losses_ref = numpy_train(params_ref, opt_ref, sched_ref, STEPS)
    assert losses_ref[-1] < 0.5 * losses_ref[0]

    params_a = numpy_params()
    opt_a, sched_a = numpy_optimizer(params_a)
    losses_a = numpy_train(params_a, opt_a, sched_a, SPLIT)
    sd = opt_a.state_dict()
    for entries in sd["state"].values():
        assert set(entries) == {"step", "exp_avg", "exp_avg_sq"}
        assert type(entries["step"]) is float and entries["step"] == SPLIT
        assert isinstance(entries["exp_avg"], np.ndarray) and entries["exp_avg"].dtype == np.float32
    path = tmp_path / "numpy.genesis"
    genesis.save(
        {"params": {k: p.data for k, p in params_a.items()}, "optimizer": sd, "scheduler": sched_a.state_dict()}, path
    )

    ckpt = genesis.load(path)
    assert all(type(e["step"]) is float for e in ckpt["optimizer"]["state"].values())
    params_b = {k: Parameter(np.array(v)) for k, v in ckpt["params"].items()}
    opt_b, sched_b = numpy_optimizer(params_b)
    opt_b.load_state_dict(ckpt["optimizer"])
    sched_b.load_state_dict(ckpt["scheduler"])
    for entries in opt_b.state.values():
        assert isinstance(entries["exp_avg"], np.ndarray)
    assert type(opt_b.state_dict()["state"][0]["step"]) is float
    losses_b = numpy_train(params_b, opt_b, sched_b, STEPS - SPLIT)

    assert losses_a + losses_b == losses_ref
    for key in params_ref:
        assert params_b[key].data.dtype == np.float32
        assert params_b[key].data.tobytes() == params_ref[key].data.tobytes()
    sd_ref, sd_b = opt_ref.state_dict(), opt_b.state_dict()
    for index in sd_ref["state"]:
        for name, value in sd_ref["state"][index].items():
            got = sd_b["state"][index][name]
            if name == "step":
                assert type(got) is float and got == value == STEPS
            else:
                assert got.tobytes() == value.tobytes()
    assert sched_b.get_last_lr() == sched_ref.get_last_lr()


def test_numpy_float32_checkpoint_into_float64_params(tmp_path):
    params32 = numpy_params(np.float32)
    opt32, sched32 = numpy_optimizer(params32)
    numpy_train(params32, opt32, sched32, SPLIT)
    path = tmp_path / "numpy32.genesis"
    genesis.save({"optimizer": opt32.state_dict(), "scheduler": sched32.state_dict()}, path)

    params64 = {k: Parameter(p.data.astype(np.float64)) for k, p in params32.items()}
    opt64, sched64 = numpy_optimizer(params64)
    ckpt = genesis.load(path)
    opt64.load_state_dict(ckpt["optimizer"])
    sched64.load_state_dict(ckpt["scheduler"])
    for key, p in params64.items():
        entries = opt64.state[p]
        for name in ("exp_avg", "exp_avg_sq"):
            assert entries[name].dtype == np.float64
            assert np.array_equal(entries[name], opt32.state[params32[key]][name].astype(np.float64))
    assert all(type(e["step"]) is float and e["step"] == SPLIT for e in opt64.state_dict()["state"].values())
    losses = numpy_train(params64, opt64, sched64, STEPS - SPLIT)
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(p.data.dtype == np.float64 for p in params64.values())
