"""The deferred (fused) clip: optimizer.clip_grad_norm_ / clip_grad_value_ and GradScaler's lazy
unscale_ (docs/mixed-precision.md#fused-clipping, NOTE: [deferred clip] in genesis/optim/_clip.py).

The fused sequence (unscale_ lazy, the norm pass, the coefficient applied inside the update) must
give the bits of genesis's eager sequence (unscale_ in place, genesis.nn.utils.clip_grad_norm_,
step) for float32 gradients, and torch's sequence within float32 tolerance, with the steps whose
gradients hold inf/NaN skipped (nothing changed, step counters included)."""

import math

import numpy as np
import pytest
import torch

import genesis
from genesis.amp import GradScaler
from genesis.nn.utils import clip_grad_norm_, clip_grad_value_

import reference as R

SHAPES = ((17, 5), (5,), (3, 7, 2), (0,), (1,))


def make_params(seed=0, dtype=torch.float32, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def clone(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def grads_for(params, step, scale, poison=None):
    """Random gradients (times ``scale``) for ``params``; the same for the same step. One
    element of the first non-empty one is ``poison`` if given. The frozen parameter at index 4
    has no gradient on odd steps."""
    g = torch.Generator().manual_seed(1000 + step)
    out = []
    for i, p in enumerate(params):
        if i == 4 and step % 2:
            out.append(None)
            continue
        x = torch.randn(p.shape, generator=g) * (5.0 if step % 3 == 0 else 0.05)
        out.append((x * scale).to(p.dtype))
    if poison is not None:
        out[0].view(-1)[7] = poison
    return out


def give(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()


def bits(t):
    t = t.detach().reshape(-1)
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_same_bits(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(bits(x), bits(y))


def state_tensors(opt):
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            for k in sorted(opt.state.get(p, {})):
                v = opt.state[p][k]
                out.append(v if torch.is_tensor(v) else torch.tensor(float(v)))
    return out


def snapshot(params, opt):
    return [p.detach().clone() for p in params], [t.clone() for t in state_tensors(opt)]


POISON = {6: math.inf, 23: -math.inf, 41: math.nan}


def run_sequence(kind, params, opt, scaler, steps, max_norm=1.0, norm_type=2.0, value=None):
    """One training run: per step, scaled gradients, unscale_, a clip, the scaler's step and
    update. ``kind``: "fused" (optimizer.clip_grad_norm_), "eager" (genesis.nn.utils) or
    "torch" (torch.nn.utils). Returns the norms and whether each step changed anything."""
    norms, changed = [], []
    for i in range(steps):
        scale = scaler.get_scale()
        scaler.scale(torch.tensor(1.0))
        give(params, grads_for(params, i, scale, POISON.get(i)))
        before = snapshot(params, opt)
        scaler.unscale_(opt)
        if kind == "fused":
            norms.append(opt.clip_grad_norm_(max_norm, norm_type))
            if value is not None:
                opt.clip_grad_value_(value)
        else:
            clip = clip_grad_norm_ if kind == "eager" else torch.nn.utils.clip_grad_norm_
            norms.append(clip(params, max_norm, norm_type))
            if value is not None:
                (clip_grad_value_ if kind == "eager" else torch.nn.utils.clip_grad_value_)(params, value)
        scaler.step(opt)
        scaler.update()
        after = snapshot(params, opt)
        changed.append(
            not all(torch.equal(bits(a), bits(b)) for a, b in zip(before[0] + before[1], after[0] + after[1]))
        )
    return norms, changed


def test_fused_equals_eager_bitwise_and_torch_adamw():
    """60 steps of AdamW with GradScaler and clip_grad_norm_, infs and a NaN injected: the
    fused sequence equals genesis's eager one bit for bit (parameters, state, norms, scale)
    and torch's (GradScaler("cpu"), clip_grad_norm_, AdamW(fused=True)) within float32
    tolerance; the poisoned steps change nothing, step counters included."""
    base = make_params()
    runs = {}
    for kind in ("fused", "eager", "torch"):
        params = clone(base)
        if kind == "torch":
            opt = torch.optim.AdamW(params, lr=0.01, weight_decay=0.1, fused=True)
            scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=4)
        else:
            opt = genesis.optim.AdamW(params, lr=0.01, weight_decay=0.1)
            scaler = GradScaler(init_scale=2.0**10, growth_interval=4)
        norms, changed = run_sequence(kind, params, opt, scaler, 60)
        runs[kind] = (params, opt, scaler, norms, changed)
    fused, eager, theirs = runs["fused"], runs["eager"], runs["torch"]
    assert_same_bits(fused[0], eager[0])
    assert_same_bits(state_tensors(fused[1]), state_tensors(eager[1]))
    assert_same_bits(fused[3], eager[3])
    for i, (a, b) in enumerate(zip(fused[3], theirs[3])):
        if i in POISON:
            assert not math.isfinite(float(a)) and not math.isfinite(float(b))
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
    assert fused[4] == eager[4] == [i not in POISON for i in range(60)]
    assert sum(1 for n in fused[3] if math.isfinite(float(n)) and float(n) > 1.0) > 10  # clipping ran
    assert fused[2].get_scale() == eager[2].get_scale() == theirs[2].get_scale()
    for p, q in zip(fused[0], theirs[0]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    for p, q in zip(fused[0], theirs[0]):
        if p in fused[1].state:
            s, t = fused[1].state[p], theirs[1].state[q]
            assert float(s["step"]) == float(t["step"])
            for k in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(s[k], t[k], rtol=1e-5, atol=1e-7)
    assert float(fused[1].state[fused[0][0]]["step"]) == 60 - len(POISON)


@pytest.mark.parametrize("name", sorted(R.RICH))
def test_every_rule_fused_equals_eager(name):
    """Every rule of the registry, everything on: the fused clip (norm and value, with the
    scaler) gives the eager sequence's bits."""
    cls = getattr(genesis.optim, name)
    base = make_params(1)
    results = []
    for kind in ("fused", "eager"):
        params = clone(base)
        opt = cls(params, **R.RICH[name])
        scaler = GradScaler(init_scale=2.0**8, growth_interval=3)
        results.append((params, opt, run_sequence(kind, params, opt, scaler, 30, max_norm=0.5, value=0.02)))
    (pf, of, rf), (pe, oe, re_) = results
    assert_same_bits(pf, pe)
    assert_same_bits(state_tensors(of), state_tensors(oe))
    assert rf[1] == re_[1]


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, math.inf, 0.0, -1.0, -math.inf])
def test_norm_types_match_eager(norm_type):
    """Every norm type clip_grad_norm_ takes: the same norm (as returned: a float32 tensor) and
    the same bits after the step."""
    base = make_params(2, shapes=((6, 4), (9,), (3,)))
    out = []
    for kind in ("fused", "eager"):
        params = clone(base)
        opt = genesis.optim.Adam(params, lr=0.01)
        scaler = GradScaler(init_scale=2.0**6, growth_interval=5)
        norms, _ = run_sequence(kind, params, opt, scaler, 8, max_norm=0.3, norm_type=norm_type)
        out.append((params, opt, norms))
    assert_same_bits(out[0][2], out[1][2])
    assert_same_bits(out[0][0], out[1][0])
    assert_same_bits(state_tensors(out[0][1]), state_tensors(out[1][1]))


@pytest.mark.parametrize("library", ["torch", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_without_scaler(library, dtype):
    """No GradScaler: opt.clip_grad_norm_ then step equals genesis.nn.utils' clip then step,
    for torch and NumPy parameters, float32 and float64 (NumPy: a float64 norm)."""
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s).astype(dtype) for s in ((40,), (3, 3))]
    if library == "torch":
        make, data = (lambda v: torch.nn.Parameter(torch.tensor(v))), (lambda p: p.detach().numpy())
        grad = torch.tensor
    else:
        make, data, grad = (lambda v: genesis.nn.Parameter(v.copy())), (lambda p: p.data), np.array
    ps, qs = [make(v) for v in values], [make(v) for v in values]
    of = genesis.optim.SGD(ps, lr=0.1, momentum=0.9)
    oe = genesis.optim.SGD(qs, lr=0.1, momentum=0.9)
    for i in range(5):
        for p, q, v in zip(ps, qs, values):
            g = (np.random.default_rng(i).standard_normal(v.shape) * 3).astype(dtype)
            p.grad, q.grad = grad(g), grad(g.copy())
        a, b = of.clip_grad_norm_(1.0), clip_grad_norm_(qs, 1.0)
        assert type(a) is type(b) and float(a) == float(b) and float(a) > 1.0
        of.step()
        oe.step()
    for p, q in zip(ps, qs):
        assert np.array_equal(data(p), data(q))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_params_with_master_weights(dtype):
    """16-bit parameters with float32 master weights. With a power-of-two scale the lazy
    unscale is exact, so the norms equal the eager ones bit for bit; the fused update keeps
    the clipped gradient in float32 where the eager clip rounds it to 16 bits, so parameters
    agree to 16-bit precision (and exactly on steps the clip leaves alone)."""
    base = make_params(3, shapes=((32, 8), (8,)))
    out = []
    for kind in ("fused", "eager"):
        params = [torch.nn.Parameter(p.detach().to(dtype)) for p in base]
        opt = genesis.optim.AdamW(params, lr=0.01, master_weights=True)
        scaler = GradScaler(init_scale=2.0**8, growth_interval=4)
        norms, changed = run_sequence(kind, params, opt, scaler, 20, max_norm=0.5)
        out.append((params, opt, norms, changed))
    assert_same_bits(out[0][2], out[1][2])
    assert out[0][3] == out[1][3]
    for p, q in zip(out[0][0], out[1][0]):
        torch.testing.assert_close(p.float(), q.float(), rtol=2e-2, atol=2e-3)
    masters = [out[k][1].state[out[k][0][0]]["master_param"] for k in (0, 1)]
    torch.testing.assert_close(masters[0], masters[1], rtol=1e-2, atol=1e-3)
    # Clip inactive (a huge max_norm): the bits agree exactly.
    res = []
    for kind in ("fused", "eager"):
        params = [torch.nn.Parameter(p.detach().to(dtype)) for p in base]
        opt = genesis.optim.AdamW(params, lr=0.01, master_weights=True)
        run_sequence(kind, params, opt, GradScaler(init_scale=2.0**8), 6, max_norm=1e9)
        res.append((params, opt))
    assert_same_bits(res[0][0], res[1][0])
    assert_same_bits(state_tensors(res[0][1]), state_tensors(res[1][1]))


def test_gradients_are_not_written():
    """p.grad keeps its (scaled, unclipped) values through the clip and after the step."""
    params = make_params()
    opt = genesis.optim.AdamW(params, lr=0.01)
    scaler = GradScaler(init_scale=64.0)
    scaler.scale(torch.tensor(1.0))
    give(params, grads_for(params, 0, 64.0))
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    scaler.unscale_(opt)
    assert float(opt.clip_grad_norm_(0.1)) > 0.1
    assert_same_bits([p.grad for p in params], grads)
    scaler.step(opt)
    assert_same_bits([p.grad for p in params], grads)


def test_lazy_unscale_then_plain_step():
    """scaler.unscale_ then optimizer.step() directly (no scaler.step): the step divides by
    the scale, as torch's in-place unscale_ would have, and the gradients stay scaled."""
    base = make_params()
    ps, qs = clone(base), clone(base)
    of, oe = genesis.optim.Adam(ps, lr=0.01), genesis.optim.Adam(qs, lr=0.01)
    scaler = GradScaler(init_scale=2.0**5)
    scaler.scale(torch.tensor(1.0))
    give(ps, grads_for(ps, 0, 2.0**5))
    give(qs, grads_for(qs, 0, 1.0))
    scaler.unscale_(of)
    of.step()
    oe.step()
    assert_same_bits(ps, qs)


def test_torch_clip_after_lazy_unscale_is_refused():
    """torch.nn.utils.clip_grad_norm_ cannot know that a genesis unscale_ is pending; its
    in-place write shows in the gradients' version counters, and the step refuses to run with
    them (nothing changed) instead of updating with scaled-then-clipped values."""
    params = make_params()
    opt = genesis.optim.SGD(params, lr=0.1)
    scaler = GradScaler()
    scaler.scale(torch.tensor(1.0))
    give(params, grads_for(params, 0, 2.0**16))
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    before = snapshot(params, opt)
    with pytest.raises(RuntimeError, match="gradients changed"):
        scaler.step(opt)
    assert_same_bits(before[0], snapshot(params, opt)[0])


def test_clip_value_alone_and_twice():
    """clip_grad_value_ deferred equals the eager clamp; twice clamps to the smaller bound."""
    base = make_params()
    ps, qs = clone(base), clone(base)
    of, oe = genesis.optim.RMSprop(ps, lr=0.01), genesis.optim.RMSprop(qs, lr=0.01)
    for i in range(4):
        give(ps, grads_for(ps, i, 1.0))
        give(qs, grads_for(qs, i, 1.0))
        of.clip_grad_value_(0.5)
        of.clip_grad_value_(0.02)
        clip_grad_value_(qs, 0.02)
        of.step()
        oe.step()
    assert_same_bits(ps, qs)
    assert_same_bits(state_tensors(of), state_tensors(oe))


# --------------------------------------------------------------------------- error cases
def plain_and_clipped(seed=0):
    base = make_params(seed)
    ps, qs = clone(base), clone(base)
    return ps, qs, genesis.optim.SGD(ps, lr=0.1), genesis.optim.SGD(qs, lr=0.1)


def test_error_if_nonfinite_records_nothing():
    ps, qs, of, oe = plain_and_clipped()
    give(ps, grads_for(ps, 0, 1.0, poison=math.nan))
    grads = [None if p.grad is None else p.grad.clone() for p in ps]
    with pytest.raises(RuntimeError, match="non-finite"):
        of.clip_grad_norm_(1.0, error_if_nonfinite=True)
    assert_same_bits([p.grad for p in ps], grads)
    give(ps, grads_for(ps, 1, 1.0))
    give(qs, grads_for(qs, 1, 1.0))
    of.step()  # no clip was recorded
    oe.step()
    assert_same_bits(ps, qs)


def test_clip_twice_and_value_then_norm_are_errors():
    ps, _, of, _ = plain_and_clipped()
    give(ps, grads_for(ps, 0, 1.0))
    of.clip_grad_norm_(1.0)
    with pytest.raises(RuntimeError, match="already called"):
        of.clip_grad_norm_(1.0)
    of.zero_grad()
    give(ps, grads_for(ps, 0, 1.0))
    of.clip_grad_value_(1.0)
    with pytest.raises(RuntimeError, match="after clip_grad_value_"):
        of.clip_grad_norm_(1.0)
    with pytest.raises(ValueError, match="clip_value >= 0"):
        of.clip_grad_value_(-1.0)
    with pytest.raises(TypeError, match="LBFGS does not support"):
        genesis.optim.LBFGS(ps).clip_grad_norm_(1.0)


def test_pending_clip_lives_one_step():
    """The coefficient applies to the next step only: a later step without a clip is plain;
    zero_grad() discards it; a step skipped by the scaler discards it too."""
    ps, qs, of, oe = plain_and_clipped()
    give(ps, grads_for(ps, 0, 1.0))
    of.clip_grad_norm_(1e-3)
    of.step()
    with torch.no_grad():
        for p, q in zip(ps, qs):
            q.copy_(p)  # the plain optimizer continues from the clipped step's result
    for i in (1, 2):
        give(ps, grads_for(ps, i, 1.0))
        give(qs, grads_for(qs, i, 1.0))
        if i == 2:
            of.clip_grad_norm_(1e-3)
            of.zero_grad()  # discards it
            give(ps, grads_for(ps, i, 1.0))
        of.step()
        oe.step()
        assert_same_bits(ps, qs)
    ps2, _, of2, _ = plain_and_clipped()
    give(ps2, grads_for(ps2, 0, 1.0))
    of2.clip_grad_norm_(1e-3)
    scaler = GradScaler()
    scaler.scale(torch.tensor(1.0))
    ps2[0].grad.view(-1)[0] = math.inf
    scaler.unscale_(of2)
    scaler.step(of2)  # skipped: the pending clip goes with it
    scaler.update()
    assert "_pending_clip" not in of2.__dict__


def test_step_without_clip_after_clipped_step_is_plain():
    """After a clipped step, an unclipped one equals the plain optimizer's step."""
    base = make_params()
    ps, qs = clone(base), clone(base)
    of, oe = genesis.optim.SGD(ps, lr=0.1), genesis.optim.SGD(qs, lr=0.1)
    give(ps, grads_for(ps, 0, 1.0))
    give(qs, grads_for(qs, 0, 1.0))
    of.clip_grad_norm_(1e-2)
    clip_grad_norm_(qs, 1e-2)
    of.step()
    oe.step()
    give(ps, grads_for(ps, 1, 1.0))
    give(qs, grads_for(qs, 1, 1.0))
    of.step()
    oe.step()
    assert_same_bits(ps, qs)


def test_new_backward_between_clip_and_step_is_refused():
    """A backward that accumulates into the clipped gradients (or new gradient tensors)
    between the clip and the step: the step raises, changing nothing; clipping again (or
    zero_grad) makes the next step valid."""
    model = torch.nn.Linear(4, 3)
    opt = genesis.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(5, 4)
    model(x).square().sum().backward()
    opt.clip_grad_norm_(0.1)
    model(x).square().sum().backward()  # accumulates in place
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="gradients changed"):
        opt.step()
    assert_same_bits(before, [p.detach() for p in model.parameters()])
    assert opt.state == {} or all(float(s["step"]) == 0 for s in opt.state.values())
    opt.clip_grad_norm_(0.1)  # the stale clip is dropped, a fresh one computed
    opt.step()
    for p in model.parameters():
        p.grad = p.grad.clone()  # new tensors
    opt.clip_grad_norm_(0.1)
    for p in model.parameters():
        p.grad = p.grad.clone()
    with pytest.raises(RuntimeError, match="gradients changed"):
        opt.step()


@pytest.mark.parametrize("change", ["dropped", "appeared", "new_group", "array_replaced"])
def test_gradients_dropped_or_added_between_clip_and_step_are_refused(change):
    """The clip is computed for the gradients as they are (NOTE: [grad fingerprint]): a
    gradient set to None, one given to a parameter that had none, a parameter group added
    with gradients, or a NumPy gradient replaced by another array is a change the step
    refuses, changing nothing; the same steps without a change go through."""
    numpy = change == "array_replaced"
    make = genesis.nn.Parameter if numpy else torch.nn.Parameter
    grad = (lambda n: np.full(n, 0.5, dtype=np.float32)) if numpy else (lambda n: torch.full((n,), 0.5))
    params = [make(np.ones(n, dtype=np.float32) if numpy else torch.ones(n)) for n in (3, 5, 7)]
    extra = make(np.ones(2, dtype=np.float32) if numpy else torch.ones(2))
    values = (lambda p: np.array(p.data, copy=True)) if numpy else (lambda p: p.detach().numpy().copy())
    for p in params[:2]:
        p.grad = grad(p.shape[0])
    for changed in (False, True):
        opt = genesis.optim.SGD(params, lr=0.1)
        opt.clip_grad_norm_(0.1)
        if changed:
            if change == "dropped":
                params[1].grad = None
            elif change == "appeared":
                params[2].grad = grad(7)
            elif change == "new_group":
                extra.grad = grad(2)
                opt.add_param_group({"params": [extra]})
            else:
                params[0].grad = grad(3)
        before = [values(p) for p in params]
        if not changed:
            opt.step()
            assert not np.array_equal(before[0], values(params[0]))
            continue
        with pytest.raises(RuntimeError, match="gradients changed"):
            opt.step()
        assert all(np.array_equal(a, values(p)) for a, p in zip(before, params))


def test_clip_with_no_gradients():
    params = make_params()
    opt = genesis.optim.Adam(params, lr=0.01)
    total = opt.clip_grad_norm_(1.0)
    assert torch.is_tensor(total) and float(total) == 0.0
    opt.step()  # nothing to update
    assert opt.state == {} or all(float(s["step"]) == 0 for s in opt.state.values())
    give(params, grads_for(params, 0, 1.0))
    opt.step()


def _lazily_unscaled_sgd():
    """An SGD optimizer whose gradients (scaled by 8) a GradScaler has unscale_d lazily."""
    params = make_params()
    opt = genesis.optim.SGD(params, lr=0.1)
    scaler = GradScaler(init_scale=8.0)
    scaler.scale(torch.tensor(1.0))
    give(params, grads_for(params, 0, 8.0))
    scaler.unscale_(opt)
    return params, opt, scaler


def test_genesis_clip_after_lazy_unscale_unscales_first():
    """The documented torch-style sequence with genesis.nn.utils: unscale_ (lazy), the clip
    function unscales in place first, so it sees the true gradients, and the step's inf check
    comes from that unscale."""
    params, opt, scaler = _lazily_unscaled_sgd()
    expected = [None if g is None else g / 8 for g in grads_for(params, 0, 8.0)]
    clip_grad_value_(params, 1e9)
    assert_same_bits([p.grad for p in params if p.grad is not None], [g for g in expected if g is not None])
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 8.0


def test_eager_clips_after_lazy_unscale_keep_its_inf_check_a_backward_does_not():
    """genesis.nn.utils' in-place clips advance the gradients' version counters (NOTE: [version
    counters]); after an unscale_ they made eager, two such clips in a row still step with its
    inf check, as torch's scaler does. A backward accumulating after them is a change the step
    refuses, changing nothing."""
    params, opt, scaler = _lazily_unscaled_sgd()
    clip_grad_value_(params, 1e9)
    clip_grad_norm_(params, 1e-3)
    before = [p.detach().clone() for p in params]
    scaler.step(opt)
    assert not all(torch.equal(a, p.detach()) for a, p in zip(before, params))

    scaler.update()
    scaler.scale(torch.tensor(1.0))
    give(params, grads_for(params, 1, 8.0))
    scaler.unscale_(opt)
    clip_grad_norm_(params, 1.0)
    for p in params:
        if p.grad is not None:
            p.grad.add_(1.0)  # as a backward accumulating into them
    before = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError, match="gradients changed"):
        scaler.step(opt)
    assert_same_bits(before, [p.detach() for p in params])


def test_an_eager_clip_after_a_deferred_one_is_refused_at_the_step():
    """optimizer.clip_grad_norm_ computes its coefficient for the gradients as they are; an
    in-place clip after it (genesis's, as torch's) changes them, and the step refuses the
    stale coefficient instead of clipping twice."""
    for clip in (clip_grad_norm_, torch.nn.utils.clip_grad_norm_):
        params = make_params()
        opt = genesis.optim.SGD(params, lr=0.1)
        give(params, grads_for(params, 0, 1.0))
        opt.clip_grad_norm_(1e-2)
        clip(params, 1e-3)
        with pytest.raises(RuntimeError, match="gradients changed"):
            opt.step()


def test_deferred_clip_refuses_differentiable_groups():
    """differentiable=True groups run torch's traceable update, not the fused core, so the
    deferred clip (and the lazy unscale) cannot ride on it: a clear TypeError, nothing changed."""
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    p.grad = torch.randn(5, dtype=torch.float64)
    opt = genesis.optim.SGD([p], lr=0.1, differentiable=True)
    before = p.detach().clone()
    with pytest.raises(TypeError, match="differentiable=True"):
        opt.clip_grad_norm_(1.0)
    assert torch.equal(p.detach(), before)
    assert not genesis.optim._clip.supports_lazy_unscale(opt)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("AdamW", {}),
        ("AdamW", dict(state_dtype="int8", min_8bit_size=1)),
        ("SGD", dict(momentum=0.9)),
        ("LAMB", {}),
        ("Adafactor", {}),
    ],
    ids=["AdamW", "AdamW-int8", "SGD", "LAMB", "Adafactor"],
)
def test_plain_gradient_loop_gives_the_transform_loops_bits(name, kwargs):
    """A step without scaler or clip runs the CPU drivers' plain-load loops (PlainGrad in
    include/genesis/update_element.h); a deferred clip_grad_value_ whose bound no gradient
    reaches runs the general ones (products by 1, a clamp that never binds). Same bits, every
    driver: element-wise, 8-bit state, reduction."""
    shapes = ((300, 40), (4097,), (7, 3), (0,))
    plain, general = make_params(3, shapes=shapes), make_params(3, shapes=shapes)
    opts = [getattr(genesis.optim, name)(ps, lr=1e-2, **kwargs) for ps in (plain, general)]
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in plain]
        for ps in (plain, general):
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
        opts[0].step()
        opts[1].clip_grad_value_(1e30)
        opts[1].step()
    for a, b in zip(plain, general):
        assert torch.equal(a, b)
    for a, b in zip(plain, general):
        for k, v in opts[0].state[a].items():
            if torch.is_tensor(v):
                assert torch.equal(v, opts[1].state[b][k]), k


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 0.0])
@pytest.mark.parametrize("scaled", [False, True], ids=["no-scaler", "GradScaler"])
@pytest.mark.parametrize("how", ["deferred", "function"])
def test_complex_parameters_clip_as_torch(how, scaled, norm_type):
    """Complex parameters: opt.clip_grad_norm_ (deferred) or genesis.nn.utils.clip_grad_norm_
    (after a lazy unscale_ too), then the step, give torch's clip_grad_norm_ and step (torch's
    norm of a complex gradient is over its magnitudes). torch's CPU GradScaler refuses complex
    gradients, so torch runs unscaled: the scale, a power of two, cancels exactly."""
    out = []
    for lib in ("torch", "genesis"):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(5, 4, dtype=torch.complex64)), torch.nn.Parameter(torch.randn(3))]
        opt = (torch.optim if lib == "torch" else genesis.optim).AdamW(params, lr=0.1)
        scaler = GradScaler(init_scale=1024.0) if scaled and lib == "genesis" else None
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            opt.zero_grad()
            x = torch.randn(6, 5, dtype=torch.complex64, generator=gen)
            loss = (x @ params[0]).abs().pow(2).mean() + params[1].pow(2).sum()
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(opt)
            if lib == "torch":
                torch.nn.utils.clip_grad_norm_(params, 0.5, norm_type=norm_type)
            elif how == "deferred":
                opt.clip_grad_norm_(0.5, norm_type=norm_type)
            else:
                clip_grad_norm_(params, 0.5, norm_type=norm_type)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        out.append(params)
    for a, b in zip(*out):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)


def test_complex_gradients_are_not_clamped():
    """torch's clip_grad_value_ refuses complex gradients (clamp has no complex order); so do
    genesis's, deferred or not, before anything is recorded or changed."""
    param = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    param.grad = torch.full((3,), 2 + 2j, dtype=torch.complex64)
    opt = genesis.optim.SGD([param], lr=0.1)
    with pytest.raises(TypeError, match="cannot clamp complex gradients"):
        opt.clip_grad_value_(1.0)
    with pytest.raises(TypeError, match="cannot clamp complex gradients"):
        clip_grad_value_([param], 1.0)
    before = param.detach().clone()
    opt.step()  # nothing pending: the plain update
    torch.testing.assert_close(param.detach(), before - 0.1 * param.grad)
