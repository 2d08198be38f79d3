"""Mixed precision (docs/semantics.md#parameters, docs/semantics.md#update-rules and
docs/mixed-precision.md): float16 and bfloat16 parameters.

What is checked, and against what:
- parity with torch: torch's reference for a 16-bit parameter is a float32 copy updated by
  torch.optim, then cast. Both runs see the same 16-bit gradients (widened for torch) and, after
  each step, the same parameter values, so every 16-bit result must equal the rounded torch
  result exactly or be one ulp of the 16-bit type away (two float32 computations of the same
  update in a different order may straddle a rounding boundary, nothing more);
- master weights: the float32 master copy equals a float32 genesis run bit for bit, and the
  parameter is that master rounded to nearest;
- state_dtype='bfloat16': one rounding on store (step 1 is exact), and the run stays close to
  the float32-state run (tolerance derived below);
- stochastic rounding: reproducible bits (seed, parameter index, step counter), unbiased
  (mean error of >= 1e5 roundings within 3 standard errors of 0), not stalling where round to
  nearest does, and resumable through state_dict;
- conversions through the public API: all 65536 float16 and bfloat16 bit patterns widen
  exactly and survive widen-then-narrow; millions of float32 values (random bit patterns, every
  halfway case, subnormal range, overflow boundary, inf, NaN) narrow exactly as torch / NumPy do;
- NumPy float16 parameters, clipping of 16-bit gradients, state_dict round trips, invalid
  options.
"""

import io
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402
from genesis import optim  # noqa: E402
from genesis.nn import Parameter  # noqa: E402
from genesis.nn.utils import clip_grad_norm_, clip_grad_value_  # noqa: E402

import reference as R  # noqa: E402

NAMES = R.NAMES
HALVES = [torch.float16, torch.bfloat16]
HALF_IDS = ["float16", "bfloat16"]
STEPS = 25
# Tolerance between two float32 computations of the same rule (as tests/test_torch_parity.py).
F32_TOL = dict(rtol=1e-5, atol=1e-6)
PRECISION_KEYS = ("master_weights", "state_dtype", "stochastic_rounding", "seed", "stochastic_rounding_step")


# ----------------------------------------------------------------------------- helpers
def bits(t):
    """The integer view of a tensor's storage (compares NaN payloads, -0.0 and +0.0 too)."""
    view = {
        torch.float16: torch.int16,
        torch.bfloat16: torch.int16,
        torch.float32: torch.int32,
        torch.float64: torch.int64,
        torch.uint8: torch.uint8,  # 8-bit state codes
    }[t.dtype]
    return t.detach().contiguous().view(view)


def assert_same_bits(got, expected, what="", inputs=None):
    """got and expected have the same dtype and identical bits; NaN only needs to stay NaN
    (payloads are not part of any contract). On failure, show the first mismatches with the
    input that produced them."""
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != {expected.dtype}"
    got, expected = got.detach().reshape(-1), expected.detach().reshape(-1)
    nan = torch.isnan(expected.float())
    bad = (bits(got) != bits(expected)) & ~nan
    bad |= nan & ~torch.isnan(got.float())
    if bool(bad.any()):
        idx = torch.nonzero(bad).reshape(-1)[:8].tolist()
        rows = []
        for i in idx:
            src = (
                ""
                if inputs is None
                else f"input {inputs.reshape(-1)[i].item()!r} "
                f"(bits {bits(inputs.reshape(-1)[i : i + 1]).item() & 0xFFFFFFFF:#x}) "
            )
            rows.append(
                f"[{i}] {src}expected {expected[i].item()!r} "
                f"(bits {bits(expected[i : i + 1]).item() & 0xFFFF:#06x}) "
                f"got {got[i].item()!r} (bits {bits(got[i : i + 1]).item() & 0xFFFF:#06x})"
            )
        raise AssertionError(f"{what}: {int(bad.sum())} of {got.numel()} differ:\n" + "\n".join(rows))


def ordinal(t):
    """A 16-bit float's position on the number line, in ulps (+0 and -0 are both 0)."""
    u = bits(t).to(torch.int32) & 0xFFFF
    mag = u & 0x7FFF
    return torch.where(u >= 0x8000, -mag, mag)


def ulp_distance(a, b):
    return (ordinal(a) - ordinal(b)).abs()


def assert_one_rounding(got, reference, before, what):
    """`got` (16-bit) is torch's float32 result `reference` within the precision of one rounding:
    at most one ulp of the 16-bit type from reference rounded to nearest, or else the rounding
    of a value that float32 arithmetic could have produced instead of `reference`. The latter
    matters only under cancellation (p - lr*u close to 0, where the 16-bit ulp is far below
    float32's error on the operands): the band is 16 float32 ulps of the operands,
    2^-20 * (|p before| + |p after - p before|)."""
    dtype = got.dtype
    ref = reference.detach().float()
    tol = 2.0**-20 * (before.abs() + (ref - before).abs())
    low, high = ordinal((ref - tol).to(dtype)), ordinal((ref + tol).to(dtype))
    pos = ordinal(got)
    near = ulp_distance(got, ref.to(dtype)) <= 1
    ok = near | ((pos >= low) & (pos <= high))
    if not bool(ok.all()):
        i = int(torch.nonzero(~ok.reshape(-1))[0])
        raise AssertionError(
            f"{what}: {int((~ok).sum())} elements off by more than one rounding; first [{i}]: "
            f"got {got.reshape(-1)[i].item()!r}, torch float32 {ref.reshape(-1)[i].item()!r} "
            f"(rounded {ref.to(dtype).reshape(-1)[i].item()!r}), from {before.reshape(-1)[i].item()!r}"
        )


def half_params(dtype, shapes, gen, scale=1.0):
    return [torch.nn.Parameter((torch.randn(s, generator=gen) * scale).to(dtype)) for s in shapes]


def twin(params, dtype=None):
    """Fresh parameters holding the same values (optionally converted)."""
    return [torch.nn.Parameter(p.detach().to(dtype or p.dtype).clone()) for p in params]


def per_tensor_keys(opt):
    """step and the per-tensor scalars (NAdam's mu_product, ASGD's eta, mu): 0-dim float32
    whatever the state dtype, as torch keeps them."""
    return {"step", *R.scalar_names(type(opt).__name__, opt.param_groups[0])}


def state_arrays(opt, p):
    return {k: v for k, v in opt.state[p].items() if k not in per_tensor_keys(opt)}


def rich(name):
    return dict(R.RICH[name])


# ----------------------------------------------------------------- parity with torch.optim
SHAPES_A = [(257,), (16, 8), (1,)]
SHAPES_B = [(33,)]


def _parity_grads(p16, target, noise, hp, dtype):
    """A 16-bit gradient of a quadratic pulling the parameter to `target`, plus noise; negated
    for maximize so that every run converges (diverging runs only measure rounding growth)."""
    sign = -1.0 if hp.get("maximize") else 1.0
    return (sign * (p16.detach().float() - target) + noise).to(dtype)


@pytest.mark.parametrize("master", [False, True], ids=["plain", "master"])
@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("name,hp", R.all_cases(), ids=R.all_case_ids())
def test_parity_with_torch_float32_copy(name, hp, dtype, master):
    """genesis on 16-bit parameters against torch.optim on a float32 copy, then cast.

    After each step the torch copy is set to genesis' parameter (without master weights: the
    16-bit value, i.e. the torch copy is re-rounded to the 16-bit grid; with master weights:
    the float32 master), so both start every step from the same values and each step is
    compared on its own: within one rounding of the 16-bit type (assert_one_rounding), nearly
    always exact. With master weights the master must also equal torch's float32 result within
    float32 tolerance, and the parameter is the master rounded to nearest. (The long-run master
    trajectory is checked bit for bit against genesis' float32 run below, which
    tests/test_torch_parity.py checks against torch.) The float32 state must follow torch's
    within float32 tolerance over the whole run.
    """
    R.skip_without_torch_twin(name)
    gen = torch.Generator().manual_seed(1234)
    pa, pb = half_params(dtype, SHAPES_A, gen), half_params(dtype, SHAPES_B, gen)
    ta, tb = twin(pa, torch.float32), twin(pb, torch.float32)
    groups = lambda a, b: [{"params": a}, {"params": b, "lr": hp["lr"] * 0.5}]  # noqa: E731
    extra = dict(master_weights=True) if master else {}
    og = getattr(optim, name)(groups(pa, pb), **hp, **extra)
    ot = R.torch_class(name)(groups(ta, tb), **R.float32_twin_hp(name, hp, dtype))
    gparams, tparams = pa + pb, ta + tb
    targets = [torch.randn(p.shape, generator=gen) for p in gparams]
    exact = total = 0
    for step in range(STEPS):
        for p, t, target in zip(gparams, tparams, targets):
            g = _parity_grads(p, target, 0.1 * torch.randn(p.shape, generator=gen), hp, dtype)
            p.grad, t.grad = g, g.float()
        starts = [t.detach().clone() for t in tparams]
        og.step()
        ot.step()
        for i, (p, t, before) in enumerate(zip(gparams, tparams, starts)):
            expected = t.detach().to(dtype)
            dist = ulp_distance(p, expected)
            assert_one_rounding(p, t.detach(), before, f"step {step} param {i}")
            exact += int((dist == 0).sum())
            total += dist.numel()
            if master:
                m = og.state[p]["master_param"]
                assert m.dtype == torch.float32
                assert_same_bits(p, m.to(dtype), f"step {step} param {i}: param == round(master)")
                torch.testing.assert_close(m, t.detach(), **F32_TOL)
            else:
                assert "master_param" not in og.state[p]
            with torch.no_grad():
                t.copy_(og.state[p]["master_param"] if master else p.float())
    # A one-ulp difference needs the two float32 values to straddle a rounding boundary of the
    # 16-bit grid, which is rare (float32 carries 13 or 16 more bits): over all cases about 34
    # of 2.3 million results differ at all, 4 of them by more than one ulp (cancellation).
    assert exact >= 0.999 * total, f"only {exact} of {total} results match torch exactly"
    for p, t in zip(gparams, tparams):
        gs, ts = og.state.get(p, {}), ot.state.get(t, {})
        assert set(gs) - {"master_param"} == set(ts)
        for key, value in ts.items():
            if key == "step":
                assert float(gs[key]) == float(value)
                continue
            assert gs[key].dtype == torch.float32, f"{key}: 16-bit params keep float32 state"
            torch.testing.assert_close(gs[key], value, rtol=1e-5, atol=1e-6 * max(1.0, float(value.abs().max())))


# -------------------------------------------------------------------- master weights
def _fixed_grads(dtype, shapes, steps, seed):
    """16-bit gradients that do not depend on the parameters (so two runs whose 16-bit
    parameters differ still see the same gradients)."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen).to(dtype) for s in shapes] for _ in range(steps)]


MASTER_CASES = [(n, R.CONFIGS[n][0]) for n in NAMES] + [(n, rich(n)) for n in NAMES]
MASTER_IDS = [f"{n}-plain" for n in NAMES] + [f"{n}-rich" for n in NAMES]


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("name,hp", MASTER_CASES, ids=MASTER_IDS)
def test_master_weights_equal_float32_run_bit_for_bit(name, hp, dtype):
    """With master_weights the rule updates a float32 copy: it must be bit-identical to a float32
    genesis run fed the same (16-bit representable) gradients, every state array too; the 16-bit
    parameter is the master rounded to nearest."""
    shapes = [(300,), (7, 3)]
    gen = torch.Generator().manual_seed(7)
    p16 = half_params(dtype, shapes, gen)
    p32 = twin(p16, torch.float32)
    o16 = getattr(optim, name)(p16, master_weights=True, **hp)
    o32 = getattr(optim, name)(p32, **R.float32_twin_hp(name, hp, dtype))
    for step, grads in enumerate(_fixed_grads(dtype, shapes, 20, 8)):
        for a, b, g in zip(p16, p32, grads):
            a.grad, b.grad = g.clone(), g.float()
        o16.step()
        o32.step()
        for i, (a, b) in enumerate(zip(p16, p32)):
            master = o16.state[a]["master_param"]
            assert_same_bits(master, b.detach(), f"step {step} param {i}: master == float32 run")
            assert_same_bits(a, master.to(dtype), f"step {step} param {i}: param == round(master)")
            for key, value in state_arrays(o32, b).items():
                assert_same_bits(o16.state[a][key], value, f"step {step} param {i} {key}")
    assert o16.param_groups[0]["master_weights"] is True
    assert "master_weights" not in o32.param_groups[0]


def test_master_weights_numpy_float16():
    """NumPy float16 parameters with master weights: a NumPy float32 master, bit-identical to a
    float32 NumPy run; the parameter is the master rounded by NumPy's own conversion."""
    rng = np.random.default_rng(3)
    init = rng.standard_normal(500).astype(np.float16)
    a, b = Parameter(init.copy()), Parameter(init.astype(np.float32))
    oa = optim.AdamW([a], lr=0.01, weight_decay=0.1, master_weights=True)
    ob = optim.AdamW([b], lr=0.01, weight_decay=0.1)
    for _ in range(20):
        g = rng.standard_normal(500).astype(np.float16)
        a.grad, b.grad = g, g.astype(np.float32)
        oa.step()
        ob.step()
    master = oa.state[a]["master_param"]
    assert isinstance(master, np.ndarray) and master.dtype == np.float32
    np.testing.assert_array_equal(master.view(np.int32), b.data.view(np.int32))
    np.testing.assert_array_equal(a.data.view(np.int16), master.astype(np.float16).view(np.int16))
    for key in ("exp_avg", "exp_avg_sq"):
        assert oa.state[a][key].dtype == np.float32
        np.testing.assert_array_equal(oa.state[a][key], ob.state[b][key])


def test_master_weights_as_group_option():
    """Precision options are per group and appear in a group only when given (torch's layout
    otherwise)."""
    gen = torch.Generator().manual_seed(0)
    a, b = half_params(torch.bfloat16, [(10,), (10,)], gen)
    opt = optim.Adam([{"params": [a], "master_weights": True}, {"params": [b]}], lr=0.01)
    a.grad = torch.ones(10, dtype=torch.bfloat16)
    b.grad = torch.ones(10, dtype=torch.bfloat16)
    opt.step()
    assert "master_param" in opt.state[a] and "master_param" not in opt.state[b]
    assert opt.state[b]["exp_avg"].dtype == torch.float32
    assert opt.param_groups[0]["master_weights"] is True
    assert not any(k in opt.param_groups[1] for k in PRECISION_KEYS)
    plain = optim.SGD([torch.nn.Parameter(torch.zeros(2, dtype=torch.float16))], lr=0.1)
    assert not any(k in plain.param_groups[0] for k in PRECISION_KEYS)
    # master weights mean nothing for float32 parameters: no copy is made.
    c = torch.nn.Parameter(torch.zeros(4))
    c.grad = torch.ones(4)
    oc = optim.SGD([c], lr=0.1, master_weights=True)
    oc.step()
    assert "master_param" not in oc.state.get(c, {})
    assert torch.equal(c.detach(), torch.full((4,), -0.1))


# -------------------------------------------------------------------- state_dtype
@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_state_one_rounding_then_close(name):
    """state_dtype='bfloat16' against the float32-state run (both with master weights, so only
    the state's precision differs; the gradients do not depend on the parameters).

    Step 1 is exact: every state array is the float32-state run's array rounded once to
    bfloat16, and an element-wise update uses the unrounded float32 register values (master
    bit-identical). A reduction rule (LAMB, Adafactor) computes its update from the state as
    stored, so that every pass sees the same values (NOTE: [reduction rules]): its step 1
    differs by the state's rounding and is held to the bounds below.

    Afterwards each store adds a relative error of at most 2^-9. In an EMA with factor b these
    errors decay geometrically, so the relative error of a moment stays below 2^-9/(1-b) (about
    2 % for b = 0.8-0.9, and below 2^-9 * t for b2 = 0.999/alpha over t steps: 5 % at t = 25).
    An Adam/RMSprop step is lr * m / sqrt(v) (SGD: lr * buf), so a step's relative error is at
    most err(m) + err(v)/2, under 10 %. Over T steps the master may therefore drift by at most
    0.1 * (sum of the float32 run's step sizes); we assert that per element, and that the
    total displacement agrees within 5 % (errors of different steps partly cancel). Measured on
    this data: at most 0.6 % of the path per element, 0.2 % on the displacement; step 1
    catches a wrong rounding mode, these bounds catch errors that grow."""
    hp = rich(name)
    shapes = [(2000,)]
    gen = torch.Generator().manual_seed(11)
    init = half_params(torch.bfloat16, shapes, gen)
    pa, pb = twin(init), twin(init)
    oa = getattr(optim, name)(pa, master_weights=True, **hp)
    ob = getattr(optim, name)(pb, master_weights=True, state_dtype="bfloat16", **hp)
    m0 = init[0].detach().float()
    path = torch.zeros_like(m0)  # sum of |step| of the float32-state run
    prev = m0.clone()
    for step, grads in enumerate(_fixed_grads(torch.bfloat16, shapes, STEPS, 12)):
        pa[0].grad, pb[0].grad = grads[0].clone(), grads[0].clone()
        oa.step()
        ob.step()
        ma, mb = oa.state[pa[0]]["master_param"], ob.state[pb[0]]["master_param"]
        if step == 0:
            if not optim._rules.OPTIONS[getattr(optim, name)._rule].reduction:
                assert_same_bits(mb, ma, "step 1 master: the update uses unrounded state")
            for key, value in state_arrays(oa, pa[0]).items():
                if key == "master_param":
                    continue
                assert ob.state[pb[0]][key].dtype == torch.bfloat16, key
                assert_same_bits(ob.state[pb[0]][key], value.to(torch.bfloat16), f"step 1 {key}")
        path += (ma - prev).abs()
        prev = ma.clone()
        assert_same_bits(pb[0], mb.to(torch.bfloat16), f"step {step}: param == round(master)")
    ma, mb = oa.state[pa[0]]["master_param"], ob.state[pb[0]]["master_param"]
    drift = (mb - ma).abs()
    within = drift <= 0.1 * path + 1e-7
    if R.SIGN_UPDATES.get(name):
        # A sign rule moves every element by a full lr: where its argument is near zero the
        # state's rounding can flip a step's sign, so a few elements may drift further.
        within = within.double().mean() >= 0.99
    assert bool(within.all()), f"max drift {float((drift / path).max()):.3g} of the path length"
    da, db = ma - m0, mb - m0
    assert float((db - da).norm() / da.norm()) < 0.05
    assert ob.state[pb[0]]["master_param"].dtype == torch.float32


COMPLEX_RULES = [n for n in NAMES if n != "Adafactor" and hasattr(torch.optim, n)]  # torch's refuse complex


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("name", COMPLEX_RULES)
def test_complex_parameters_keep_reduced_state_as_real_pairs(name, state_dtype):
    """A complex parameter is updated as its real view, so its bfloat16 or 8-bit state is
    kept as real pairs (torch has no complex bfloat16): the run equals, bit for bit, the same
    optimizer over the real views as float32 parameters, from a fresh start and after loading
    torch's complex float32 state; and that state_dict loads back into a float32-state
    optimizer as complex state, torch's layout."""
    hp = rich(name)
    low = dict(state_dtype=state_dtype, **({"min_8bit_size": 1} if state_dtype == "int8" else {}))
    gen = torch.Generator().manual_seed(5)
    init = [torch.randn(shape, dtype=torch.complex64, generator=gen) for shape in [(300,), (7, 3)]]
    grads = [[torch.randn(x.shape, dtype=x.dtype, generator=gen) for x in init] for _ in range(12)]
    source = [torch.nn.Parameter(x.clone()) for x in init]
    torch_opt = R.torch_class(name)(source, **hp)
    for gs in grads[:3]:
        for p, g in zip(source, gs):
            p.grad = g.clone()
        torch_opt.step()
    saved = torch_opt.state_dict()

    complex_params = twin(source)
    real_params = [torch.nn.Parameter(torch.view_as_real(p.detach()).clone()) for p in source]
    complex_opt = getattr(optim, name)(complex_params, **hp, **low)
    real_opt = getattr(optim, name)(real_params, **hp, **low)
    complex_opt.load_state_dict(saved)
    real_state = {
        k: {n: torch.view_as_real(v) if torch.is_tensor(v) and v.is_complex() else v for n, v in entries.items()}
        for k, entries in saved["state"].items()
    }
    real_opt.load_state_dict(dict(saved, state=real_state))
    for gs in grads[3:]:
        for pc, pr, g in zip(complex_params, real_params, gs):
            pc.grad, pr.grad = g.clone(), torch.view_as_real(g).clone()
        complex_opt.step()
        real_opt.step()
    for pc, pr in zip(complex_params, real_params):
        assert_same_bits(torch.view_as_real(pc.detach()), pr, "parameter")
        for key, value in state_arrays(real_opt, pr).items():
            kept = complex_opt.state[pc][key]
            assert kept.shape == value.shape and kept.dtype != torch.complex64, key
            assert_same_bits(kept, value, key)
    # Into float32 state (the saved group options would otherwise restore state_dtype).
    torch_resumed = None
    if state_dtype == "int8":
        exported = complex_opt.float32_state_dict()  # what torch.optim loads, and steps from
        torch_resumed = R.torch_class(name)(twin(complex_params), **hp)
        torch_resumed.load_state_dict(exported)
    else:
        exported = complex_opt.state_dict()
        exported["param_groups"] = [
            {k: v for k, v in g.items() if k != "state_dtype"} for g in exported["param_groups"]
        ]
    back = getattr(optim, name)(twin(complex_params), **hp)
    back.load_state_dict(exported)
    for p in back.param_groups[0]["params"]:
        arrays = state_arrays(back, p)
        assert arrays and all(v.dtype == torch.complex64 and v.shape == p.shape for v in arrays.values())
    if torch_resumed is not None:  # torch continues from the exported state as genesis does
        for opt in (back, torch_resumed):
            for p, g in zip(opt.param_groups[0]["params"], grads[0]):
                p.grad = g.clone()
            opt.step()
        for a, b in zip(back.param_groups[0]["params"], torch_resumed.param_groups[0]["params"]):
            torch.testing.assert_close(a.detach(), b.detach(), **F32_TOL)


@pytest.mark.parametrize("spelling", ["bfloat16", torch.bfloat16, "float32", torch.float32])
def test_state_dtype_spellings(spelling):
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    p.grad = torch.ones(3, dtype=torch.bfloat16)
    opt = optim.RMSprop([p], lr=0.01, momentum=0.5, centered=True, state_dtype=spelling)
    opt.step()
    want = torch.bfloat16 if "bfloat16" in str(spelling) else torch.float32
    for key in ("square_avg", "grad_avg", "momentum_buffer"):
        assert opt.state[p][key].dtype == want
    assert opt.state[p]["step"].dtype == torch.float32


# -------------------------------------------------------------------- stochastic rounding
def _bf16_neighbours(x):
    """(toward-zero, away-from-zero) bfloat16 neighbours of float32 values, as float32."""
    lo = bits(x) & ~0xFFFF
    return lo.view(torch.float32), (lo + 0x10000).view(torch.float32)


def _sr_draws(name, hp, n_elems, steps, seed=5, wd_sync=True):
    """A stochastic-rounding run on bfloat16 parameters beside a float32 shadow run that starts
    every step from the same (bfloat16) values: the shadow's result is the exact float32 value
    x that the stochastic run rounds. Returns (x, rounded) over all elements and steps."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter((torch.rand(n_elems, generator=gen) + 0.5).to(torch.bfloat16))
    s = torch.nn.Parameter(p.detach().float())
    o = getattr(optim, name)([p], stochastic_rounding=True, seed=seed, **hp)
    os_ = getattr(optim, name)([s], **hp)
    xs, rs = [], []
    for _ in range(steps):
        g = torch.randn(n_elems, generator=gen).to(torch.bfloat16)
        p.grad, s.grad = g, g.float()
        with torch.no_grad():
            s.copy_(p.float())
        o.step()
        os_.step()
        xs.append(s.detach().clone())
        rs.append(p.detach().float())
        for key, value in state_arrays(os_, s).items():  # same inputs, same float32 state
            assert_same_bits(o.state[p][key], value, key)
    return torch.cat(xs), torch.cat(rs)


def _assert_unbiased(x, r, min_draws=100_000):
    """r is a stochastic rounding of x: one of its two bfloat16 neighbours (x itself when x is
    representable), and the signed error in ulps has mean 0 within 3 standard errors."""
    lo, hi = _bf16_neighbours(x)
    exact = lo == x
    assert bool(((r == lo) | (r == hi)).all()), "a result is not a bfloat16 neighbour of x"
    assert bool((r[exact] == x[exact]).all()), "a representable value was perturbed"
    ulp = (hi - lo).abs().double()
    keep = ~exact
    err = (r.double() - x.double())[keep] / ulp[keep]
    n = err.numel()
    assert n >= min_draws, f"only {n} draws"
    mean, se = float(err.mean()), float(err.std()) / math.sqrt(n)
    assert abs(mean) < 3 * se, f"mean error {mean:.3g} ulp, standard error {se:.3g}"
    return err


@pytest.mark.parametrize("name", NAMES)
def test_stochastic_rounding_is_unbiased_every_optimizer(name):
    """For every rule: each stochastically rounded result is a bfloat16 neighbour of the float32
    result, and over >= 1e5 roundings (elements x steps) the mean error is 0 within 3 standard
    errors; the rounding goes up as often as the dropped fraction says."""
    x, r = _sr_draws(name, rich(name), 6300, STEPS)
    err = _assert_unbiased(x, r)
    # Not a disguised round-to-nearest: some results are the farther neighbour.
    lo, hi = _bf16_neighbours(x)
    nearest = torch.where((x - lo).abs() <= (hi - x).abs(), lo, hi)
    assert float((r != nearest).double().mean()) > 0.1
    assert float(err.abs().max()) < 1.0


def test_stochastic_rounding_fixed_fraction():
    """Updates of 0.3 ulp: round to nearest (and truncation) would always err by -0.3 ulp in
    the same direction; stochastic rounding moves to the far neighbour with probability 0.3 and
    its mean error is 0 within 3 standard errors over 1e5 roundings."""
    n, steps = 4200, STEPS
    gen = torch.Generator().manual_seed(21)
    k = torch.randint(32, 96, (n,), generator=gen)  # values 1.25 .. 1.75: ulp 2^-7 throughout
    init = (1.0 + k.float() / 128).to(torch.bfloat16)
    direction = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(torch.bfloat16)
    lr = 0.3 * 2.0**-7
    p = torch.nn.Parameter(init.clone())
    rtn = torch.nn.Parameter(init.clone())
    s = torch.nn.Parameter(init.float())
    o = optim.SGD([p], lr=lr, stochastic_rounding=True, seed=99)
    o_rtn = optim.SGD([rtn], lr=lr)
    o32 = optim.SGD([s], lr=lr)
    xs, rs, moved = [], [], []
    for _ in range(steps):
        p.grad, rtn.grad, s.grad = direction.clone(), direction.clone(), direction.float()
        before = p.detach().clone()
        with torch.no_grad():
            s.copy_(p.float())
        o.step()
        o_rtn.step()
        o32.step()
        xs.append(s.detach().clone())
        rs.append(p.detach().float())
        moved.append((p.detach() != before).double())
    assert_same_bits(rtn, init, "round to nearest stalls on 0.3-ulp updates")
    _assert_unbiased(torch.cat(xs), torch.cat(rs))
    moved = torch.cat(moved)
    frac = float(moved.mean())
    se = math.sqrt(0.3 * 0.7 / moved.numel())
    assert abs(frac - 0.3) < 3 * se + 1e-3, f"moved in {frac:.4f} of the draws, expected ~0.3"


def test_stochastic_rounding_tracks_float32_where_nearest_stalls():
    """Updates far below one bfloat16 ulp (1e-4 at 1.0, ulp 2^-8..2^-7): round to nearest never
    moves; the stochastic run's mean over elements follows the float32 trajectory (within 3
    standard errors) at every tenth step."""
    n, steps, lr = 8192, 50, 1e-4
    one = torch.ones(n, dtype=torch.bfloat16)
    p, rtn = torch.nn.Parameter(one.clone()), torch.nn.Parameter(one.clone())
    s = torch.nn.Parameter(torch.ones(1))
    o = optim.SGD([p], lr=lr, stochastic_rounding=True, seed=2024)
    o_rtn = optim.SGD([rtn], lr=lr)
    o32 = optim.SGD([s], lr=lr)
    for step in range(1, steps + 1):
        p.grad, rtn.grad, s.grad = one.clone(), one.clone(), torch.ones(1)
        o.step()
        o_rtn.step()
        o32.step()
        if step % 10 == 0:
            vals = p.detach().double()
            mean, se = float(vals.mean()), float(vals.std()) / math.sqrt(n)
            target = float(s.detach())
            assert abs(mean - target) < 3 * se + 1e-6, (step, mean, target, se)
    assert_same_bits(rtn, one, "round to nearest stalls")
    assert 1.0 - float(p.detach().double().mean()) > 0.8 * steps * lr
    assert o.param_groups[0]["stochastic_rounding_step"] == steps


def _sr_run(name, seed, steps=6, n=512, groups=None, data_seed=0):
    gen = torch.Generator().manual_seed(data_seed)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen).to(torch.bfloat16)) for _ in range(2)]
    opt = getattr(optim, name)(params, stochastic_rounding=True, seed=seed, **rich(name))
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(n, generator=gen).to(torch.bfloat16)
        opt.step()
    return params, opt


@pytest.mark.parametrize("name", NAMES)
def test_stochastic_rounding_reproducible_and_seeded(name):
    """Same seed and inputs: identical bits (parameters and state). Another seed: other bits."""
    a, oa = _sr_run(name, seed=17)
    b, ob = _sr_run(name, seed=17)
    c, _ = _sr_run(name, seed=18)
    for pa, pb in zip(a, b):
        assert_same_bits(pa, pb, "same seed")
        for key, value in state_arrays(oa, pa).items():
            assert_same_bits(ob.state[pb][key], value, key)
    for pa, pc in zip(a, c):
        assert int((bits(pa) != bits(pc)).sum()) > 10, "a different seed gave the same bits"
    assert oa.param_groups[0]["stochastic_rounding_step"] == 6
    assert oa.param_groups[0]["seed"] == 17


def test_stochastic_rounding_streams_differ_by_step_and_parameter():
    """The same value and update drawn at two steps, or for two parameters of one optimizer,
    gets different random bits; the stream is keyed by the parameter's index in the optimizer
    (not by its values or identity) and each group keeps its own step counter."""
    n, lr = 4096, 1e-3  # 1.0 - 1e-3: rounds to 1 - 2^-8 with probability ~0.26
    one = torch.ones(n, dtype=torch.bfloat16)
    a, b = torch.nn.Parameter(one.clone()), torch.nn.Parameter(one.clone())
    opt = optim.SGD([a, b], lr=lr, stochastic_rounding=True, seed=3)
    results = []
    for _ in range(3):
        with torch.no_grad():
            a.copy_(one)
            b.copy_(one)
        a.grad, b.grad = one.clone(), one.clone()
        opt.step()
        results.append((a.detach().clone(), b.detach().clone()))
    for ra, rb in results:
        assert 0.15 < float((ra != one).double().mean()) < 0.4
        assert int((bits(ra) != bits(rb)).sum()) > 100, "two parameters share a stream"
    for i in range(3):
        for j in range(i):
            assert int((bits(results[i][0]) != bits(results[j][0])).sum()) > 100, (
                f"steps {j} and {i} drew the same bits"
            )
    # Index keyed: a parameter at index 1 of another optimizer (other values at index 0) with
    # the same seed and counter draws exactly what b drew at the first step.
    x, c = torch.nn.Parameter(torch.full((7,), 3.0, dtype=torch.bfloat16)), torch.nn.Parameter(one.clone())
    other = optim.SGD([x, c], lr=lr, stochastic_rounding=True, seed=3)
    x.grad, c.grad = torch.ones(7, dtype=torch.bfloat16), one.clone()
    other.step()
    assert_same_bits(c, results[0][1], "same (seed, index, counter) gives the same bits")
    # Per-group counters and seeds.
    d, e = torch.nn.Parameter(one.clone()), torch.nn.Parameter(one.clone())
    two = optim.SGD([{"params": [d], "seed": 1}, {"params": [e], "seed": 2}], lr=lr, stochastic_rounding=True)
    for k in range(4):
        d.grad = one.clone()
        e.grad = one.clone() if k % 2 else None
        two.step()
    assert [g["stochastic_rounding_step"] for g in two.param_groups] == [4, 4]


@pytest.mark.parametrize("via_file", [False, True], ids=["dict", "genesis.save"])
def test_stochastic_rounding_resumes_bit_for_bit(via_file):
    """The counter lives in param_groups: a run resumed from a state_dict (through
    genesis.save/load too) draws the same bits as the uninterrupted run; a loaded dict whose
    counter was dropped does not (the counter really matters)."""
    gen = torch.Generator().manual_seed(4)
    init = [torch.randn(300, generator=gen).to(torch.bfloat16) for _ in range(2)]
    grads = _fixed_grads(torch.bfloat16, [(300,), (300,)], 12, 5)
    hp = dict(lr=0.003, weight_decay=0.1)

    def feed(params, k):
        for p, g in zip(params, grads[k]):
            p.grad = g.clone()

    full = [torch.nn.Parameter(x.clone()) for x in init]
    ofull = optim.AdamW(full, stochastic_rounding=True, seed=77, **hp)
    half = [torch.nn.Parameter(x.clone()) for x in init]
    ohalf = optim.AdamW(half, stochastic_rounding=True, seed=77, **hp)
    for k in range(6):
        feed(full, k)
        ofull.step()
        feed(half, k)
        ohalf.step()
    sd = ohalf.state_dict()
    assert sd["param_groups"][0]["stochastic_rounding_step"] == 6
    if via_file:
        buf = io.BytesIO()
        genesis.save(sd, buf)
        buf.seek(0)
        sd = genesis.load(buf)
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in half]
    oresumed = optim.AdamW(resumed, lr=1.0)  # options come from the loaded groups
    oresumed.load_state_dict(sd)
    assert oresumed.param_groups[0]["stochastic_rounding"] is True
    assert oresumed.param_groups[0]["seed"] == 77
    dropped = [torch.nn.Parameter(p.detach().clone()) for p in half]
    odropped = optim.AdamW(dropped, lr=1.0)
    sd2 = ohalf.state_dict()
    sd2 = {
        "state": sd2["state"],
        "param_groups": [{k: v for k, v in g.items() if k != "stochastic_rounding_step"} for g in sd2["param_groups"]],
    }
    odropped.load_state_dict(sd2)
    for k in range(6, 12):
        for params, opt in ((full, ofull), (resumed, oresumed), (dropped, odropped)):
            feed(params, k)
            opt.step()
    for i, (a, b) in enumerate(zip(full, resumed)):
        assert_same_bits(b, a, f"param {i} resumed")
        for key, value in state_arrays(ofull, a).items():
            assert_same_bits(oresumed.state[b][key], value, key)
    assert oresumed.param_groups[0]["stochastic_rounding_step"] == 12
    assert any(int((bits(a) != bits(c)).sum()) > 0 for a, c in zip(full, dropped)), (
        "restarting the counter at 0 should replay other bits"
    )


# -------------------------------------------------------- conversions through the public API
def _all_halves(dtype):
    return torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype).clone()


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_all_bit_patterns_survive_widen_then_narrow(dtype):
    """Every one of the 65536 patterns, as a parameter updated by SGD(lr=0) with a zero
    gradient, comes back bit-identical (NaN stays NaN); -0.0, subnormals and infinities
    included."""
    values = _all_halves(dtype)
    p = torch.nn.Parameter(values.clone())
    p.grad = torch.zeros_like(values)
    optim.SGD([p], lr=0.0).step()
    assert_same_bits(p, values, "widen then narrow", inputs=values)
    assert int(torch.isnan(p.detach().float()).sum()) == int(torch.isnan(values.float()).sum())


def test_all_float16_bit_patterns_survive_numpy():
    values = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    p = Parameter(values.copy())
    p.grad = np.zeros_like(values)
    optim.SGD([p], lr=0.0).step()
    nan = np.isnan(values)
    np.testing.assert_array_equal(p.data.view(np.uint16)[~nan], values.view(np.uint16)[~nan])
    assert np.isnan(p.data[nan]).all()


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_all_bit_patterns_widen_exactly(dtype):
    """The kernel's own widening, seen through the float32 momentum buffer (buf = g on the first
    step): all 65536 gradient patterns widen exactly as torch widens them."""
    grads = _all_halves(dtype)
    p = torch.nn.Parameter(torch.zeros(65536, dtype=dtype))
    p.grad = grads.clone()
    opt = optim.SGD([p], lr=0.0, momentum=0.5)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    assert buf.dtype == torch.float32
    assert_same_bits(buf, grads.float(), "widening", inputs=grads)


def test_all_float16_bit_patterns_widen_exactly_numpy():
    grads = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    p = Parameter(np.zeros(65536, dtype=np.float16))
    p.grad = grads.copy()
    opt = optim.SGD([p], lr=0.0, momentum=0.5)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    assert isinstance(buf, np.ndarray) and buf.dtype == np.float32
    want = grads.astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(buf.view(np.uint32)[~nan], want.view(np.uint32)[~nan])
    assert np.isnan(buf[nan]).all()


def _narrowing_inputs(dtype):
    """float32 values for a float32 -> 16-bit rounding check (about 3 million):
    - 2^21 random bit patterns of the whole float32 range (inf, NaN, float32 subnormals among
      them) and 2^20 random patterns with exponents around the 16-bit type's range;
    - every halfway case between two adjacent finite 16-bit values (both signs), and the float32
      values one ulp either side of it: ties to even, and the first values that round away;
    - the overflow boundary and other specials."""
    g = np.random.default_rng(2025)
    anything = g.integers(0, 2**32, 2**21, dtype=np.uint64).astype(np.uint32)
    if dtype == torch.float16:
        exp = g.integers(127 - 30, 127 + 18, 2**20, dtype=np.uint32)  # 2^-30 .. 2^17
    else:
        exp = np.concatenate(
            [
                g.integers(0, 256, 2**19, dtype=np.uint32),
                g.integers(0, 3, 2**18, dtype=np.uint32),  # subnormals
                g.integers(250, 256, 2**18, dtype=np.uint32),
            ]
        )  # near overflow
    mant = g.integers(0, 2**23, exp.size, dtype=np.uint32)
    sign = g.integers(0, 2, exp.size, dtype=np.uint32) << 31
    ranged = sign | (exp << 23) | mant
    pos = _all_halves(dtype)[32768:]  # 0x0000 .. 0x7FFF
    finite = pos[torch.isfinite(pos.float())].float().double().numpy()
    nxt = np.append(finite[1:], 65536.0 if dtype == torch.float16 else 2.0**128)
    mids = ((finite + nxt) / 2).astype(np.float32)  # exact: one bit more than the 16-bit type
    assert np.all(mids.astype(np.float64) == (finite + nxt) / 2)
    near = np.concatenate([mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))])
    near = np.concatenate([near, -near])
    specials = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            -np.nan,
            65504,
            65505,
            65519,
            65519.996,
            65520,
            65520.004,
            65536,
            1e5,
            3.4028235e38,
            -3.4028235e38,
            1e-45,
            -1e-45,
            1e-40,
            2.0**-24,
            2.0**-25,
            1.5 * 2.0**-24,
            2.0**-25 * 1.0000001,
            2.0**-14,
            2.0**-14 * (1 - 2.0**-11),
            2.0**-126,
            2.0**-133,
            1.00390625,
            1.01171875,
            3.3895314e38,
            3.3961776e38,
            0.1,
            1 / 3,
        ],
        dtype=np.float32,
    )
    specials = np.concatenate([specials, -specials])
    out = np.concatenate([anything.view(np.float32), ranged.view(np.float32), near, specials])
    return torch.from_numpy(out.astype(np.float32))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_float32_to_16bit_rounding_matches_torch(dtype):
    """Arbitrary float32 values put into the master copy after a first step, the parameter set
    to torch's round-to-nearest-even of them, then a step with lr=0 and zero gradients. The
    step keeps a master element only where its own rounding of it equals the parameter (NOTE:
    [master re-seed] in update_element.h), else it re-seeds it from the parameter; so the
    master comes back unchanged, bit for bit, exactly when genesis rounds every value as torch
    does (NaN stays NaN). Also when the master array is replaced rather than written in
    place."""
    values = _narrowing_inputs(dtype)
    assert values.numel() > 3_000_000
    p = torch.nn.Parameter(torch.zeros(values.numel(), dtype=dtype))
    p.grad = torch.zeros_like(p)
    opt = optim.SGD([p], lr=0.0, master_weights=True)
    opt.step()
    master = opt.state[p]["master_param"]
    with torch.no_grad():
        master.copy_(values)
        p.copy_(values.to(dtype))
    p.grad = torch.zeros_like(p)
    opt.step()
    assert_same_bits(opt.state[p]["master_param"], values, "lr=0 leaves the master alone")
    assert_same_bits(p, values.to(dtype), f"float32 -> {dtype}", inputs=values)
    # Replacing the array (not writing into it) is seen as well.
    chunk = values[:100_000].flip(0).contiguous()
    q = torch.nn.Parameter(torch.zeros(chunk.numel(), dtype=dtype))
    q.grad = torch.zeros_like(q)
    o2 = optim.SGD([q], lr=0.0, master_weights=True)
    o2.step()
    o2.state[q]["master_param"] = chunk.clone()
    with torch.no_grad():
        q.copy_(chunk.to(dtype))
    o2.step()
    assert_same_bits(o2.state[q]["master_param"], chunk, "replaced master kept")
    assert_same_bits(q, chunk.to(dtype), "replaced master", inputs=chunk)


def test_float32_to_float16_rounding_matches_numpy():
    """The same through NumPy parameters, against NumPy's own conversion."""
    values = _narrowing_inputs(torch.float16).numpy()[2**21 :]  # the ranged and halfway ones
    p = Parameter(np.zeros(values.size, dtype=np.float16))
    p.grad = np.zeros_like(p.data)
    opt = optim.SGD([p], lr=0.0, master_weights=True)
    opt.step()
    opt.state[p]["master_param"][...] = values
    with np.errstate(over="ignore", invalid="ignore"):
        want = values.astype(np.float16)
    p.data[...] = want
    p.grad = np.zeros_like(p.data)
    opt.step()
    kept = opt.state[p]["master_param"]
    changed = np.flatnonzero((kept.view(np.uint32) != values.view(np.uint32)) & ~np.isnan(values))
    assert changed.size == 0, [(float(values[i]), float(kept[i])) for i in changed[:8]]
    nan = np.isnan(want)
    got = p.data
    bad = np.flatnonzero((got.view(np.uint16) != want.view(np.uint16)) & ~nan)
    assert bad.size == 0, [(float(values[i]), float(want[i]), float(got[i])) for i in bad[:8]]
    assert np.isnan(got[nan]).all()


def test_float32_to_bfloat16_rounding_through_bfloat16_state():
    """bfloat16 state of float32 parameters: the first momentum buffer is the gradient rounded
    once to bfloat16, as torch rounds it."""
    values = _narrowing_inputs(torch.bfloat16)[:500_000].clone()
    p = torch.nn.Parameter(torch.zeros(values.numel()))
    p.grad = values.clone()
    opt = optim.SGD([p], lr=0.0, momentum=0.9, state_dtype="bfloat16")
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    assert buf.dtype == torch.bfloat16
    assert_same_bits(buf, values.to(torch.bfloat16), "float32 -> bfloat16 state", inputs=values)


# -------------------------------------------------------------------- NumPy float16
@pytest.mark.parametrize("name", NAMES)
def test_numpy_float16_matches_torch_float16(name):
    """genesis.nn.Parameter(float16) gets float32 NumPy state and the same bits as a float16
    torch parameter fed the same gradients (which in turn is checked against torch.optim
    above); and it stays within one ulp of torch.optim's float32 copy, rounded."""
    R.skip_without_torch_twin(name)
    hp = rich(name)
    rng = np.random.default_rng(9)
    init = rng.standard_normal(400).astype(np.float16)
    a = Parameter(init.copy())
    b = torch.nn.Parameter(torch.from_numpy(init.copy()))
    t = torch.nn.Parameter(torch.from_numpy(init.astype(np.float32)))
    oa = getattr(optim, name)([a], **hp)
    ob = getattr(optim, name)([b], **hp)
    ot = R.torch_class(name)([t], **R.float32_twin_hp(name, hp, torch.float16))
    for _ in range(20):
        g = (a.data.astype(np.float32) * 0.5 + rng.standard_normal(400) * 0.1).astype(np.float16)
        a.grad, b.grad, t.grad = g, torch.from_numpy(g.copy()), torch.from_numpy(g.astype(np.float32))
        oa.step()
        ob.step()
        ot.step()
        np.testing.assert_array_equal(a.data.view(np.int16), b.detach().numpy().view(np.int16))
        assert int(ulp_distance(torch.from_numpy(a.data.copy()), t.detach().to(torch.float16)).max()) <= 1
        with torch.no_grad():
            t.copy_(torch.from_numpy(a.data.astype(np.float32)))
    for key, value in state_arrays(oa, a).items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32, key
        np.testing.assert_array_equal(value, ob.state[b][key].numpy())
    if name != "SGD":
        assert float(oa.state[a]["step"]) == 20.0


# -------------------------------------------------------------------- clipping
def _clip_twins(dtype, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (70000,), (5,), (1,)]
    grads = [(torch.randn(s, generator=gen) * scale).to(dtype) for s in shapes]
    out = []
    for _ in range(2):
        ps = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in shapes]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        out.append(ps)
    return grads, out


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf], ids=["l1", "l2", "l3", "inf"])
@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_clip_grad_norm_16bit_matches_torch(dtype, norm_type):
    """The norm of 16-bit gradients is returned in the gradients' dtype, as torch returns it.
    float16: within 1e-3 of torch and of the exact (float64) norm (one float16 rounding is
    at most 2^-11 relative). bfloat16: its own rounding alone is up to 2^-9 relative, and torch
    rounds twice (per tensor, then the total), so the check is within half a bfloat16 ulp of the
    exact norm and one bfloat16 ulp of torch. Clipped gradients are one rounding of
    g * max_norm/(norm + 1e-6), and close to torch's (which scales by a coefficient rounded to
    the 16-bit type)."""
    grads, (pt, pg) = _clip_twins(dtype, seed=int(norm_type) if math.isfinite(norm_type) else 9)
    exact = float(torch.linalg.vector_norm(torch.cat([g.double().reshape(-1) for g in grads]), norm_type))
    max_norm = exact / 3
    nt = torch.nn.utils.clip_grad_norm_(pt, max_norm, norm_type=norm_type)
    ng = clip_grad_norm_(pg, max_norm, norm_type=norm_type)
    assert isinstance(ng, torch.Tensor) and ng.dim() == 0 and ng.dtype == nt.dtype == dtype
    if dtype == torch.float16:
        assert abs(float(ng) - float(nt)) <= 1e-3 * float(nt)
        assert abs(float(ng) - exact) <= 1e-3 * exact
    else:
        assert abs(float(ng) - exact) <= 2.0**-9 * exact
        assert int(ulp_distance(ng.reshape(1), nt.reshape(1))) <= 1
    # genesis scales by max_norm / (its norm + 1e-6): one rounding of the exact product.
    coef = max_norm / (float(ng) + 1e-6)
    for g, _a, b in zip(grads, pt, pg):
        assert b.grad.dtype == dtype
        want = (g.double() * coef).float().to(dtype)
        assert int(ulp_distance(b.grad, want).max()) <= 1
    # torch scales by a coefficient computed from its own norm and rounded to the 16-bit type:
    # the two differ by the norms' relative difference plus three roundings.
    eps = 2.0**-10 if dtype == torch.float16 else 2.0**-7
    rtol = abs(float(ng) - float(nt)) / float(nt) + 3 * eps
    for a, b in zip(pt, pg):
        torch.testing.assert_close(b.grad.double(), a.grad.double(), rtol=rtol, atol=2.0**-24)
    clipped = float(torch.linalg.vector_norm(torch.cat([p.grad.double().reshape(-1) for p in pg]), norm_type))
    assert clipped <= max_norm * (1 + 2.0**-6)


def test_clip_grad_norm_float16_overflow_like_torch():
    """A float16 total norm past 65504 is inf in float16, as in torch, and the gradients are
    then scaled by max_norm/inf = 0 exactly as torch does (no error unless asked for)."""
    pt = torch.nn.Parameter(torch.zeros(2, dtype=torch.float16))
    pg = torch.nn.Parameter(torch.zeros(2, dtype=torch.float16))
    pt.grad = torch.full((2,), 60000.0, dtype=torch.float16)
    pg.grad = pt.grad.clone()
    nt = torch.nn.utils.clip_grad_norm_([pt], 1.0)
    ng = clip_grad_norm_([pg], 1.0)
    assert ng.dtype == nt.dtype == torch.float16
    assert math.isinf(float(ng)) and math.isinf(float(nt))
    assert_same_bits(pg.grad, pt.grad, "grads after an inf norm")
    pg.grad = torch.full((2,), 60000.0, dtype=torch.float16)
    with pytest.raises(RuntimeError):
        clip_grad_norm_([pg], 1.0, error_if_nonfinite=True)
    assert_same_bits(pg.grad, torch.full((2,), 60000.0, dtype=torch.float16), "unchanged on error")


def test_clip_grad_norm_numpy_float16():
    rng = np.random.default_rng(1)
    g = rng.standard_normal(5000).astype(np.float16)
    p = Parameter(np.zeros(5000, dtype=np.float16), grad=g.copy())
    exact = float(np.linalg.norm(g.astype(np.float64)))
    total = clip_grad_norm_([p], exact / 2)
    assert isinstance(total, np.float64)
    assert abs(float(total) - exact) <= 1e-3 * exact
    assert p.grad.dtype == np.float16
    np.testing.assert_allclose(p.grad.astype(np.float64), g.astype(np.float64) / 2, rtol=2.0**-10, atol=2.0**-24)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_clip_grad_value_16bit_matches_torch(dtype):
    grads, (pt, pg) = _clip_twins(dtype, seed=3)
    torch.nn.utils.clip_grad_value_(pt, 0.1)
    clip_grad_value_(pg, 0.1)
    for a, b in zip(pt, pg):
        assert_same_bits(b.grad, a.grad, "clip_grad_value_")
    bound = float(torch.tensor(0.1).to(dtype))  # 0.1 rounded to the gradients' dtype
    assert max(float(p.grad.abs().max()) for p in pg) == bound


# ------------------------------------------------------------- state_dict round trips
@pytest.mark.parametrize("via_file", [False, True], ids=["dict", "genesis.save"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_master_and_bfloat16_state(name, via_file):
    """master_param (float32) and bfloat16 state keep their dtypes through state_dict /
    genesis.save / load_state_dict; the fresh optimizer owns copies and continues bit-identically
    with the uninterrupted one."""
    hp = rich(name)
    shapes = [(200,), (4, 5)]
    gen = torch.Generator().manual_seed(31)
    pa = half_params(torch.bfloat16, shapes, gen)
    oa = getattr(optim, name)(pa, master_weights=True, state_dtype="bfloat16", **hp)
    grads = _fixed_grads(torch.bfloat16, shapes, 10, 32)
    for k in range(5):
        for p, g in zip(pa, grads[k]):
            p.grad = g.clone()
        oa.step()
    sd = oa.state_dict()
    for entries in sd["state"].values():
        assert entries["master_param"].dtype == torch.float32
        for key, value in entries.items():
            if key in per_tensor_keys(oa):
                assert value.dtype == torch.float32 and value.dim() == 0
            elif key != "master_param":
                assert value.dtype == torch.bfloat16, key
    if via_file:
        buf = io.BytesIO()
        genesis.save(sd, buf)
        buf.seek(0)
        sd = genesis.load(buf)
    pb = twin(pa)
    ob = getattr(optim, name)(pb, lr=0.5)
    ob.load_state_dict(sd)
    assert ob.param_groups[0]["master_weights"] is True
    assert ob.param_groups[0]["state_dtype"] == "bfloat16"
    for a, b in zip(pa, pb):
        assert set(ob.state[b]) == set(oa.state[a])
        for key, value in state_arrays(oa, a).items():
            got = ob.state[b][key]
            assert got.dtype == value.dtype, key
            assert got.data_ptr() != value.data_ptr(), f"{key} aliases the source optimizer"
            assert_same_bits(got, value, key)
    for k in range(5, 10):
        for params, opt in ((pa, oa), (pb, ob)):
            for p, g in zip(params, grads[k]):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(pa, pb):
        assert_same_bits(b, a, "param after resume")
        for key, value in state_arrays(oa, a).items():
            assert_same_bits(ob.state[b][key], value, f"{key} after resume")


def test_state_dict_round_trip_numpy_float16_master():
    rng = np.random.default_rng(12)
    init = rng.standard_normal(300).astype(np.float16)
    grads = [rng.standard_normal(300).astype(np.float16) for _ in range(8)]
    a = Parameter(init.copy())
    oa = optim.RMSprop([a], lr=0.01, momentum=0.5, centered=True, master_weights=True)
    for g in grads[:4]:
        a.grad = g
        oa.step()
    buf = io.BytesIO()
    genesis.save(oa.state_dict(), buf)
    buf.seek(0)
    b = Parameter(a.data.copy())
    ob = optim.RMSprop([b])
    ob.load_state_dict(genesis.load(buf))
    assert ob.state[b]["master_param"].dtype == np.float32
    for g in grads[4:]:
        a.grad, b.grad = g, g.copy()
        oa.step()
        ob.step()
    np.testing.assert_array_equal(b.data.view(np.int16), a.data.view(np.int16))
    np.testing.assert_array_equal(
        ob.state[b]["master_param"].view(np.int32), oa.state[a]["master_param"].view(np.int32)
    )


# -------------------------------------------------------------------- invalid options
def _one(dtype, value=1.0):
    p = torch.nn.Parameter(torch.full((4,), value, dtype=dtype))
    p.grad = torch.ones(4, dtype=dtype)
    return p


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["float16", "bfloat16", "float32"]
)
@pytest.mark.parametrize("name", NAMES)
def test_float16_state_is_refused(name, dtype):
    """float16 state (too little range for second moments) is a ValueError, raised before
    anything is updated."""
    p = _one(dtype)
    before = p.detach().clone()
    with pytest.raises(ValueError, match="float16"):
        opt = getattr(optim, name)([p], lr=0.1, state_dtype="float16")
        opt.step()
    assert_same_bits(p, before, "refused step")


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_float64_state_only_for_float64_params(dtype):
    p = _one(dtype)
    with pytest.raises(ValueError, match="float64"):
        optim.Adam([p], state_dtype="float64").step()
    q = _one(torch.float64)
    opt = optim.Adam([q], state_dtype="float64")
    opt.step()
    assert opt.state[q]["exp_avg"].dtype == torch.float64


# ("int8" is 8-bit state, docs/low-bit-state.md; "uint8" is not a state dtype.)
@pytest.mark.parametrize("bad", [torch.int32, "uint8", np.int32, "half16", 3])
@pytest.mark.parametrize("name", NAMES)
def test_non_float_state_dtype_is_type_error(name, bad):
    with pytest.raises(TypeError):
        getattr(optim, name)([_one(torch.bfloat16)], lr=0.1, state_dtype=bad)
    opt = getattr(optim, name)([_one(torch.bfloat16)], lr=0.1)
    with pytest.raises(TypeError):
        opt.add_param_group({"params": [_one(torch.bfloat16)], "state_dtype": bad})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", NAMES)
def test_unknown_keyword_is_type_error(name):
    with pytest.raises(TypeError, match="master_weight"):
        getattr(optim, name)([_one(torch.float16)], lr=0.1, master_weight=True)
    with pytest.raises(TypeError):
        getattr(optim, name)([_one(torch.float16)], lr=0.1, stochastic_round=True)


def test_stochastic_rounding_only_for_bfloat16_without_master():
    """stochastic_rounding applies to bfloat16 parameters without master weights; the group's
    other parameters (float16, float32, bfloat16 with a master copy) round to nearest: the same
    bits as without the option. Updates of 0.3 bfloat16 ulp make the difference visible."""
    n, lr = 2048, 1e-3
    gen = torch.Generator().manual_seed(8)
    init = {dt: (torch.rand(n, generator=gen) + 1.0).to(dt) for dt in (torch.bfloat16, torch.float16, torch.float32)}

    def build(rounding):
        ps = [torch.nn.Parameter(init[dt].clone()) for dt in (torch.bfloat16, torch.float16, torch.float32)]
        m = torch.nn.Parameter(init[torch.bfloat16].clone())
        extra = dict(stochastic_rounding=True, seed=4) if rounding else {}
        opt = optim.SGD([{"params": ps}, {"params": [m], "master_weights": True}], lr=lr, momentum=0.5, **extra)
        return ps + [m], opt

    sr, osr = build(True)
    rtn, ortn = build(False)
    for _ in range(5):
        for params in (sr, rtn):
            for p in params:
                p.grad = torch.ones(n, dtype=p.dtype)
        osr.step()
        ortn.step()
    for i, (a, b) in enumerate(zip(sr[1:], rtn[1:]), start=1):
        assert_same_bits(a, b, f"param {i} rounds to nearest")
    assert int((bits(sr[0]) != bits(rtn[0])).sum()) > 100, "the bfloat16 parameter did not round stochastically"
    assert_same_bits(osr.state[sr[3]]["master_param"], ortn.state[rtn[3]]["master_param"], "master")
    assert [g["stochastic_rounding_step"] for g in osr.param_groups] == [5, 5]


def test_stochastic_rounding_counter_advances_only_on_steps_that_ran():
    """The counter advances once per step that updated; a step refused for a bad gradient, or
    skipped for inf/NaN gradients (GradScaler's found_inf), leaves it and the parameters alone,
    so a run that hit one draws the same bits as a run that never did."""
    n = 1024
    gen = torch.Generator().manual_seed(6)
    init = torch.randn(n, generator=gen).to(torch.bfloat16)
    grads = _fixed_grads(torch.bfloat16, [(n,)], 4, 7)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    oa = optim.Adam([a], lr=1e-3, stochastic_rounding=True, seed=1)
    ob = optim.Adam([b], lr=1e-3, stochastic_rounding=True, seed=1)
    for k in range(4):
        if k == 2:
            before = b.detach().clone()
            b.grad = torch.ones(n, dtype=torch.bfloat16).to_sparse()  # Adam refuses sparse
            with pytest.raises(RuntimeError, match="sparse"):
                ob.step()
            ob.found_inf = torch.tensor(1.0)  # skipped step
            b.grad = grads[k][0].clone()
            ob.step()
            del ob.found_inf
            assert_same_bits(b, before, "refused and skipped steps")
            assert ob.param_groups[0]["stochastic_rounding_step"] == 2
        a.grad, b.grad = grads[k][0].clone(), grads[k][0].clone()
        oa.step()
        ob.step()
    assert_same_bits(b, a, "after refused and skipped steps")
    assert oa.param_groups[0]["stochastic_rounding_step"] == ob.param_groups[0]["stochastic_rounding_step"] == 4
