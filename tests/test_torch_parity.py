"""genesis.optim against torch.optim on torch parameters.

A small MLP with two param groups (different lr), a frozen parameter (its grad stays None) and
an empty parameter (0 elements) is trained side by side with torch.optim and genesis.optim on
the same data, for every optimizer and flag combination; state_dicts cross over between the two
libraries; sizes 0/1/3/65537, a model of 2000 tensors, lr edited between steps, add_param_group
and state replaced by the user all behave as in torch.
"""

import copy
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402

import reference as R  # noqa: E402

STEPS = 30
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["float32", "float64"]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
# The optimizers torch has too (Lion is checked against its paper in test_rules_reference.py).
NAMES = [n for n in R.NAMES if hasattr(torch.optim, n)]
CASES = [(n, hp) for n, hp in R.all_cases() if n in NAMES]
CASE_IDS = [i for (n, _), i in zip(R.all_cases(), R.all_case_ids()) if n in NAMES]


class MLP(torch.nn.Module):
    def __init__(self, dtype, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.fc1 = torch.nn.Linear(4, 8, dtype=dtype)
        self.fc2 = torch.nn.Linear(8, 3, dtype=dtype)
        with torch.no_grad():
            for p in (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=dtype) - 0.5)
        self.frozen = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=dtype))  # grad stays None
        self.empty = torch.nn.Parameter(torch.zeros(0, dtype=dtype))  # 0 elements, has a grad

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x))) + self.empty.sum()

    def groups(self, lr):
        return [
            {"params": [self.fc1.weight, self.frozen, self.fc1.bias]},
            {"params": [self.fc2.weight, self.empty, self.fc2.bias], "lr": lr * 0.5},
        ]


def _data(dtype, steps=STEPS):
    gen = torch.Generator().manual_seed(42)
    return [
        (torch.randn(8, 4, generator=gen, dtype=dtype), torch.randn(8, 3, generator=gen, dtype=dtype))
        for _ in range(steps)
    ]


def _train_step(model, opt, x, y):
    """One step on the MSE. With maximize=True the objective is the negated MSE, so that
    training converges either way and parameter values stay moderate (diverging runs would
    only measure how fast rounding differences grow)."""
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    if opt.param_groups[0].get("maximize"):
        loss = -loss
    loss.backward()
    opt.step()
    return loss


def _assert_models_close(a, b, tol):
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa.detach(), pb.detach(), **tol, msg=lambda m, name=name: f"{name}: {m}")


def _twin_params(init):
    """Two independent lists of parameters with the same initial values: torch's and genesis'."""
    return ([torch.nn.Parameter(x.clone()) for x in init], [torch.nn.Parameter(x.clone()) for x in init])


def _pair(name, hp, dtype, seed=0):
    """(torch model, torch optimizer, genesis model, genesis optimizer), identical models."""
    mt = MLP(dtype, seed)
    mg = copy.deepcopy(mt)
    ot = R.torch_class(name)(mt.groups(hp["lr"]), **hp)
    og = getattr(genesis.optim, name)(mg.groups(hp["lr"]), **hp)
    return mt, ot, mg, og


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,hp", CASES, ids=CASE_IDS)
def test_training_matches_torch(name, hp, dtype):
    mt, ot, mg, og = _pair(name, hp, dtype)
    tol = TOL[dtype]
    for x, y in _data(dtype):
        lt = _train_step(mt, ot, x, y)
        lg = _train_step(mg, og, x, y)
        torch.testing.assert_close(lg, lt, **tol)
        _assert_models_close(mg, mt, tol)
    # The frozen parameter is untouched and has no state in either; the empty one has state
    # exactly where torch has it.
    torch.testing.assert_close(mg.frozen, torch.linspace(-1, 1, 5, dtype=dtype), rtol=0, atol=0)
    # Adagrad creates every parameter's state in its constructor, in torch and genesis alike.
    assert (mg.frozen in og.state) == (mt.frozen in ot.state) == R.eager_state(name)
    for pt, pg in zip(mt.parameters(), mg.parameters()):
        st, sg = ot.state.get(pt, {}), og.state.get(pg, {})
        assert set(sg) == set(st)
        for key, value in st.items():
            assert type(sg[key]) is type(value)
            assert sg[key].dtype == value.dtype and sg[key].shape == value.shape
            if key == "step":
                assert float(sg[key]) == float(value)
            else:
                torch.testing.assert_close(
                    sg[key],
                    value,
                    rtol=tol["rtol"],
                    atol=tol["atol"] * max(1.0, float(value.abs().max()) if value.numel() else 1.0),
                )


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_crosses_between_torch_and_genesis(name, dtype):
    """A genesis state_dict loads into torch.optim and a torch state_dict into genesis; each
    continues exactly as the optimizer it came from would have."""
    hp = dict(R.RICH[name], maximize=False)
    tol = TOL[dtype]
    data = _data(dtype, 15)
    mt, ot, mg, og = _pair(name, hp, dtype)
    for x, y in data[:5]:
        _train_step(mt, ot, x, y)
        _train_step(mg, og, x, y)
    # genesis -> torch (torch's load_state_dict keeps references, so hand it a copy)
    mg2 = copy.deepcopy(mg)
    ot2 = R.torch_class(name)(mg2.groups(1.0), **dict(hp, lr=123.0))
    ot2.load_state_dict(copy.deepcopy(og.state_dict()))
    assert [g["lr"] for g in ot2.param_groups] == [g["lr"] for g in og.param_groups]
    # torch -> genesis (genesis copies the arrays itself)
    mt2 = copy.deepcopy(mt)
    og2 = getattr(genesis.optim, name)(mt2.groups(1.0), **dict(hp, lr=123.0))
    og2.load_state_dict(ot.state_dict())
    assert [g["lr"] for g in og2.param_groups] == [g["lr"] for g in ot.param_groups]
    for p_src, p_dst in zip(mt.parameters(), mt2.parameters()):
        for key, value in og2.state.get(p_dst, {}).items():
            src = ot.state[p_src][key]
            assert value is not src
            if key == "step":
                assert isinstance(value, torch.Tensor) and value.dtype == torch.float32 and value.dim() == 0
            elif value.numel():
                assert value.data_ptr() != src.data_ptr()
    for x, y in data[5:]:
        _train_step(mg, og, x, y)  # genesis, uninterrupted
        _train_step(mg2, ot2, x, y)  # torch, resumed from genesis
        _train_step(mt, ot, x, y)  # torch, uninterrupted
        _train_step(mt2, og2, x, y)  # genesis, resumed from torch
        _assert_models_close(mg2, mg, tol)
        _assert_models_close(mt2, mt, tol)
    _assert_models_close(mg, mt, tol)


@pytest.mark.parametrize(
    "name,hp",
    [(n, R.CONFIGS[n][0]) for n in NAMES] + [(n, R.RICH[n]) for n in NAMES],
    ids=[f"{n}-plain" for n in NAMES] + [f"{n}-rich" for n in NAMES],
)
def test_state_dict_layout_matches_torch(name, hp):
    """After the same steps, genesis' state_dict has torch's layout: the same param_groups, the
    same parameter indices in 'state', the same state names, step as a 0-dim float32 tensor
    that is a copy (not the live counter)."""
    mt, ot, mg, og = _pair(name, hp, torch.float64)
    for x, y in _data(torch.float64, 3):
        _train_step(mt, ot, x, y)
        _train_step(mg, og, x, y)
    st, sg = ot.state_dict(), og.state_dict()
    assert sg["param_groups"] == st["param_groups"]
    assert sorted(sg["state"]) == sorted(st["state"])
    for index, entries in st["state"].items():
        assert set(sg["state"][index]) == set(entries)
        if "step" in entries:
            step = sg["state"][index]["step"]
            assert isinstance(step, torch.Tensor) and step.dtype == torch.float32 and step.dim() == 0
            assert float(step) == float(entries["step"])
    # step in the state_dict is a copy; the other arrays are the live state.
    params = [p for g in og.param_groups for p in g["params"]]
    for index, entries in sg["state"].items():
        for key, value in entries.items():
            if key == "step":
                assert value is not og.state[params[index]]["step"]
            else:
                assert value is og.state[params[index]][key]


@pytest.mark.parametrize("size", [0, 1, 3, 65537])
@pytest.mark.parametrize("name", NAMES)
def test_sizes_match_torch(name, size):
    hp = R.RICH[name]
    gen = torch.Generator().manual_seed(size)
    init = [torch.rand(size, generator=gen) - 0.5, torch.rand(3, generator=gen) - 0.5]
    pt, pg = _twin_params(init)
    ot = R.torch_class(name)(pt, **hp)
    og = getattr(genesis.optim, name)(pg, **hp)
    for _ in range(10):
        for a, b in zip(pt, pg):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        ot.step()
        og.step()
    for a, b in zip(pt, pg):
        torch.testing.assert_close(b, a, **TOL[torch.float32])
        for key, value in ot.state[a].items():
            assert og.state[b][key].shape == value.shape


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_model_with_2000_tensors(name):
    hp = R.RICH[name]
    gen = torch.Generator().manual_seed(5)
    shapes = [(3,), (2, 2), (1,), (5, 1)]
    init = [torch.rand(shapes[i % 4], generator=gen) - 0.5 for i in range(2000)]
    pt, pg = _twin_params(init)
    ot = R.torch_class(name)([{"params": pt[:1000]}, {"params": pt[1000:], "lr": 0.01}], **hp)
    og = getattr(genesis.optim, name)([{"params": pg[:1000]}, {"params": pg[1000:], "lr": 0.01}], **hp)
    for _ in range(3):
        for i, (a, b) in enumerate(zip(pt, pg)):
            if i % 7 == 3:  # some tensors skip a step
                a.grad = b.grad = None
                continue
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        ot.step()
        og.step()
    torch.testing.assert_close(
        torch.cat([p.flatten() for p in pg]), torch.cat([p.flatten() for p in pt]), **TOL[torch.float32]
    )
    assert len(og.state) == len(ot.state)


@pytest.mark.parametrize("name", NAMES)
def test_editing_lr_between_steps(name):
    hp = R.RICH[name]
    mt, ot, mg, og = _pair(name, hp, torch.float64)
    for i, (x, y) in enumerate(_data(torch.float64, 12)):
        if i == 4:
            for o in (ot, og):
                o.param_groups[0]["lr"] *= 0.3
                o.param_groups[1]["lr"] = 0.0
        if i == 8:
            for o in (ot, og):
                o.param_groups[1]["lr"] = 0.2
                o.param_groups[0]["weight_decay"] = 0.0
        frozen_group1 = [p.detach().clone() for p in og.param_groups[1]["params"]]
        torch_group1 = [p.detach().clone() for p in ot.param_groups[1]["params"]]
        _train_step(mt, ot, x, y)
        _train_step(mg, og, x, y)
        _assert_models_close(mg, mt, TOL[torch.float64])
        # lr = 0: group 1 does not move (AdamW's decay factor 1 - lr*wd is 1), exactly, where
        # torch's does not either (Rprop's lr only seeds its step sizes).
        torch_still = all(torch.equal(p.detach(), b) for p, b in zip(ot.param_groups[1]["params"], torch_group1))
        if 4 <= i < 8 and torch_still:
            for before, p in zip(frozen_group1, og.param_groups[1]["params"]):
                torch.testing.assert_close(p.detach(), before, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_then_step(name):
    hp = R.RICH[name]
    mt = MLP(torch.float64)
    mg = copy.deepcopy(mt)
    groups_t, groups_g = mt.groups(hp["lr"]), mg.groups(hp["lr"])
    ot = R.torch_class(name)([groups_t[0]], **hp)
    og = getattr(genesis.optim, name)([groups_g[0]], **hp)
    for i, (x, y) in enumerate(_data(torch.float64, 8)):
        if i == 3:
            ot.add_param_group(groups_t[1])
            og.add_param_group(groups_g[1])
            assert len(og.param_groups) == 2
            assert set(og.param_groups[1]) == set(ot.param_groups[1])
        _train_step(mt, ot, x, y)
        _train_step(mg, og, x, y)
        _assert_models_close(mg, mt, TOL[torch.float64])


@pytest.mark.parametrize("name", NAMES)
def test_replacing_a_state_tensor_is_honoured(name):
    """opt.state[p][key] = new tensor (same shape): the next step uses the new tensor, and
    keeps updating it in place, as torch does."""
    hp = R.RICH[name]
    key = R.state_names(name, hp)[-1]
    mt, ot, mg, og = _pair(name, hp, torch.float64)
    for i, (x, y) in enumerate(_data(torch.float64, 8)):
        if i == 3:
            for opt, model in ((ot, mt), (og, mg)):
                p = model.fc1.weight
                gen = torch.Generator().manual_seed(9)
                opt.state[p][key] = torch.rand(p.shape, generator=gen, dtype=p.dtype) * 0.1
            replaced = og.state[mg.fc1.weight][key]
        _train_step(mt, ot, x, y)
        _train_step(mg, og, x, y)
        _assert_models_close(mg, mt, TOL[torch.float64])
    assert og.state[mg.fc1.weight][key] is replaced
    torch.testing.assert_close(replaced, ot.state[mt.fc1.weight][key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_replacing_a_whole_param_state(name):
    """opt.state[p] = {...} (e.g. a user resetting one parameter's state) is honoured."""
    hp = R.RICH[name]
    mt, ot, mg, og = _pair(name, hp, torch.float64)
    for i, (x, y) in enumerate(_data(torch.float64, 8)):
        if i == 4:
            for opt, model in ((ot, mt), (og, mg)):
                p = model.fc2.weight
                opt.state[p] = {k: (v.clone() * 0.5 if k != "step" else v.clone()) for k, v in opt.state[p].items()}
        _train_step(mt, ot, x, y)
        _train_step(mg, og, x, y)
        _assert_models_close(mg, mt, TOL[torch.float64])


def test_param_with_grad_some_steps_only():
    """A parameter whose grad is None on some steps: its step count and state pause, as in
    torch."""
    gen = torch.Generator().manual_seed(2)
    init = [torch.rand(4, generator=gen) for _ in range(2)]
    pt, pg = _twin_params(init)
    ot = torch.optim.Adam(pt, lr=0.01)
    og = genesis.optim.Adam(pg, lr=0.01)
    for i in range(6):
        g = [torch.randn(4, generator=gen) for _ in range(2)]
        for ps in (pt, pg):
            ps[0].grad = g[0].clone()
            ps[1].grad = None if i in (1, 2, 4) else g[1].clone()
        ot.step()
        og.step()
    assert float(og.state[pg[0]]["step"]) == 6.0 and float(og.state[pg[1]]["step"]) == 3.0
    for a, b in zip(pt, pg):
        torch.testing.assert_close(b, a, **TOL[torch.float32])


@pytest.mark.parametrize("numel", [1, 3])
def test_replacing_a_parameter_in_a_group(numel):
    """torch.optim reads group['params'] at every step: a parameter swapped into the list (here
    one with the same values as the one it replaces) is the one updated next."""
    results = []
    for lib in (torch.optim, genesis.optim):
        a = torch.nn.Parameter(torch.ones(numel))
        opt = lib.SGD([a], lr=0.1)
        a.grad = torch.ones(numel)
        opt.step()
        c = torch.nn.Parameter(a.detach().clone())
        opt.param_groups[0]["params"][0] = c
        a.grad, c.grad = None, torch.ones(numel)
        opt.step()
        results.append((a.detach().clone(), c.detach().clone()))
    (ta, tc), (ga, gc) = results
    torch.testing.assert_close(ga, ta)
    torch.testing.assert_close(gc, tc)
    torch.testing.assert_close(gc, torch.full((numel,), 0.8))


@pytest.mark.parametrize("name", NAMES)
def test_mixed_float32_float64_in_one_group(name):
    hp = R.RICH[name]
    gen = torch.Generator().manual_seed(13)
    dtypes = [torch.float32, torch.float64, torch.float64, torch.float32]
    init = [torch.rand(7, generator=gen, dtype=d) - 0.5 for d in dtypes]
    pt, pg = _twin_params(init)
    ot = R.torch_class(name)(pt, **hp)
    og = getattr(genesis.optim, name)(pg, **hp)
    for _ in range(10):
        for a, b in zip(pt, pg):
            g = torch.randn(7, generator=gen, dtype=a.dtype)
            a.grad, b.grad = g.clone(), g.clone()
        ot.step()
        og.step()
    for a, b in zip(pt, pg):
        assert b.dtype == a.dtype
        torch.testing.assert_close(b, a, **TOL[a.dtype])
        for key, value in ot.state[a].items():
            assert og.state[b][key].dtype == value.dtype


@pytest.mark.parametrize("name", NAMES)
def test_torch_state_dict_into_numpy_parameters(name):
    """A torch optimizer's state_dict loads into a genesis optimizer over NumPy parameters (the
    tensors become NumPy arrays of the parameter's dtype) and training continues as in torch."""
    hp = R.RICH[name]
    gen = torch.Generator().manual_seed(14)
    pt = [torch.nn.Parameter(torch.rand(s, generator=gen, dtype=torch.float64)) for s in [(3,), (2, 4)]]
    ot = R.torch_class(name)([{"params": pt[:1]}, {"params": pt[1:], "lr": 0.003}], **hp)

    def grads():
        return [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in pt]

    for _ in range(3):
        for p, g in zip(pt, grads()):
            p.grad = g
        ot.step()
    pn = [genesis.nn.Parameter(p.detach().numpy().copy()) for p in pt]
    on = getattr(genesis.optim, name)([{"params": pn[:1]}, {"params": pn[1:]}], **dict(hp, lr=9.0))
    on.load_state_dict(ot.state_dict())
    assert on.param_groups[1]["lr"] == 0.003
    for p in pn:
        for key, value in on.state[p].items():
            if key == "step":
                assert isinstance(value, np.ndarray) and value.dtype == np.float32 and float(value) == 3.0
            elif key in R.scalar_names(name, hp):
                assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == ()
            else:
                assert isinstance(value, np.ndarray) and value.dtype == np.float64
    for _ in range(3):
        for a, b, g in zip(pt, pn, grads()):
            a.grad, b.grad = g, g.numpy().copy()
        ot.step()
        on.step()
    for a, b in zip(pt, pn):
        np.testing.assert_allclose(b.data, a.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_sgd_switching_momentum_and_flags_between_steps():
    """SGD's momentum switched on (buffer = g on its first use), flags toggled, momentum off and
    on again (the old buffer is reused, as torch does)."""
    gen = torch.Generator().manual_seed(15)
    init = torch.rand(5, 3, generator=gen, dtype=torch.float64)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ot, og = torch.optim.SGD([a], lr=0.1), genesis.optim.SGD([b], lr=0.1)
    edits = {
        2: dict(momentum=0.9),
        4: dict(nesterov=True, maximize=True),
        6: dict(momentum=0.0, nesterov=False),
        8: dict(momentum=0.5, dampening=0.2),
        10: dict(weight_decay=0.05, maximize=False),
    }
    for i in range(12):
        for opt in (ot, og):
            opt.param_groups[0].update(edits.get(i, {}))
        g = torch.randn(5, 3, generator=gen, dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        ot.step()
        og.step()
        torch.testing.assert_close(b, a, **TOL[torch.float64])
    torch.testing.assert_close(og.state[b]["momentum_buffer"], ot.state[a]["momentum_buffer"], **TOL[torch.float64])


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_toggling_maximize_and_weight_decay_between_steps(name):
    hp = R.RICH[name]
    mt, ot, mg, og = _pair(name, hp, torch.float64)
    for i, (x, y) in enumerate(_data(torch.float64, 9)):
        if i in (3, 6):
            for o in (ot, og):
                o.param_groups[0]["maximize"] = not o.param_groups[0]["maximize"]
                o.param_groups[1]["weight_decay"] = 0.3 if i == 3 else 0.0
        _train_step(mt, ot, x, y)
        _train_step(mg, og, x, y)
        _assert_models_close(mg, mt, TOL[torch.float64])


@pytest.mark.parametrize("when", ["constructor", "add_param_group"])
@pytest.mark.parametrize("state_dtype", [None, "int8"])
def test_adagrad_sum_starts_at_the_optimizers_default_not_the_groups(when, state_dtype):
    """torch's Adagrad starts every `sum` at `self.defaults["initial_accumulator_value"]`
    (in its constructor and, for a group added later, at its first step): a group's own value
    stays in the group and its state_dict but is never read. genesis gives the same numbers,
    and with 8-bit state starts from the same default (the fused core's fresh start included)."""
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(3, 5000, generator=gen, dtype=torch.float32)
    b = torch.randn(700, generator=gen, dtype=torch.float32)
    pt = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    pg = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    own = dict(initial_accumulator_value=4.0, lr=0.2)
    extra = {} if state_dtype is None else dict(state_dtype=state_dtype, min_8bit_size=1)
    if when == "constructor":
        ot = torch.optim.Adagrad(
            [dict(params=[pt[0]]), dict(params=[pt[1]], **own)], lr=0.1, initial_accumulator_value=0.5
        )
        og = genesis.optim.Adagrad(
            [dict(params=[pg[0]]), dict(params=[pg[1]], **own)], lr=0.1, initial_accumulator_value=0.5, **extra
        )
    else:
        ot = torch.optim.Adagrad([pt[0]], lr=0.1, initial_accumulator_value=0.5)
        og = genesis.optim.Adagrad([pg[0]], lr=0.1, initial_accumulator_value=0.5, **extra)
        ot.add_param_group(dict(params=[pt[1]], **own))
        og.add_param_group(dict(params=[pg[1]], **own))
    assert og.param_groups[1]["initial_accumulator_value"] == ot.param_groups[1]["initial_accumulator_value"] == 4.0
    # 8-bit state: one step (each step rounds the sums again, so they drift from torch's).
    for _ in range(25 if state_dtype is None else 1):
        for t, g in zip(pt, pg):
            grad = torch.randn(t.shape, generator=gen)
            t.grad, g.grad = grad.clone(), grad.clone()
        ot.step()
        og.step()
    if state_dtype is None:
        for t, g in zip(pt, pg):
            torch.testing.assert_close(g, t, **TOL[torch.float32])
        torch.testing.assert_close(og.state[pg[1]]["sum"], ot.state[pt[1]]["sum"], **TOL[torch.float32])
    else:
        # 8-bit codes hold a sum to 1/16 of its value (docs/low-bit-state.md); started at 4.0
        # instead of 0.5 it would be about 3.5 larger.
        for k in (0, 1):
            got = og.float32_state_dict()["state"][k]["sum"]
            torch.testing.assert_close(got, ot.state[pt[k]]["sum"], rtol=1 / 16, atol=0.0)
    assert og.state_dict()["param_groups"][1]["initial_accumulator_value"] == 4.0
