"""Parameters laid out densely in another order than contiguous: channels_last convolution
weights and a transposed matrix (NOTE: [dense layouts] in csrc/python/bindings.cpp).

The element-wise rules update them in place in memory order, with their state in the same
layout (torch's preserve_format); the reduction rules and 8-bit state go through contiguous
copies. Either way every flag combination equals torch's optimizer on the same model for 30
steps, and the clip functions and GradScaler take such gradients as torch does."""

import os
import sys

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402

import reference as R  # noqa: E402

STEPS = 30
NAMES = [n for n in R.NAMES if hasattr(torch.optim, n)]
CASES = [(n, hp) for n, hp in R.all_cases() if n in NAMES]
CASE_IDS = [i for (n, _), i in zip(R.all_cases(), R.all_case_ids()) if n in NAMES]


class ConvNet(torch.nn.Module):
    """Two channels_last convolutions and a linear layer whose weight is a transposed matrix
    (strides (1, 6)): three dense layouts that are not contiguous, and contiguous biases."""

    def __init__(self, dtype):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 4, 3, dtype=dtype)
        self.c2 = torch.nn.Conv2d(4, 6, 3, dtype=dtype)
        self.fc = torch.nn.Linear(6, 2, dtype=dtype)
        self.to(memory_format=torch.channels_last)
        self.fc.weight = torch.nn.Parameter(self.fc.weight.detach().t().contiguous().t())

    def forward(self, x):
        y = torch.tanh(self.c2(torch.tanh(self.c1(x))))
        return self.fc(y.mean(dim=(2, 3)))


def _batches(dtype, steps=STEPS):
    g = torch.Generator().manual_seed(1)
    return [
        torch.randn(2, 3, 7, 7, generator=g, dtype=dtype).to(memory_format=torch.channels_last) for _ in range(steps)
    ]


def _loss(model, x):
    # Bounded, so that maximize=True cases saturate instead of diverging.
    return (torch.tanh(model(x)) - 0.5).square().mean()


def _train(model, opt, batches):
    for x in batches:
        _loss(model, x).backward()
        opt.step()
        opt.zero_grad()


def _layouts_are_dense(model):
    return [p.is_contiguous() for p in model.parameters()] == [False, True, False, True, False, True]


def _dense_params(dtype):
    """Parameters of three dense non-contiguous layouts (channels_last, a transposed matrix,
    channels_last_3d) and a contiguous one, with their contiguous twins (the same values)."""
    g = torch.Generator().manual_seed(2)
    values = [torch.randn(s, generator=g, dtype=dtype) for s in ((4, 3, 3, 3), (5, 7), (2, 3, 2, 2, 2), (6,))]
    layouts = [
        lambda v: v.contiguous(memory_format=torch.channels_last),
        lambda v: v.t().contiguous().t(),
        lambda v: v.contiguous(memory_format=torch.channels_last_3d),
        lambda v: v,
    ]
    dense = [torch.nn.Parameter(f(v.clone())) for f, v in zip(layouts, values)]
    assert [p.is_contiguous() for p in dense] == [False, False, False, True]
    return dense, [torch.nn.Parameter(v.clone()) for v in values]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name, hp", R.all_cases(), ids=R.all_case_ids())
def test_every_rule_on_dense_layouts_gives_the_contiguous_bits(name, hp, dtype):
    """The same gradients (each in its parameter's layout) give the bits of the contiguous run,
    parameters and state; an element-wise rule keeps its state in the parameter's layout."""
    dense, plain = _dense_params(dtype)
    opts = [getattr(genesis.optim, name)([{"params": ps[:2]}, {"params": ps[2:]}], **hp) for ps in (dense, plain)]
    g = torch.Generator().manual_seed(5)
    for _ in range(STEPS):
        for p, q in zip(dense, plain):
            grad = torch.randn(q.shape, generator=g, dtype=dtype)
            p.grad = torch.empty_like(p).copy_(grad)  # the parameter's layout, as autograd gives it
            q.grad = grad
        for opt in opts:
            opt.step()
    elementwise = getattr(genesis.optim, name)._dense_layouts
    for p, q in zip(dense, plain):
        assert torch.equal(p.detach(), q.detach())
        for key, value in opts[1].state[q].items():
            got = opts[0].state[p][key]
            assert torch.equal(got, value), f"{name} state {key}"
            if elementwise and value.shape == q.shape and value.dim() > 0:
                assert got.stride() == p.stride(), f"{name} state {key}: not in the parameter's layout"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name, hp", CASES, ids=CASE_IDS)
def test_every_rule_on_dense_layouts_matches_torch(name, hp, dtype):
    """The same gradients on the same dense layouts, with torch's optimizer (which walks any
    layout itself): parameters and state within the parity tolerance, state in torch's layout."""
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    ours, theirs = _dense_params(dtype)[0], _dense_params(dtype)[0]
    gopt = getattr(genesis.optim, name)(ours, **hp)
    topt = R.torch_class(name)(theirs, **R.float32_twin_hp(name, hp, dtype))
    g = torch.Generator().manual_seed(5)
    for _ in range(STEPS):
        for p, q in zip(ours, theirs):
            grad = torch.randn(q.shape, generator=g, dtype=dtype)
            p.grad = torch.empty_like(p).copy_(grad)
            q.grad = torch.empty_like(q).copy_(grad)
        gopt.step()
        topt.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, **tol)
        for key, value in topt.state[q].items():
            got = gopt.state[p][key]
            torch.testing.assert_close(got, value, **tol, msg=f"{name} state {key}")
            if getattr(genesis.optim, name)._dense_layouts and value.dim() > 0:
                assert got.stride() == value.stride(), f"{name} state {key}: not in torch's layout"


@pytest.mark.parametrize("name", ["SGD", "AdamW", "LAMB", "Adafactor"])
def test_a_layout_changed_between_steps_continues_exactly(name):
    """The parameters switched between channels_last and contiguous memory mid-training: the
    state follows the layout (copied once, the same values), and the run gives the bits of one
    that kept the contiguous layout throughout."""
    hp = {"lr": 1e-2, "momentum": 0.9} if name == "SGD" else {"lr": 1e-2}
    models = [ConvNet(torch.float64), ConvNet(torch.float64)]
    for p in models[1].parameters():
        p.data = p.data.contiguous()
    opts = [getattr(genesis.optim, name)(m.parameters(), **hp) for m in models]
    batches = _batches(torch.float64, 12)
    for step, x in enumerate(batches):
        if step in (4, 8):
            for p in models[0].parameters():
                layout = torch.contiguous_format if step == 4 else torch.channels_last
                p.data = p.data.contiguous(memory_format=layout) if p.dim() == 4 else p.data
        for m, opt in zip(models, opts):
            _loss(m, x.contiguous()).backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("state_dtype", [None, "int8"])
def test_gradients_of_another_layout_and_8bit_state(state_dtype):
    """A gradient whose strides are not its parameter's (assigned by hand) is converted to the
    parameter's layout for the step; 8-bit state (blocks in the logical order) goes through a
    contiguous copy. Both give the bits of the same run on contiguous tensors."""
    opts_hp = dict(lr=1e-2, state_dtype=state_dtype, min_8bit_size=1) if state_dtype else dict(lr=1e-2)
    g = torch.Generator().manual_seed(3)
    values = torch.randn(4, 3, 5, 5, generator=g)
    dense = torch.nn.Parameter(values.clone().contiguous(memory_format=torch.channels_last))
    plain = torch.nn.Parameter(values.clone())
    opts = [genesis.optim.AdamW([dense], **opts_hp), genesis.optim.AdamW([plain], **opts_hp)]
    for _ in range(5):
        grad = torch.randn(4, 3, 5, 5, generator=g)
        dense.grad = grad.clone()  # contiguous, where the parameter is channels_last
        plain.grad = grad.clone()
        for opt in opts:
            opt.step()
    assert torch.equal(dense.detach(), plain.detach())
    for key, value in opts[1].state[plain].items():
        assert torch.equal(opts[0].state[dense][key], value), key


def test_clipping_and_grad_scaler_take_dense_gradients():
    """genesis.nn.utils' clip functions, the deferred clip and GradScaler on channels_last
    gradients (before, they refused them as not contiguous), against torch's."""
    models = [ConvNet(torch.float32), ConvNet(torch.float32)]
    x = _batches(torch.float32, 1)[0]
    for m in models:
        _loss(m, x).backward()
    got = genesis.nn.utils.clip_grad_norm_(models[0].parameters(), 1e-3)
    want = torch.nn.utils.clip_grad_norm_(models[1].parameters(), 1e-3)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-12)
    genesis.nn.utils.clip_grad_value_(models[0].parameters(), 1e-5)
    torch.nn.utils.clip_grad_value_(models[1].parameters(), 1e-5)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-12)

    models = [ConvNet(torch.float32), ConvNet(torch.float32)]
    gopt = genesis.optim.AdamW(models[0].parameters(), lr=1e-2)
    topt = torch.optim.AdamW(models[1].parameters(), lr=1e-2)
    gscaler, tscaler = genesis.amp.GradScaler(init_scale=256.0), torch.amp.GradScaler("cpu", init_scale=256.0)
    for x in _batches(torch.float32, 6):
        for m, opt, scaler in ((models[0], gopt, gscaler), (models[1], topt, tscaler)):
            scaler.scale(_loss(m, x)).backward()
            scaler.unscale_(opt)
        gopt.clip_grad_norm_(0.05)
        torch.nn.utils.clip_grad_norm_(models[1].parameters(), 0.05)
        for opt, scaler in ((gopt, gscaler), (topt, tscaler)):
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["AdamW", "SGD", "Lion"])
def test_bfloat16_dense_parameters_with_master_weights(name):
    """bfloat16 parameters in channels_last with float32 master weights (kept in their layout)
    give the bits of the contiguous run. (With stochastic_rounding the random bits follow the
    memory order instead, so the two layouts round differently: each is a valid run.)"""
    hp = dict(lr=1e-2, master_weights=True, **({"momentum": 0.9} if name == "SGD" else {}))
    dense, plain = _dense_params(torch.float32)
    dense = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in dense]
    plain = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in plain]
    opts = [getattr(genesis.optim, name)(ps, **hp) for ps in (dense, plain)]
    g = torch.Generator().manual_seed(9)
    for _ in range(10):
        for p, q in zip(dense, plain):
            grad = torch.randn(q.shape, generator=g).to(torch.bfloat16)
            p.grad = torch.empty_like(p).copy_(grad)
            q.grad = grad
        for opt in opts:
            opt.step()
    for p, q in zip(dense, plain):
        assert torch.equal(p.detach(), q.detach())
        master = opts[0].state[p]["master_param"]
        assert torch.equal(master, opts[1].state[q]["master_param"]) and master.stride() == p.stride()


def test_a_factor_state_of_another_layout_is_refused_by_name():
    """Adafactor's row factor (another shape than its parameter's) must stay contiguous: one of
    another dense layout, put there by hand, is refused with a ValueError before any update."""
    p = torch.nn.Parameter(torch.randn(3, 4, 5))
    opt = genesis.optim.Adafactor([p], lr=1e-2)
    p.grad = torch.randn(3, 4, 5)
    opt.step()
    row = opt.state[p]["row_var"]
    opt.state[p]["row_var"] = row.transpose(0, 1).contiguous().transpose(0, 1)
    assert not opt.state[p]["row_var"].is_contiguous()
    before = p.detach().clone()
    with pytest.raises(ValueError, match="state 'row_var' of parameter 0 of param group 0 does not match"):
        opt.step()
    assert torch.equal(p.detach(), before)
