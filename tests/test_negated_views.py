"""torch tensors with the negative bit set (lazily negated views: torch._neg_view, the .imag of
a conjugated complex tensor) hold minus their memory's values. The core reads memory, so a step
refuses such a parameter or gradient with a TypeError naming resolve_neg(), before anything is
modified, on the first step and on any later one (NOTE: [negative bit] in
csrc/python/bindings.cpp); it used to update with every element's sign flipped. The clip
functions give torch's results on them (a norm, a scale and a symmetric clamp do not depend on
the sign)."""

import pytest

torch = pytest.importorskip("torch")

import genesis  # noqa: E402

NAMES = ["SGD", "AdamW", "Lion", "LAMB", "Adafactor", "Muon"]


def _param(transposed=False):
    values = torch.linspace(-1.0, 1.0, 12).reshape(4, 3)
    return torch.nn.Parameter(values.t().contiguous().t() if transposed else values.clone())


def _grad(p, k):
    return torch.linspace(-2.0, 1.0, p.numel()).reshape(p.shape) * (k + 1)


def _make(name, p, **kwargs):
    kwargs = dict(kwargs, momentum=0.9) if name == "SGD" else kwargs
    return getattr(genesis.optim, name)([p], lr=0.1, **kwargs)


def _snapshot(p, opt):
    return p.detach().clone(), {k: v.clone() for k, v in opt.state.get(p, {}).items() if torch.is_tensor(v)}


def _unchanged(before, p, opt):
    values, state = before
    assert torch.equal(values, p.detach())
    now = {k: v for k, v in opt.state.get(p, {}).items() if torch.is_tensor(v)}
    assert sorted(now) == sorted(state) and all(torch.equal(state[k], now[k]) for k in state)


def test_a_negated_parameter_is_refused():
    p = torch.nn.Parameter(torch._neg_view(torch.linspace(0.5, 1.0, 4)))
    opt = genesis.optim.AdamW([p], lr=0.1)  # accepted, as by torch: its memory is checked when stepped
    p.grad = torch.ones(4)
    before = _snapshot(p, opt)
    with pytest.raises(TypeError, match=r"parameter 0 of param group 0 has its negative bit set.*resolve_neg"):
        opt.step()
    _unchanged(before, p, opt)


@pytest.mark.parametrize("transposed", [False, True], ids=["contiguous", "transposed"])
@pytest.mark.parametrize("int8", [False, True], ids=["float32-state", "int8-state"])
@pytest.mark.parametrize("name", NAMES)
def test_a_negated_gradient_is_refused_on_any_step(name, int8, transposed):
    if int8 and name in ("LAMB", "Adafactor", "Muon"):
        pytest.skip("8-bit state is for the element-wise rules")
    kwargs = {"state_dtype": "int8", "min_8bit_size": 0} if int8 else {}
    p = _param(transposed)
    opt = _make(name, p, **kwargs)
    for k in range(3):  # the first step admits the parameter; later ones take the cached path
        p.grad = _grad(p, k)
        opt.step()
    p.grad = torch._neg_view(_grad(p, 3))
    before = _snapshot(p, opt)
    with pytest.raises(TypeError, match="gradient of parameter 0 of param group 0 has its negative bit set"):
        opt.step()
    _unchanged(before, p, opt)
    p.grad = p.grad.resolve_neg()  # what the message asks for: then it steps as torch would
    opt.step()


@pytest.mark.parametrize("name", ["SGD", "AdamW", "Adafactor", "Muon"])
def test_a_resolved_gradient_steps_as_torch_with_the_negated_one(name):
    results = []
    for lib, resolve in ((torch.optim, False), (genesis.optim, True)):
        p = _param()
        opt = getattr(lib, name)([p], lr=0.1)
        for k in range(3):
            g = torch._neg_view(-_grad(p, k))  # the values of _grad, stored negated
            p.grad = g.resolve_neg() if resolve else g
            opt.step()
        results.append(p.detach())
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_clipping_negated_gradients_gives_torchs_values(clip):
    out = []
    for lib in (torch.nn.utils, genesis.nn.utils):
        p = _param()
        p.grad = torch._neg_view(-_grad(p, 4))
        # (torch's foreach kernels refuse negated inputs: its for-loop is the reference)
        if clip == "norm":
            total = lib.clip_grad_norm_([p], max_norm=1.0, foreach=False)
            out.append((float(total), p.grad.resolve_neg()))
        else:
            lib.clip_grad_value_([p], clip_value=3.0, foreach=False)
            out.append((0.0, p.grad.resolve_neg()))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-6)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-6, atol=0)
