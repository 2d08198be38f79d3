"""genesis.optim.Muon: the float64 NumPy reference (tests/reference.py), torch.optim.Muon
parity and state_dicts both ways, torch's errors, mixed precision.

Muon rounds its Newton-Schulz input and every intermediate to bfloat16 (torch 2.13), so one
last-bit difference before the rounding becomes a visible one: torch parity is checked at the
suite's tolerances, which only bit-identical arithmetic meets over 25 steps."""

import copy
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402
from genesis.nn import Parameter  # noqa: E402

import reference as R  # noqa: E402

STEPS = 25
# Tall, wide, square, 1xN and Nx1 matrices over two groups; the last of group 0 never gets a
# gradient.
SHAPES = [[(6, 4), (3, 7), (1, 5), (2, 2)], [(5, 1), (4, 4)]]
FROZEN = (0, 3)
CASE_IDS = [R.config_id(hp) for hp in R.MUON_CONFIGS]


def _hp(hp):
    out = dict(R.MUON_DEFAULTS)
    out.update(hp)
    return out


def _groups(rng, dtype, make):
    return [[make(rng.standard_normal(s).astype(dtype)) for s in shapes] for shapes in SHAPES]


def _grads(rng, dtype):
    return [
        [None if (gi, i) == FROZEN else rng.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)]
        for gi, shapes in enumerate(SHAPES)
    ]


def _second_group_hp(hp):
    """The second group halves the lr and flips nesterov: both groups' options reach the core."""
    return dict(lr=hp["lr"] / 2, nesterov=not hp.get("nesterov", True))


def _run_numpy(hp, dtype, ns_dtype, bfloat16_reference):
    rng = np.random.default_rng(7)
    params = _groups(rng, dtype, Parameter)
    second = _second_group_hp(hp)
    extra = {} if ns_dtype is None else dict(ns_dtype=ns_dtype)
    opt = genesis.optim.Muon([{"params": params[0]}, {"params": params[1], **second}], **hp, **extra)
    groups = [
        ([p.data.astype(np.float64) for p in params[0]], _hp(hp)),
        ([p.data.astype(np.float64) for p in params[1]], _hp(dict(hp, **second))),
    ]
    states = [[{} for _ in ps] for ps, _ in groups]
    for _ in range(STEPS):
        grads = _grads(rng, dtype)
        for gi, ps in enumerate(params):
            for i, p in enumerate(ps):
                p.grad = grads[gi][i]
        opt.step()
        for (ps, g_hp), st, gs in zip(groups, states, grads):
            for i, g in enumerate(gs):
                if g is not None:
                    ps[i] = R.muon(ps[i], g.astype(np.float64), st[i], bfloat16=bfloat16_reference, **g_hp)
    return opt, params, groups, states


@pytest.mark.parametrize("hp", R.MUON_CONFIGS, ids=CASE_IDS)
def test_float64_matches_reference(hp):
    """float64 parameters with NS in float64 (genesis's ns_dtype): every flag, two groups,
    odd shapes, a parameter without gradients, 25 steps, against the float64 reference."""
    opt, params, groups, states = _run_numpy(hp, np.float64, "float64", False)
    for gi, ps in enumerate(params):
        for i, p in enumerate(ps):
            np.testing.assert_allclose(p.data, groups[gi][0][i], rtol=1e-12, atol=1e-13)
            if (gi, i) == FROZEN:
                assert p not in opt.state
                continue
            assert set(opt.state[p]) == {"momentum_buffer"}
            np.testing.assert_allclose(
                opt.state[p]["momentum_buffer"], states[gi][i]["momentum_buffer"], rtol=1e-12, atol=1e-13
            )


@pytest.mark.parametrize("hp", [R.MUON_CONFIGS[0], R.MUON_RICH], ids=["plain", "rich"])
def test_float32_matches_reference(hp):
    """float32 parameters, NS in float32: within float32 rounding of the reference."""
    _, params, groups, _ = _run_numpy(hp, np.float32, "float32", False)
    for gi, ps in enumerate(params):
        for i, p in enumerate(ps):
            np.testing.assert_allclose(p.data, groups[gi][0][i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_default_bfloat16_iteration_matches_rounded_reference(dtype):
    """torch's default: NS in bfloat16. NumPy emulates it (float32 products rounded to
    bfloat16); the reference rounds float64 products the same way. Both round the same values
    except where a float32/float64 product lies at a bfloat16 rounding boundary, which moves
    one element by one bfloat16 step (2^-8 relative) of an update of size ~lr."""
    hp = R.MUON_RICH
    _, params, groups, _ = _run_numpy(hp, dtype, None, True)
    for gi, ps in enumerate(params):
        for i, p in enumerate(ps):
            np.testing.assert_allclose(p.data, groups[gi][0][i], rtol=0, atol=STEPS * hp["lr"] * 2**-6)


def test_bfloat16_rounding_helper_agrees_with_reference():
    from genesis.optim._newton_schulz import _round_bfloat16

    x = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 10.0 ** np.arange(-3, 7).repeat(1000)
    x[:4] = [0.0, -0.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8]  # ties go to even
    np.testing.assert_array_equal(_round_bfloat16(x), R.round_bfloat16(x.astype(np.float64)).astype(np.float32))
    assert np.isnan(_round_bfloat16(np.array([np.nan], np.float32)))[0]


# ------------------------------------------------------------------------------ torch
# torch parity runs a set that covers every flag value and both lerp branches (the float64
# reference above runs every combination); torch's bfloat16 CPU matmuls make each step slow.
TORCH_CASES = [
    dict(lr=0.02),
    dict(lr=0.02, nesterov=False, momentum=0.3, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.02, weight_decay=0.0, momentum=0.3, adjust_lr_fn="original"),
    dict(lr=0.02, ns_steps=3, ns_coefficients=(3.4, -4.7, 2.0), eps=1e-3),
    dict(lr=0.02, ns_steps=0),
    R.MUON_RICH,
]
torch_cases = [pytest.param(hp, id=R.config_id(hp)) for hp in TORCH_CASES]


def _make(cls, params, hp):
    """`cls` over the flattened SHAPES in their two groups."""
    n = len(SHAPES[0])
    return cls([{"params": params[:n]}, {"params": params[n:], **_second_group_hp(hp)}], **hp)


def _torch_params(torch, dtype):
    torch.manual_seed(3)
    return [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for shapes in SHAPES for s in shapes]


def _step_both(torch, pairs, steps, start=0):
    """Every optimizer of `pairs` gets the same gradients; parameter 3 (2x2) never gets one."""
    for k in range(start, start + steps):
        for opt, params in pairs:
            gen = torch.Generator().manual_seed(100 + k)
            for j, p in enumerate(params):
                g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.grad = None if j == 3 else g
            opt.step()


TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("hp", torch_cases)
def test_torch_parity_and_state_dict(hp, dtype_name):
    """Beside torch.optim.Muon on the same gradients (two groups, a parameter without
    gradients, tall/wide/1xN/Nx1), 25 steps; then each state_dict loads into the other class
    and both continue identically."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    tol = TOL[dtype_name]
    ours, theirs = _torch_params(torch, dtype), _torch_params(torch, dtype)
    g_opt = _make(genesis.optim.Muon, ours, hp)
    t_opt = _make(torch.optim.Muon, theirs, hp)
    _step_both(torch, [(g_opt, ours), (t_opt, theirs)], STEPS)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tol)
    g_sd, t_sd = g_opt.state_dict(), t_opt.state_dict()
    assert g_sd["param_groups"] == t_sd["param_groups"]
    assert g_sd["state"].keys() == t_sd["state"].keys()
    for k in t_sd["state"]:
        assert g_sd["state"][k].keys() == t_sd["state"][k].keys() == {"momentum_buffer"}
        torch.testing.assert_close(g_sd["state"][k]["momentum_buffer"], t_sd["state"][k]["momentum_buffer"], **tol)
    for src_sd, src_params in ((t_sd, theirs), (g_sd, ours)):
        for cls in (genesis.optim.Muon, torch.optim.Muon):
            twin = [torch.nn.Parameter(p.detach().clone()) for p in src_params]
            resumed = _make(cls, twin, hp)
            resumed.load_state_dict(copy.deepcopy(src_sd))
            ref = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
            ref_opt = _make(torch.optim.Muon, ref, hp)
            ref_opt.load_state_dict(copy.deepcopy(t_sd))
            # Start both from torch's parameters and state (genesis's equal them at tol).
            with torch.no_grad():
                for t, r in zip(twin, ref):
                    t.copy_(r)
            _step_both(torch, [(resumed, twin), (ref_opt, ref)], 3, start=STEPS)
            for a, b in zip(twin, ref):
                torch.testing.assert_close(a, b, **tol)


def test_torch_mlp_parity():
    """A bias-free MLP (Muon is for 2-D weights) trained by both, float32, 25 steps."""
    torch = pytest.importorskip("torch")
    models = []
    for cls in (genesis.optim.Muon, torch.optim.Muon):
        torch.manual_seed(1)
        model = torch.nn.Sequential(
            torch.nn.Linear(16, 32, bias=False), torch.nn.Tanh(), torch.nn.Linear(32, 8, bias=False)
        )
        opt = cls(model.parameters(), lr=0.02)
        for k in range(STEPS):
            x = torch.randn(64, 16, generator=torch.Generator().manual_seed(k))
            opt.zero_grad()
            (model(x) ** 2).mean().backward()
            opt.step()
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_strided_parameter_and_gradient():
    """A transposed (non-contiguous) parameter and gradient are updated as torch updates them."""
    torch = pytest.importorskip("torch")
    base = [torch.randn(4, 6) for _ in range(2)]
    ours = torch.nn.Parameter(base[0].clone().T)
    theirs = torch.nn.Parameter(base[0].clone().T)
    assert not ours.is_contiguous()
    g_opt, t_opt = genesis.optim.Muon([ours], lr=0.05), torch.optim.Muon([theirs], lr=0.05)
    for k in range(5):
        g = torch.randn(6, 4, generator=torch.Generator().manual_seed(k)).T.contiguous().T
        ours.grad, theirs.grad = g.T.clone().T, g.T.clone().T
        g_opt.step()
        t_opt.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ errors
def test_construction_errors_are_torchs():
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.randn(2, 3))
    cases = [
        (dict(params=[torch.nn.Parameter(torch.randn(3))]), ValueError, "Muon only supports 2D parameters"),
        (dict(params=[torch.nn.Parameter(torch.randn(2, 3, 4))]), ValueError, "Muon only supports 2D parameters"),
        (dict(params=[w], lr=-1.0), ValueError, "Learning rate should be >= 0 but is: -1.0"),
        (dict(params=[w], momentum=-0.5), ValueError, "momentum should be >= 0 but is: -0.5"),
        (dict(params=[w], weight_decay=-0.1), ValueError, "weight decay should be >= 0 but is: -0.1"),
        (dict(params=[w], adjust_lr_fn="other"), ValueError, "Adjust learning rate function other is not supported"),
        (dict(params=[w], lr=torch.tensor([0.1, 0.2])), ValueError, "Tensor lr must be 1-element"),
    ]
    for kwargs, error, message in cases:
        for cls in (torch.optim.Muon, genesis.optim.Muon):
            with pytest.raises(error, match=message):
                cls(**copy.deepcopy(kwargs))


def test_numpy_non_2d_parameter_is_refused():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters .*\(3,\)"):
        genesis.optim.Muon([Parameter(np.zeros(3, np.float32))])


@pytest.mark.parametrize("case", ["complex", "sparse", "ns_steps", "coefficients", "grad_1d", "ns_dtype"])
def test_step_errors_change_nothing(case):
    """torch raises these at step (after updating earlier parameters); genesis raises the same
    type and message before anything changes."""
    torch = pytest.importorskip("torch")
    good = torch.nn.Parameter(torch.randn(3, 2))
    good.grad = torch.randn(3, 2)
    kwargs, bad, error, message = {}, None, ValueError, None
    if case == "complex":
        bad = torch.nn.Parameter(torch.randn(2, 3, dtype=torch.complex64))
        bad.grad = torch.randn_like(bad)
        error, message = RuntimeError, "Muon does not support complex parameters"
    elif case == "sparse":
        bad = torch.nn.Parameter(torch.randn(4, 3))
        bad.grad = torch.randn(4, 3).to_sparse()
        error, message = RuntimeError, "Muon does not support sparse gradients"
    elif case == "ns_steps":
        kwargs, message = dict(ns_steps=100), "Number of steps must be less than 100"
    elif case == "coefficients":
        kwargs, message = dict(ns_coefficients=(1.0, 2.0)), "Coefficients must be a tuple of exactly 3 values"
    elif case == "grad_1d":
        bad = torch.nn.Parameter(torch.randn(2, 2))
        message = "Param gradient must be a 2D matrix"
    else:
        with pytest.raises(ValueError, match="ns_dtype"):
            genesis.optim.Muon([good], ns_dtype="int8")
        return
    params = [good] + ([bad] if bad is not None else [])
    for cls in (torch.optim.Muon, genesis.optim.Muon):
        ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for p, q in zip(ps, params):
            p.grad = None if q.grad is None else q.grad.clone()
        opt = cls(ps, **kwargs)
        if case == "grad_1d":  # a parameter that became 1-D after construction
            ps[1].data = torch.randn(4)
            ps[1].grad = torch.randn(4)
        before = [p.detach().clone() for p in ps]
        with pytest.raises(error, match=message):
            opt.step()
        if cls is genesis.optim.Muon:
            assert all(torch.equal(a, b) for a, b in zip(before, ps))
            assert not opt.state


# ----------------------------------------------------------------------- mixed precision
def _train_torch(torch, dtype, steps=10, **kwargs):
    """Two matrices of `dtype` trained by genesis's Muon on gradients that are bfloat16
    numbers (so a float32 run sees exactly a bfloat16 run's gradients)."""
    torch.manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(s).bfloat16().to(dtype)) for s in [(8, 4), (4, 8)]]
    opt = genesis.optim.Muon(params, lr=0.02, **kwargs)
    for k in range(steps):
        gen = torch.Generator().manual_seed(k)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).bfloat16().to(dtype)
        opt.step()
    return params, opt


def test_master_weights_follow_float32():
    """bfloat16 parameters with master weights: the float32 master copy takes exactly the
    float32 run's values, the parameter is its rounding, the momentum buffer is float32."""
    torch = pytest.importorskip("torch")
    half, opt = _train_torch(torch, torch.bfloat16, master_weights=True)
    full, _ = _train_torch(torch, torch.float32)
    for h, f in zip(half, full):
        master = opt.state[h]["master_param"]
        assert master.dtype == torch.float32
        assert opt.state[h]["momentum_buffer"].dtype == torch.float32
        assert torch.equal(master, f)
        assert torch.equal(h, master.bfloat16())


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_half_parameters_stay_close_to_torch(dtype_name):
    """16-bit parameters compute in float32 and round once, with a float32 momentum buffer;
    torch keeps a 16-bit buffer and rounds after its decay (which a bfloat16 parameter mostly
    loses) and again after the step. Over 10 steps of lr 0.02 the two stay within half of the
    distance travelled."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    ours, _ = _train_torch(torch, dtype)
    torch.manual_seed(5)
    theirs = [torch.nn.Parameter(torch.randn(s).bfloat16().to(dtype)) for s in [(8, 4), (4, 8)]]
    opt = torch.optim.Muon(theirs, lr=0.02)
    for k in range(10):
        gen = torch.Generator().manual_seed(k)
        for p in theirs:
            p.grad = torch.randn(p.shape, generator=gen).bfloat16().to(dtype)
        opt.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=0.1)


def test_bfloat16_state_and_stochastic_rounding():
    torch = pytest.importorskip("torch")
    full, _ = _train_torch(torch, torch.float32)
    small, opt = _train_torch(torch, torch.float32, state_dtype="bfloat16")
    assert opt.state[small[0]]["momentum_buffer"].dtype == torch.bfloat16
    for a, b in zip(small, full):
        torch.testing.assert_close(a, b, rtol=0, atol=0.02)
    runs = [_train_torch(torch, torch.bfloat16, stochastic_rounding=True, seed=9)[0] for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)  # same seed, same bits


def test_grad_scaler_scale_is_divided_out():
    """torch.amp.GradScaler hands genesis its scale; the momentum stage divides it out as it
    loads the gradients (a power of two: exactly the unscaled run)."""
    torch = pytest.importorskip("torch")
    runs = []
    for scaled in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3, bias=False)
        opt = genesis.optim.Muon(model.parameters(), lr=0.02)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaled else None
        for k in range(5):
            x = torch.randn(4, 6, generator=torch.Generator().manual_seed(k))
            opt.zero_grad()
            loss = (model(x) ** 2).mean()
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        runs.append(model.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_numpy_and_torch_agree():
    """The same run with NumPy parameters (bfloat16 emulated, NumPy's matmul) and with torch
    tensors (torch's bfloat16 kernels): the same values up to bfloat16 rounding boundaries."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    starts = [rng.standard_normal(s).astype(np.float32) for s in [(6, 4), (3, 7)]]
    grads = [[rng.standard_normal(s.shape).astype(np.float32) for s in starts] for _ in range(10)]
    n_params = [Parameter(s.copy()) for s in starts]
    t_params = [torch.nn.Parameter(torch.from_numpy(s.copy())) for s in starts]
    n_opt, t_opt = genesis.optim.Muon(n_params, lr=0.02), genesis.optim.Muon(t_params, lr=0.02)
    for gs in grads:
        for n, t, g in zip(n_params, t_params, gs):
            n.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        n_opt.step()
        t_opt.step()
    for n, t in zip(n_params, t_params):
        np.testing.assert_allclose(n.data, t.detach().numpy(), rtol=0, atol=10 * 0.02 * 2**-6)


def test_stage_rules_are_registered_apart_from_optimizers():
    """The stages come from GENESIS_STAGE_RULES: bound with their schema, not optimizers."""
    from genesis import _C

    assert [s for s, _ in _C.STAGES] == ["muon_momentum", "muon_update"]
    assert not {s for s, _ in _C.STAGES} & {r for r, _ in _C.RULES}
    assert _C.MuonMomentumOptions.fields() == [("momentum", "float"), ("nesterov", "bool")]
    assert _C.MuonMomentumOptions(momentum=0.5).state_names() == ["momentum_buffer"]
    assert _C.MuonUpdateOptions.fields() == [("decay", "float"), ("adjusted_lr", "float")]
    with pytest.raises(TypeError, match="unexpected option"):
        _C.MuonUpdateOptions(betas=(0.9, 0.9))


# ------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_cuda_matches_torch(dtype_name):
    """CUDA parameters: genesis's stage kernels and torch's CUDA matmuls beside torch's Muon
    on the same device, then the CPU run of genesis."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or not genesis._C.cuda_built():
        pytest.skip("needs a CUDA device and a CUDA build")
    dtype = getattr(torch, dtype_name)
    hp = R.MUON_RICH
    results = {}
    for name, cls, device in (
        ("genesis", genesis.optim.Muon, "cuda"),
        ("torch", torch.optim.Muon, "cuda"),
        ("cpu", genesis.optim.Muon, "cpu"),
    ):
        params = [torch.nn.Parameter(p.detach().to(device)) for p in _torch_params(torch, dtype)]
        opt = _make(cls, params, hp)
        _step_both_device(torch, opt, params, device)
        results[name] = [p.detach().cpu() for p in params]
    for a, b in zip(results["genesis"], results["torch"]):
        torch.testing.assert_close(a, b, **TOL[dtype_name])
    for a, b in zip(results["genesis"], results["cpu"]):  # CUDA matmuls round differently
        torch.testing.assert_close(a, b, rtol=0, atol=STEPS * hp["lr"] * 2**-5)


def _step_both_device(torch, opt, params, device):
    for k in range(STEPS):
        gen = torch.Generator().manual_seed(100 + k)
        for j, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad = None if j == 3 else g.to(device)
        opt.step()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_master_weights_and_grad_scale_on_the_parameters_device(device):
    """bfloat16 parameters with float32 master weights, the loss scale and the inf flag handed
    to the step on the parameters' device (the GradScaler protocol of the fused optimizers,
    driven by hand: torch.amp.GradScaler unscales 16-bit gradients itself for an optimizer
    without `fused`, which torch 2.11 refuses on CUDA, and genesis.amp.GradScaler takes CPU
    parameters)."""
    torch = pytest.importorskip("torch")
    if device == "cuda" and (not torch.cuda.is_available() or not genesis._C.cuda_built()):
        pytest.skip("needs a CUDA device and a CUDA build")
    torch.manual_seed(0)
    model = torch.nn.Linear(32, 16, bias=False).to(device).bfloat16()
    opt = genesis.optim.Muon(model.parameters(), lr=0.02, master_weights=True)
    for step in range(5):
        x = torch.randn(8, 32, device=device, dtype=torch.bfloat16)
        opt.zero_grad()
        (model(x).float().pow(2).mean() * 256.0).backward()
        opt.grad_scale = torch.tensor(256.0, device=device)
        opt.found_inf = torch.tensor(1.0 if step == 2 else 0.0, device=device)
        before = model.weight.detach().clone()
        opt.step()
        assert torch.equal(before, model.weight) == (step == 2)  # the flagged step changes nothing
    master = opt.state[model.weight]["master_param"]
    assert torch.equal(model.weight, master.bfloat16())
    assert torch.isfinite(master).all()


def test_deferred_clip_scales_the_gradients_not_the_orthogonalized_update():
    """opt.clip_grad_norm_ on Muon applies the coefficient where the gradients are read (the
    momentum stage), exactly as clipping the gradients in place first; the update stage's input
    (the Newton-Schulz output) is not scaled again."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(5)
    init = [torch.randn(6, 9, generator=gen), torch.randn(4, 4, generator=gen)]
    grads = [[torch.randn(x.shape, generator=gen) * 3 for x in init] for _ in range(4)]
    fused = [torch.nn.Parameter(x.clone()) for x in init]
    eager = [torch.nn.Parameter(x.clone()) for x in init]
    fopt = genesis.optim.Muon(fused, lr=0.05)
    eopt = genesis.optim.Muon(eager, lr=0.05)
    for gs in grads:
        for p, q, g in zip(fused, eager, gs):
            p.grad, q.grad = g.clone(), g.clone()
        fnorm = fopt.clip_grad_norm_(0.5)
        enorm = genesis.nn.utils.clip_grad_norm_(eager, 0.5)
        assert torch.equal(fnorm, enorm)
        fopt.step()
        eopt.step()
    for p, q in zip(fused, eager):
        assert torch.equal(p, q)
        assert torch.equal(fopt.state[p]["momentum_buffer"], eopt.state[q]["momentum_buffer"])
