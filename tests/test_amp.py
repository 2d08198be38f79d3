"""genesis.amp.GradScaler (docs/mixed-precision.md): torch's scale schedule and error states,
the fused unscale-and-skip path of genesis optimizers, the explicit ``unscale_`` path, torch optimizers,
low-precision parameters with master weights, and the mixed-precision training example."""

import copy
import importlib.util
import math
import pathlib
import random
import re
import warnings

import numpy as np
import pytest
import torch

import genesis
from genesis.amp import GradScaler
from genesis.nn.utils import clip_grad_norm_

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def make_params(seed=0, dtype=torch.float32, shapes=((5, 3), (3,), (4, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def clone_params(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def set_grads(params, seed, scale=1.0, poison=None):
    """Give every parameter a random gradient times ``scale``; ``poison`` (inf or nan), if
    given, goes into one element of the last one."""
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * scale).to(p.dtype)
    if poison is not None:
        params[-1].grad.view(-1)[1] = poison


def snapshot(optimizer):
    """Copies of every parameter and every state value (step counts included)."""
    params = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
    state = {
        i: {k: (v.clone() if torch.is_tensor(v) else copy.deepcopy(v)) for k, v in s.items()}
        for i, s in enumerate(optimizer.state.values())
    }
    return params, state


_INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def assert_same_bits(a, b):
    """Equal lists (or dicts) of tensors, bit for bit (NaNs included), or of plain values."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            assert_same_bits(list(x.values()), list(y.values()))
        elif torch.is_tensor(x):
            assert x.dtype == y.dtype and x.shape == y.shape
            as_int = _INT_OF_SIZE[x.element_size()]
            assert torch.equal(x.detach().reshape(-1).view(as_int), y.detach().reshape(-1).view(as_int))
        else:
            assert x == y


# ------------------------------------------------------------------------- scale schedule
@pytest.mark.parametrize(
    "init_scale, growth_factor, backoff_factor",
    [
        (2.0**10, 2.0, 0.5),
        (1000.0, 1.7, 0.3),  # not powers of two: the float32 rounding of each product shows
        (2.0**125, 4.0, 0.5),  # growth past float32's range is not taken
    ],
)
def test_scale_trajectory_matches_torch(init_scale, growth_factor, backoff_factor):
    """Same scale (as a float) and growth tracker as torch.amp.GradScaler("cpu") after every
    update, over iterations with and without inf/NaN gradients."""
    kwargs = dict(init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor, growth_interval=3)
    ours, theirs = GradScaler(**kwargs), torch.amp.GradScaler("cpu", **kwargs)
    p_ours, p_theirs = make_params(), make_params()
    opt_ours = genesis.optim.SGD(p_ours, lr=0.01)
    opt_theirs = torch.optim.SGD(p_theirs, lr=0.01)
    poisons = [
        None,
        None,
        None,
        None,
        math.inf,
        None,
        None,
        None,
        None,
        None,
        None,
        math.nan,
        math.inf,
        None,
        None,
        None,
        -math.inf,
        None,
        None,
        None,
    ]
    scales = []
    for i, poison in enumerate(poisons):
        for scaler, params, opt in ((ours, p_ours, opt_ours), (theirs, p_theirs, opt_theirs)):
            scaler.scale(torch.tensor(1.0))
            set_grads(params, i, poison=poison)
            scaler.step(opt)
            scaler.update()
        assert ours.get_scale() == theirs.get_scale(), i
        assert ours._get_growth_tracker() == theirs._get_growth_tracker(), i
        scales.append(ours.get_scale())
    steps = list(zip(scales, scales[1:]))
    assert any(b > a for a, b in steps) and any(b < a for a, b in steps)
    if init_scale == 2.0**10:
        assert scales == [
            2.0**k for k in (10, 10, 11, 11, 10, 10, 10, 11, 11, 11, 12, 11, 10, 10, 10, 11, 10, 10, 10, 11)
        ]
    if init_scale == 2.0**125:
        # At 2**126 a growth by 4 would overflow float32: refused, the tracker restarts.
        assert scales[6:8] == [2.0**126, 2.0**126] and ours._get_growth_tracker() == 0
        assert max(scales) == 2.0**127


def test_scale_multiplies_like_torch():
    """scale() of a tensor, a (nested) list/tuple, a bfloat16 loss and a Python float."""
    ours, theirs = GradScaler(init_scale=3.0), torch.amp.GradScaler("cpu", init_scale=3.0)
    loss = torch.tensor(1.25)
    assert torch.equal(ours.scale(loss), theirs.scale(loss))
    bf16 = torch.tensor(1.25, dtype=torch.bfloat16)
    assert ours.scale(bf16).dtype == theirs.scale(bf16).dtype == torch.float32
    nested = [torch.tensor(2.0), (torch.tensor(3.0), torch.tensor(4.0))]
    scaled = ours.scale(nested)
    assert isinstance(scaled, list) and isinstance(scaled[1], tuple)
    assert [scaled[0].item(), scaled[1][0].item(), scaled[1][1].item()] == [6.0, 9.0, 12.0]
    assert ours.scale(0.5) == 1.5
    assert np.array_equal(ours.scale(np.array([1.0, 2.0])), [3.0, 6.0])


def test_update_with_new_scale():
    scaler = GradScaler()
    scaler.scale(torch.tensor(1.0))
    scaler.update(1024.0)
    assert scaler.get_scale() == 1024.0
    scaler.update(torch.tensor(0.1))
    assert scaler.get_scale() == float(np.float32(0.1))
    with pytest.raises(AssertionError, match="1-element"):
        scaler.update(torch.ones(2))
    with pytest.raises(AssertionError, match="1-element"):
        scaler.update(torch.ones((), requires_grad=True))


# ------------------------------------------------------------------- skipped (inf) steps
OPTIMIZERS = {
    "AdamW": lambda p: genesis.optim.AdamW(p, lr=0.01, amsgrad=True),
    "SGD momentum": lambda p: genesis.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True),
    "RMSprop": lambda p: genesis.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("poison", [math.inf, math.nan])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_nonfinite_step_changes_nothing(name, poison):
    """A step whose gradients hold an inf or NaN leaves every parameter and state value (step
    counts included) bit-identical, leaves the gradients as they were, and halves the scale."""
    params = make_params()
    opt = OPTIMIZERS[name](params)
    scaler = GradScaler(init_scale=256.0)
    for i in range(2):
        scaler.scale(torch.tensor(1.0))
        set_grads(params, i, scale=256.0)
        scaler.step(opt)
        scaler.update()
    before = snapshot(opt)
    scaler.scale(torch.tensor(1.0))
    set_grads(params, 7, scale=256.0, poison=poison)
    grads = [p.grad.clone() for p in params]
    assert scaler.step(opt) is None
    scaler.update()
    after = snapshot(opt)
    assert_same_bits(before[0], after[0])
    assert_same_bits(list(before[1].values()), list(after[1].values()))
    assert_same_bits(grads, [p.grad for p in params])
    assert scaler.get_scale() == 128.0
    assert not hasattr(opt, "grad_scale") and not hasattr(opt, "found_inf")


def test_numpy_parameters():
    """genesis.nn.Parameter (NumPy) parameters: the scaled gradients are unscaled in the
    update, and an inf gradient skips the step."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal(6).astype(np.float32)
    p, q = genesis.nn.Parameter(data.copy()), genesis.nn.Parameter(data.copy())
    opt_p, opt_q = genesis.optim.Adam([p], lr=0.1), genesis.optim.Adam([q], lr=0.1)
    scaler = GradScaler(init_scale=64.0)
    grad = rng.standard_normal(6).astype(np.float32)
    assert scaler.scale(np.float32(2.0)) == 128.0
    p.grad, q.grad = grad * np.float32(64.0), grad.copy()
    scaler.step(opt_p)
    scaler.update()
    opt_q.step()
    assert np.array_equal(p.data, q.data) and not np.array_equal(p.data, data)
    p.grad = np.full(6, np.inf, np.float32)
    before = p.data.copy()
    scaler.step(opt_p)
    scaler.update()
    assert np.array_equal(p.data, before) and opt_p.state[p]["step"] == 1.0
    assert scaler.get_scale() == 32.0


def test_one_optimizer_skips_the_other_steps():
    """With two optimizers, only the one with an inf gradient skips (a skipped first step
    does not even create the state); the scale backs off."""
    a, b = make_params(0), make_params(1)
    opt_a, opt_b = genesis.optim.Adam(a, lr=0.1), genesis.optim.SGD(b, lr=0.1)
    scaler = GradScaler(init_scale=4.0)
    scaler.scale(torch.tensor(1.0))
    set_grads(a, 0, poison=math.inf)
    set_grads(b, 1)
    a0, b0 = [p.detach().clone() for p in a], [p.detach().clone() for p in b]
    scaler.step(opt_a)
    scaler.step(opt_b)
    scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(a, a0)) and len(opt_a.state) == 0
    assert all(torch.equal(p, q - 0.1 * p.grad / 4.0) for p, q in zip(b, b0))
    assert scaler.get_scale() == 2.0


# -------------------------------------------------------------------- parity with torch
def mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def test_training_matches_torch_scaler_and_adamw():
    """20 steps of genesis GradScaler + genesis AdamW equal torch's GradScaler + torch AdamW
    (fused=False), including two skipped steps and two growths of the scale."""
    ours, theirs = mlp(0), mlp(0)
    opt_ours = genesis.optim.AdamW(ours.parameters(), lr=0.01)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=0.01, fused=False, foreach=False)
    kwargs = dict(init_scale=2.0**10, growth_interval=4)
    s_ours, s_theirs = GradScaler(**kwargs), torch.amp.GradScaler("cpu", **kwargs)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 32, 8, generator=g), torch.randint(0, 3, (20, 32), generator=g)
    scales = []
    for i in range(20):
        blowup = math.inf if i in (5, 13) else 1.0
        for model, opt, scaler in ((ours, opt_ours, s_ours), (theirs, opt_theirs, s_theirs)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[i]), y[i]) * blowup
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        assert s_ours.get_scale() == s_theirs.get_scale()
        scales.append(s_ours.get_scale())
    steps = list(zip(scales, scales[1:]))
    assert sum(b < a for a, b in steps) == 2 and sum(b > a for a, b in steps) >= 2
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert float(opt_ours.state[next(ours.parameters())]["step"]) == 18


def test_unscale_then_clip_matches_torch():
    """unscale_ divides the gradients in place, so clip_grad_norm_ sees (and returns) the true
    norm; the step then uses the clipped gradients as they are. All as in torch."""
    ours, theirs = mlp(0), mlp(0)
    opt_ours = genesis.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    s_ours, s_theirs = GradScaler(), torch.amp.GradScaler("cpu")
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        norms = []
        for model, opt, scaler, clip in (
            (ours, opt_ours, s_ours, clip_grad_norm_),
            (theirs, opt_theirs, s_theirs, torch.nn.utils.clip_grad_norm_),
        ):
            opt.zero_grad()
            scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
            scaler.unscale_(opt)
            norms.append(clip(model.parameters(), max_norm=0.1))
            scaler.step(opt)
            scaler.update()
        torch.testing.assert_close(norms[0], norms[1])
        assert norms[0] > 0.1  # the clip was active
        for p, q in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
            torch.testing.assert_close(p, q)


def test_fused_step_equals_unscale_then_step_bitwise():
    """With power-of-two scales, scaler.step alone (1/scale applied inside the update, the
    gradients left scaled) gives the same bits as unscale_ followed by step."""
    fused, explicit = make_params(), make_params()
    opt_f, opt_e = genesis.optim.AdamW(fused, lr=0.01), genesis.optim.AdamW(explicit, lr=0.01)
    s_f, s_e = GradScaler(init_scale=2.0**12, growth_interval=2), GradScaler(init_scale=2.0**12, growth_interval=2)
    for i in range(8):
        scale = s_f.get_scale()
        poison = math.inf if i == 3 else None
        for params, opt, scaler, unscale in ((fused, opt_f, s_f, False), (explicit, opt_e, s_e, True)):
            scaler.scale(torch.tensor(1.0))
            set_grads(params, i, scale=scale, poison=poison)
            if unscale:
                scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
        set_grads(explicit, i, scale=scale, poison=poison)
        assert_same_bits([p.grad for p in fused], [p.grad for p in explicit])  # still scaled
        assert s_f.get_scale() == s_e.get_scale()
        assert_same_bits(fused, explicit)
        assert_same_bits(list(snapshot(opt_f)[1].values()), list(snapshot(opt_e)[1].values()))
    assert s_f.get_scale() != 2.0**12


def test_genesis_scaler_drives_torch_optimizer():
    """A torch optimizer gets torch's treatment (unscale_, then step unless inf): the same bits
    as torch's own GradScaler; float16 gradients cannot be unscaled, as in torch."""
    ours, theirs = make_params(), make_params()
    opt_ours = torch.optim.Adam(ours, lr=0.01, foreach=False)
    opt_theirs = torch.optim.Adam(theirs, lr=0.01, foreach=False)
    s_ours, s_theirs = GradScaler(init_scale=1000.0), torch.amp.GradScaler("cpu", init_scale=1000.0)
    for i in range(5):
        for params, opt, scaler in ((ours, opt_ours, s_ours), (theirs, opt_theirs, s_theirs)):
            scaler.scale(torch.tensor(1.0))
            set_grads(params, i, scale=1000.0, poison=math.nan if i == 2 else None)
            scaler.step(opt)
            scaler.update()
        assert s_ours.get_scale() == s_theirs.get_scale()
        assert_same_bits(ours, theirs)
        assert_same_bits([p.grad for p in ours], [p.grad for p in theirs])
    half = [torch.nn.Parameter(torch.ones(3, dtype=torch.float16))]
    half[0].grad = torch.ones(3, dtype=torch.float16)
    s_ours.scale(torch.tensor(1.0))
    with pytest.raises(ValueError, match="FP16"):
        s_ours.unscale_(torch.optim.SGD(half, lr=0.1))


@pytest.mark.parametrize("name, kwargs", [("AdamW", {"fused": True}), ("RMSprop", {})])
def test_torch_scaler_drives_genesis_optimizer(name, kwargs):
    """torch.amp.GradScaler("cpu") drives a genesis optimizer as it drives torch's built with
    the same arguments: a fused one gets grad_scale/found_inf and unscales inside its update
    (the gradients stay scaled), any other is unscaled in place first. Either way the same bits
    as genesis's GradScaler, skipped step included (the scales are powers of two)."""
    ours, theirs = make_params(), make_params()
    opt_ours = getattr(genesis.optim, name)(ours, lr=0.01, **kwargs)
    opt_theirs = getattr(genesis.optim, name)(theirs, lr=0.01, **kwargs)
    s_ours, s_theirs = GradScaler(init_scale=512.0), torch.amp.GradScaler("cpu", init_scale=512.0)
    for i in range(5):
        for params, opt, scaler in ((ours, opt_ours, s_ours), (theirs, opt_theirs, s_theirs)):
            scaler.scale(torch.tensor(1.0))
            set_grads(params, i, scale=scaler.get_scale(), poison=math.inf if i == 1 else None)
            scaled, scale = params[0].grad.clone(), scaler.get_scale()
            scaler.step(opt)
            scaler.update()
        assert torch.equal(theirs[0].grad, scaled if kwargs else scaled / scale)
        assert s_ours.get_scale() == s_theirs.get_scale()
        assert_same_bits(ours, theirs)
    assert float(opt_theirs.state[theirs[0]]["step"]) == 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_params_with_master_weights(dtype):
    """16-bit parameters with master_weights through the scaler: each step equals a plain step
    on the unscaled gradients (power-of-two scales are exact); a float16 gradient that
    overflows when scaled skips the step, master copy and step count included."""
    g = torch.Generator().manual_seed(3)
    init = torch.randn(6, 4, generator=g).to(dtype)
    p, q = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    opt_p = genesis.optim.AdamW([p], lr=0.01, master_weights=True)
    opt_q = genesis.optim.AdamW([q], lr=0.01, master_weights=True)
    scaler = GradScaler(init_scale=2.0**14, growth_interval=2)
    skipped = 0
    for i in range(8):
        grad = torch.randn(6, 4, generator=g) * 0.05
        if i == 3:
            grad[0, 0] = 8.0  # 8 * 2**14 overflows float16; bfloat16 gets an explicit inf
        scale = scaler.get_scale()
        scaler.scale(torch.tensor(1.0))
        p.grad = (grad * scale).to(dtype)
        if dtype == torch.bfloat16 and i == 3:
            p.grad[0, 0] = math.inf
        before = snapshot(opt_p)
        scaler.step(opt_p)
        scaler.update()
        if torch.isfinite(p.grad).all():
            q.grad = grad.to(dtype)
            opt_q.step()
        else:
            skipped += 1
            after = snapshot(opt_p)
            assert_same_bits(before[0], after[0])
            assert_same_bits(list(before[1].values()), list(after[1].values()))
            assert scaler.get_scale() == scale / 2
        assert_same_bits([p], [q])
        assert_same_bits([opt_p.state[p]["master_param"]], [opt_q.state[q]["master_param"]])
    assert skipped == 1
    assert opt_p.state[p]["master_param"].dtype == torch.float32
    assert float(opt_p.state[p]["step"]) == 7


def test_unscale_float16_gradients_of_genesis_optimizer():
    """Unlike torch's optimizers, genesis optimizers take float16 parameters, so unscale_
    accepts their float16 gradients. It is lazy (NOTE: [deferred clip]): the gradients stay
    scaled, and the step divides them exactly (a power-of-two scale) as it loads them."""
    p = torch.nn.Parameter(torch.linspace(-1, 1, 8, dtype=torch.float16))
    q = torch.nn.Parameter(p.detach().clone())
    opt_p, opt_q = genesis.optim.SGD([p], lr=0.5), genesis.optim.SGD([q], lr=0.5)
    scaler = GradScaler(init_scale=1024.0)
    grad = torch.linspace(-0.02, 0.03, 8).to(torch.float16)
    scaler.scale(torch.tensor(1.0))
    p.grad, q.grad = grad * 1024, grad.clone()
    scaler.unscale_(opt_p)
    assert_same_bits([p.grad], [grad * 1024])
    scaler.step(opt_p)
    opt_q.step()
    assert_same_bits([p], [q])


# ----------------------------------------------------------------- state and error states
def run_iterations(scaler, opt, params, seeds, poisons=()):
    for i in seeds:
        scaler.scale(torch.tensor(1.0))
        set_grads(params, i, poison=math.inf if i in poisons else None)
        scaler.step(opt)
        scaler.update()


def test_state_dict_round_trip_and_torch_compatibility():
    """state_dict has torch's keys and values; loading it (or torch's) resumes the schedule."""
    params = make_params()
    opt = genesis.optim.SGD(params, lr=0.01)
    kwargs = dict(init_scale=64.0, growth_factor=3.0, backoff_factor=0.25, growth_interval=3)
    scaler, reference = GradScaler(**kwargs), torch.amp.GradScaler("cpu", **kwargs)
    run_iterations(scaler, opt, params, range(6), poisons={1})
    torch_params = make_params()
    run_iterations(reference, torch.optim.SGD(torch_params, lr=0.01), torch_params, range(6), poisons={1})
    sd = scaler.state_dict()
    assert sd == reference.state_dict()
    assert sd == {
        "scale": 48.0,
        "growth_factor": 3.0,
        "backoff_factor": 0.25,
        "growth_interval": 3,
        "_growth_tracker": 1,
    }
    for source in (sd, reference.state_dict()):
        resumed = GradScaler()
        resumed.load_state_dict(source)
        assert resumed.state_dict() == sd
        run_iterations(resumed, opt, params, range(10, 14))
        assert resumed.get_scale() == 144.0 and resumed._get_growth_tracker() == 2
    live = GradScaler()
    live.scale(torch.tensor(1.0))
    live.load_state_dict(sd)  # an already started scaler takes the loaded values too
    assert live.get_scale() == 48.0 and live._get_growth_tracker() == 1
    with pytest.raises(RuntimeError, match="disabled"):
        GradScaler().load_state_dict(GradScaler(enabled=False).state_dict())


def test_disabled_is_pass_through():
    params = make_params()
    opt = genesis.optim.SGD(params, lr=0.5)
    scaler = GradScaler(enabled=False)
    loss = torch.tensor(2.0)
    assert scaler.scale(loss) is loss
    set_grads(params, 0)
    grads = [p.grad.clone() for p in params]
    scaler.unscale_(opt)
    assert_same_bits(grads, [p.grad for p in params])
    before = [p.detach().clone() for p in params]
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, b - 0.5 * g) for p, b, g in zip(params, before, grads))
    assert not scaler.is_enabled() and scaler.get_scale() == 1.0
    assert scaler.state_dict() == {} and scaler._get_growth_tracker() == 0
    scaler.load_state_dict({"scale": 4.0})  # ignored
    assert scaler.get_scale() == 1.0


def test_error_states_as_torch():
    params = make_params()
    opt = genesis.optim.SGD(params, lr=0.01)
    scaler = GradScaler()
    set_grads(params, 0)
    with pytest.raises(AssertionError, match="did not use scaler.scale"):
        scaler.step(opt)
    with pytest.raises(AssertionError, match="did not use scaler.scale"):
        scaler.update()
    scaler.scale(torch.tensor(1.0))
    with pytest.raises(AssertionError, match="No inf checks"):
        scaler.update()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called on this optimizer"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called since the last update"):
        scaler.step(opt)
    scaler.update()
    scaler.step(opt)  # a new iteration may step again
    with pytest.raises(RuntimeError, match="Closure"):
        scaler.step(opt, closure=lambda: 0.0)
    with pytest.raises(AssertionError, match="growth factor"):
        GradScaler(growth_factor=1.0)
    with pytest.raises(AssertionError, match="backoff factor"):
        GradScaler(backoff_factor=1.0)
    with pytest.raises(TypeError, match="pass init_scale by keyword"):
        GradScaler(1024.0)  # genesis's GradScaler took init_scale first before it took torch's signature
    with pytest.raises(TypeError, match="pass init_scale by keyword"):
        GradScaler(1024.0, enabled=False)


@pytest.mark.parametrize(
    "args, kwargs",
    [
        (("cpu",), {}),
        (("cuda",), {}),
        (("cuda",), {"enabled": False}),
        (("cpu", 1024.0, 3.0, 0.25, 7), {}),
        ((), {"device": "cpu", "init_scale": 8.0}),
        ((torch.device("cpu"),), {}),
        ((torch.device("cuda"),), {}),
    ],
    ids=["cpu", "cuda", "cuda-disabled", "cpu-positional", "keywords", "torch.device-cpu", "torch.device-cuda"],
)
def test_torch_signature_carries_over(args, kwargs):
    """GradScaler takes torch.amp.GradScaler's arguments, device first, so a script's
    torch.amp.GradScaler("cuda", ...) becomes genesis.amp.GradScaler("cuda", ...) unchanged: the
    same enabled state (a CUDA scaler on a machine without CUDA warns and disables itself, as
    torch's does), the same warnings, the same scale and schedule settings."""
    with warnings.catch_warnings(record=True) as theirs_warned:
        warnings.simplefilter("always")
        theirs = torch.amp.GradScaler(*args, **kwargs)
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        ours = GradScaler(*args, **kwargs)
    assert [str(w.message) for w in ours_warned] == [str(w.message) for w in theirs_warned]
    assert ours.is_enabled() == theirs.is_enabled()
    loss = torch.tensor(1.5)
    assert torch.equal(ours.scale(loss), theirs.scale(loss))
    if theirs.is_enabled():
        assert ours.state_dict() == theirs.state_dict()


def test_the_default_device_names_none_and_stays_enabled():
    """torch's default device is "cuda", which disables its scaler on a machine without CUDA;
    genesis's default names no device, and its scaler is enabled everywhere (documented)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GradScaler().is_enabled()


@pytest.mark.parametrize("genesis_optimizer", [True, False])
@pytest.mark.parametrize("unscaled_first", [False, True])
def test_an_optimizer_without_any_gradient_is_refused_as_by_torch(genesis_optimizer, unscaled_first):
    """torch's GradScaler.step asserts "No inf checks were recorded for this optimizer" when
    the optimizer holds no gradient at all (it records an inf check per device that holds one);
    genesis's used to step such an optimizer (a no-op). Neither changes a parameter."""
    raised = {}
    for scaler in (torch.amp.GradScaler("cpu"), GradScaler()):
        params = make_params()
        opt = (genesis.optim if genesis_optimizer else torch.optim).AdamW(params)
        before = [p.detach().clone() for p in params]
        scaler.scale(torch.tensor(1.0))
        if unscaled_first:
            scaler.unscale_(opt)
        with pytest.raises(AssertionError) as info:
            scaler.step(opt)
        raised[type(scaler)] = str(info.value)
        assert all(torch.equal(p, q) for p, q in zip(params, before))
    assert raised[GradScaler] == raised[torch.amp.GradScaler] == "No inf checks were recorded for this optimizer."


def _scaler_scenario(seed):
    """A drawn mixed-precision run: one or two optimizers over a few parameters, scaler
    settings, and per iteration an inf/NaN in some gradient, a clip after unscale_, or a
    parameter left without gradient; the scaler's and optimizers' states may be reloaded
    midway."""
    rng = random.Random(seed)
    names = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax"]
    optimizers = []
    for _ in range(rng.choice([1, 2])):
        name, kwargs = rng.choice(names), {"lr": rng.choice([1e-2, 1e-3])}
        if name == "SGD":
            kwargs["momentum"] = rng.choice([0.0, 0.9])
        shapes = [rng.choice([(3,), (5, 4), (0,), (100,)]) for _ in range(rng.choice([1, 3]))]
        optimizers.append((name, kwargs, shapes))
    settings = dict(
        init_scale=rng.choice([2.0**16, 8.0, 1.0]),
        growth_factor=rng.choice([2.0, 1.5]),
        backoff_factor=rng.choice([0.5, 0.25]),
        growth_interval=rng.choice([1, 2, 5]),
    )
    steps = rng.choice([8, 15])
    iterations = [
        dict(
            poison=(rng.randrange(len(optimizers)), rng.choice([math.inf, -math.inf, math.nan]))
            if rng.random() < 0.3
            else None,
            clip=rng.choice([None, None, 0.5, 1e-3]),
            drop_grad=rng.random() < 0.1,
        )
        for _ in range(steps)
    ]
    return optimizers, settings, iterations, rng.choice([None, steps // 2])


def _run_scaler_scenario(seed, library):
    """(the scale after each iteration, the final parameters) or the error raised."""
    optimizers, settings, iterations, reload_at = _scaler_scenario(seed)
    torch_side = library == "torch"
    optim = torch.optim if torch_side else genesis.optim
    clip = torch.nn.utils.clip_grad_norm_ if torch_side else clip_grad_norm_
    new_scaler = (lambda: torch.amp.GradScaler("cpu", **settings)) if torch_side else (lambda: GradScaler(**settings))
    gen = torch.Generator().manual_seed(seed)
    params = [[torch.randn(s, generator=gen).requires_grad_() for s in shapes] for _, _, shapes in optimizers]
    opts = [getattr(optim, name)(ps, **kw) for (name, kw, _), ps in zip(optimizers, params)]
    scaler, scales = new_scaler(), []
    try:
        for k, it in enumerate(iterations):
            targets = torch.Generator().manual_seed(1000 * seed + k)
            loss = sum((p * torch.randn(p.shape, generator=targets)).sum() for ps in params for p in ps)
            for ps in params:
                for p in ps:
                    p.grad = None
            scaler.scale(loss).backward()
            if it["drop_grad"]:
                params[0][0].grad = None
            if it["poison"] is not None:
                owner, value = it["poison"]
                hit = next((p for p in params[owner] if p.grad is not None and p.numel() > 0), None)
                if hit is not None:
                    hit.grad.view(-1)[0] = value
            for i, opt in enumerate(opts):
                if i == 0 and it["clip"] is not None:
                    scaler.unscale_(opt)
                    clip(params[0], it["clip"])
                scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
            if k == reload_at:  # a resumed run: new scaler and optimizers, loaded
                saved, saved_opts = copy.deepcopy(scaler.state_dict()), [copy.deepcopy(o.state_dict()) for o in opts]
                scaler = new_scaler()
                scaler.load_state_dict(saved)
                opts = [getattr(optim, name)(ps, **kw) for (name, kw, _), ps in zip(optimizers, params)]
                for opt, sd in zip(opts, saved_opts):
                    opt.load_state_dict(sd)
    except AssertionError as error:
        return str(error)
    return scales, [p.detach() for ps in params for p in ps]


@pytest.mark.parametrize("seed", range(40))
def test_random_scaler_scenario_matches_torch(seed):
    """genesis.amp.GradScaler with genesis optimizers against torch.amp.GradScaler("cpu") with
    torch's, on drawn runs: the same scale after every iteration (so the same steps skipped),
    the same parameters, and the same error where torch refuses (a drawn scenario found the
    missing "No inf checks" refusal; 2,500 seeds agree)."""
    expected, got = _run_scaler_scenario(seed, "torch"), _run_scaler_scenario(seed, "genesis")
    if isinstance(expected, str):
        assert got == expected
        return
    assert not isinstance(got, str), got
    assert got[0] == expected[0]
    for p, q in zip(got[1], expected[1]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_settings_accessors():
    scaler = GradScaler(init_scale=8.0, growth_factor=4.0, backoff_factor=0.25, growth_interval=7)
    assert scaler.is_enabled() and scaler.get_scale() == 8.0
    assert (scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval()) == (4.0, 0.25, 7)
    scaler.set_growth_factor(3.0)
    scaler.set_backoff_factor(0.5)
    scaler.set_growth_interval(1)
    params = make_params()
    run_iterations(scaler, genesis.optim.SGD(params, lr=0.01), params, [0])
    assert scaler.get_scale() == 24.0


# ---------------------------------------------------------------------------- the example
def test_train_mixed_precision_example(capsys, monkeypatch):
    """examples/train_mixed_precision.py (the docs' mixed-precision example) runs with autocast
    on, the scaler never skips, and the printed loss falls."""
    monkeypatch.setattr(genesis, "enable_autocast", False)  # restored after the example sets it
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the example imports teacher_data.py beside it
    spec = importlib.util.spec_from_file_location("train_mixed_precision", EXAMPLES / "train_mixed_precision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "docs" in module.__doc__
    model, optimizer, scaler = module.main(steps=32, log_every=8)
    assert genesis.enable_autocast is True
    losses = [float(v) for v in re.findall(r"Loss: ([0-9]+\.[0-9]+)", capsys.readouterr().out)]
    assert len(losses) == 4
    assert losses[-1] < 0.6 * losses[0], losses
    assert scaler.get_scale() == 2.0**16
    assert {float(s["step"]) for s in optimizer.state.values()} == {32.0}
    with genesis.autocast():
        assert model(torch.randn(2, 16)).dtype == torch.bfloat16
