"""The reduction rules (LAMB, Adafactor; NOTE: [reduction rules] in include/genesis/reduce.h)
beyond what the registry-driven suites check: sums that are the same bits for any thread count,
the shapes where the task decomposition has edges (several chunks, more columns than lanes,
batches of matrices, empty and degenerate matrices), LAMB's zero-norm cases and the
difference between apex's and the paper's trust ratio."""

import contextlib
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402
from genesis.nn import Parameter  # noqa: E402

import reference as R  # noqa: E402

NAMES = ["LAMB", "Adafactor"]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
# A vector of two chunks and a tail, matrices with more columns than a block has lanes (1100),
# a batch of matrices, one row, one column. Adafactor's first pass takes tiles of at most 65536
# elements, a matrix's rows shared out evenly: (71, 1100) is a tile of 36 rows and one of 35,
# (2, 151, 1000) three tiles per matrix (51, 51, 49), (3, 40, 600) a tile per matrix, (700, 1)
# one tile of 700 rows.
SHAPES = [(2 * 65536 + 3,), (71, 1100), (2, 151, 1000), (3, 40, 600), (1, 700), (700, 1), (1, 1), ()]
EDGE_SHAPES = [(0,), (0, 5), (5, 0), (2, 0, 3), (4,), (2, 3)]


@contextlib.contextmanager
def _threads(n):
    """genesis runs on n threads (None: as it is) inside the block, as before after it."""
    before = genesis.get_num_threads()
    if n:
        genesis.set_num_threads(n)
    try:
        yield
    finally:
        genesis.set_num_threads(before)


def _run(name, shapes, hp, dtype, steps, threads=None, seed=0):
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.uniform(-1, 1, s).astype(dtype)) for s in shapes]
    grads = [[rng.normal(0, 1, s).astype(dtype) for s in shapes] for _ in range(steps)]
    with _threads(threads):
        opt = getattr(genesis.optim, name)(params, **hp)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g
            opt.step()
    return params, grads, opt


def _reference(name, shapes, hp, dtype, grads, seed):
    """The float64 reference's parameters after the steps _run(..., seed) took with `grads`,
    from the same initial values."""
    rng = np.random.default_rng(seed)
    ref = R.ReferenceOptimizer(name, [([rng.uniform(-1, 1, s).astype(dtype) for s in shapes], hp)])
    for gs in grads:
        ref.step([gs])
    return ref.params[0]


@pytest.mark.parametrize("name", NAMES)
def test_same_bits_for_any_thread_count(name):
    runs = [_run(name, SHAPES, R.RICH[name], np.float32, 3, threads=n)[0] for n in (1, 2, 3)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert a.data.tobytes() == b.data.tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_cache_blocked_groups_change_no_bit(name):
    """NOTE: [cache-blocked passes]: a call runs every pass of a group of tensors before the
    next group, a group closing once it holds 4 x 65536 elements per thread. At 2 threads
    (groups of >= 524,288 elements) these 2.3M elements make several groups, some of one
    large matrix, some of many small tensors: stepped in one call, every tensor gets the bits
    it gets stepped alone."""
    shapes = []
    for _ in range(3):
        shapes += [(600, 1000)] + [(1000,)] * 150 + [(7, 30)] * 10
    hp = R.RICH[name]
    together, grads, _ = _run(name, shapes, hp, np.float32, 2, threads=2)
    rng = np.random.default_rng(0)
    alone = [Parameter(rng.uniform(-1, 1, s).astype(np.float32)) for s in shapes]
    opts = [getattr(genesis.optim, name)([p], **hp) for p in alone]
    for gs in grads:
        for p, g, opt in zip(alone, gs, opts):
            p.grad = g
            opt.step()
    for a, b in zip(together, alone):
        assert a.data.tobytes() == b.data.tobytes()


def _lamb_kept_and_recomputed(dtype, extra, adam_w_mode, threads):
    """NOTE: [kept values]: on the CPU, LAMB's second pass reads the u its first pass kept in
    groups of at most max(2**22, threads * 2**19) elements, and recomputes u from the stored
    moments in larger ones: the same bits. A 100,000-element tensor stepped alone (a group of
    its own: kept) and in one call before a tensor that makes the group one element too large
    (recomputed); its parameter and moments must be equal bit for bit."""
    import torch

    def bits(t):
        return t.detach().contiguous().view(torch.uint8).numpy().tobytes()

    dtype = getattr(torch, dtype)
    limit = max(1 << 22, threads * (1 << 19))
    gen = torch.Generator().manual_seed(3)
    init = torch.rand(100_000, generator=gen, dtype=dtype) * 2 - 1
    hp = dict(R.RICH["LAMB"], adam_w_mode=adam_w_mode, **extra)
    kept, recomputed = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    big = torch.nn.Parameter(torch.rand(limit - 100_000 + 1, generator=gen, dtype=dtype) * 2 - 1)
    with _threads(threads):
        alone = genesis.optim.LAMB([kept], **hp)
        together = genesis.optim.LAMB([recomputed, big], **hp)
        for _ in range(3):
            g = torch.randn(init.shape, generator=gen, dtype=dtype)
            kept.grad, recomputed.grad = g, g.clone()
            big.grad = torch.randn(big.shape, generator=gen, dtype=dtype)
            alone.step()
            together.step()
    assert not torch.equal(kept, init)
    assert bits(kept) == bits(recomputed)
    for key in ("exp_avg", "exp_avg_sq"):
        assert bits(alone.state[kept][key]) == bits(together.state[recomputed][key])


@pytest.mark.parametrize("adam_w_mode", [True, False], ids=["adam_w_mode", "l2"])
@pytest.mark.parametrize(
    "dtype, extra",
    [("float32", {}), ("float64", {}), ("float32", {"state_dtype": "bfloat16"})],
    ids=["float32", "float64", "bfloat16-state"],
)
def test_lamb_kept_direction_changes_no_bit(dtype, extra, adam_w_mode):
    _lamb_kept_and_recomputed(dtype, extra, adam_w_mode, threads=2)


def test_lamb_kept_direction_at_many_threads():
    """At 16 threads a group closes at 2**22 elements and values are kept up to 2**23."""
    _lamb_kept_and_recomputed("float32", {}, True, threads=16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shapes", [SHAPES, EDGE_SHAPES], ids=["large", "edges"])
@pytest.mark.parametrize("name", NAMES)
def test_task_edges_match_reference(name, shapes, dtype):
    hp = R.RICH[name]
    params, grads, opt = _run(name, shapes, hp, dtype, 4, seed=5)
    for p, expected in zip(params, _reference(name, shapes, hp, dtype, grads, seed=5)):
        np.testing.assert_allclose(p.data, expected, **TOL[dtype])
        for key, shape in R.state_shapes(name, R.full_hyperparameters(name, hp), p.data.shape).items():
            assert opt.state[p][key].shape == shape
        assert float(opt.state[p]["step"]) == 4.0


@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_threads_first_step_matches_reference(name):
    """The CPU scratch is never cleared (include/genesis/reduce.h): it belongs to the calling
    thread, is NaN when new and holds the last step's numbers after. A new thread's first step,
    every task edge in one call, must match the reference: a rule that read a scratch entry
    before writing it would read NaN there."""
    import threading

    shapes, hp, out = SHAPES + EDGE_SHAPES, R.RICH[name], {}
    worker = threading.Thread(target=lambda: out.update(run=_run(name, shapes, hp, np.float64, 1, seed=7)))
    worker.start()
    worker.join()
    params, grads, _ = out["run"]
    for p, expected in zip(params, _reference(name, shapes, hp, np.float64, grads, seed=7)):
        np.testing.assert_allclose(p.data, expected, **TOL[np.float64])


def _clamp_grads(rng, shape, steps, dtype):
    """Gradients whose Adafactor variance estimate straddles eps1^2 = 1e-6: rows and columns of
    magnitude 1e-5 among ones of magnitude 1, a zero row and a zero column (row_var or col_var
    zero: the estimate is 0 and the clamp decides alone)."""
    scale = np.ones(shape)
    scale[..., 1::3, :] = 1e-5
    scale[..., :, 2::5] = 1e-5
    out = []
    for _ in range(steps):
        g = rng.normal(0, 1, shape) * scale
        g[..., 0, :] = 0.0
        g[..., :, 0] = 0.0
        out.append(g.astype(dtype))
    return out


def _growing_grads(rng, shape, steps, dtype):
    """Gradients that grow 20 % a step, so that the variance estimates lag behind them and
    RMS(u) > d = 1 from about the third step (the update clipping, and so the sum of u^2, then
    decides the step); rows of magnitude 1e-5 among ones (row factors near 1e5), a zero row and
    a zero column."""
    scale = np.ones(shape)
    scale[..., 1::3, :] = 1e-5
    out = []
    for t in range(steps):
        g = rng.normal(0, 1, shape) * scale * 1.2**t
        g[..., 0, :] = 0.0
        g[..., :, 0] = 0.0
        out.append(g.astype(dtype))
    return out


def _adafactor_against_reference_and_torch(dtype, hp, make_grads, check):
    """25 steps on a matrix and a batch of two: genesis equal to the float64 reference, and to
    torch for float32; check(v, u, eps1) after each step sees the reference's variance
    estimate and update."""
    import torch

    shapes = [(12, 70), (2, 9, 40)]
    rng = np.random.default_rng(3)
    init = [rng.uniform(-1, 1, s).astype(dtype) for s in shapes]
    grads = list(zip(*[make_grads(rng, s, 25, dtype) for s in shapes]))
    params = [Parameter(x.copy()) for x in init]
    opt = genesis.optim.Adafactor(params, **hp)
    ref = R.ReferenceOptimizer("Adafactor", [([x.copy() for x in init], hp)])
    tparams = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]
    topt = torch.optim.Adafactor(tparams, **hp)
    eps1 = hp.get("eps", (np.finfo(dtype).eps,))[0]
    for gs in grads:
        for p, tp, g in zip(params, tparams, gs):
            p.grad = g
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        ref.step([list(gs)])
        topt.step()
        for state, g in zip(ref.state[0], gs):
            row, col = state["row_var"], state["col_var"]
            v = row * col / np.maximum(row.mean(axis=-2, keepdims=True), eps1)
            check(v, g / np.sqrt(np.maximum(v, eps1 * eps1)), eps1)
    for p, tp, expected in zip(params, tparams, ref.params[0]):
        np.testing.assert_allclose(p.data, expected, **TOL[dtype])
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOL[np.float32])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_adafactor_eps1_clamp_matches_reference_and_torch(dtype):
    """u = min(row_factor * col_factor, 1 / eps1) * g (the factored form of torch's
    g * rsqrt(max(row_var * col_var / mean, eps1^2))) where the clamp binds for part of every
    matrix: equal to the float64 reference, and to torch for float32."""

    def check(v, u, eps1):  # somewhere in every matrix, not everywhere
        assert (v < eps1**2).any() and (v > eps1**2).any()

    hp = dict(lr=0.05, eps=(1e-3, 1e-3), weight_decay=0.1)
    _adafactor_against_reference_and_torch(dtype, hp, _clamp_grads, check)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_adafactor_update_clipping_with_zero_and_small_rows(dtype):
    """The sum of u^2 deciding most steps (RMS(u) > d, the update clipping active) with torch's
    default eps1, row factors near 1e5 and a zero row and column, where the clamp binds only
    on the zeros: equal to the reference and to torch."""

    rms = []

    def check(v, u, eps1):
        assert (v[v > 0] > eps1**2).all()  # the clamp binds only where the gradient is zero
        rms.append(np.sqrt(np.mean(u * u)))

    _adafactor_against_reference_and_torch(dtype, dict(lr=0.05, weight_decay=0.1), _growing_grads, check)
    assert np.mean(np.array(rms) > 1.1) > 0.75  # the update clipping is active (from the third step)


def test_lamb_trust_ratio_is_one_when_a_norm_is_zero():
    """A zero parameter (||p|| = 0) takes the plain Adam-like step lr * u, as apex does."""
    p = Parameter(np.zeros(5))
    p.grad = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    genesis.optim.LAMB([p], lr=0.1, weight_decay=0.01).step()
    ref = R.lamb(
        np.zeros(5),
        p.grad,
        {},
        lr=0.1,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.01,
        bias_correction=True,
        adam_w_mode=True,
        grad_averaging=True,
        use_nvlamb=False,
        maximize=False,
    )
    np.testing.assert_allclose(p.data, ref, rtol=1e-12)
    assert np.abs(p.data + 0.1 * np.sign(p.grad)).max() < 1e-5  # u = m_hat / (|m_hat| + eps)
    # A zero gradient and a zero parameter: u = 0, nothing moves, no NaN.
    q = Parameter(np.zeros(3))
    q.grad = np.zeros(3)
    genesis.optim.LAMB([q], use_nvlamb=True).step()
    assert np.array_equal(q.data, np.zeros(3))


def test_lamb_trust_ratio_apex_versus_paper():
    """apex applies the trust ratio only where weight_decay != 0 (unless use_nvlamb); the paper
    everywhere. With weight_decay = 0 the two differ, and use_nvlamb=True is the paper."""
    rng = np.random.default_rng(1)
    init, g = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
    out = {}
    for nv in (False, True):
        p = Parameter(init.copy())
        p.grad = g
        genesis.optim.LAMB([p], lr=0.1, weight_decay=0.0, use_nvlamb=nv).step()
        out[nv] = p.data
    m_hat_over = g / (np.abs(g) + 1e-6)  # the first step's u
    np.testing.assert_allclose(out[False], init - 0.1 * m_hat_over, rtol=1e-12)
    trust = np.linalg.norm(init) / np.linalg.norm(m_hat_over)
    np.testing.assert_allclose(out[True], init - 0.1 * trust * m_hat_over, rtol=1e-12)


def test_bad_hyperparameters_raise_before_anything_changes():
    p = Parameter(np.ones(3))
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        genesis.optim.LAMB([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Clipping threshold d should be >= 1"):
        genesis.optim.Adafactor([p], d=0.5)
    with pytest.raises(ValueError, match="Invalid eps"):
        genesis.optim.Adafactor([p], eps=1e-3)
    opt = genesis.optim.Adafactor([p])
    q = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="beta2_decay should be <= 0 but is: 0.5"):
        opt.add_param_group({"params": [q], "beta2_decay": 0.5})
    assert len(opt.param_groups) == 1
    opt.step()
    assert float(opt.state[p]["step"]) == 1.0


def test_adafactor_state_dict_with_wrong_factor_shape_is_refused():
    p = Parameter(np.ones((4, 3)))
    p.grad = np.ones((4, 3))
    opt = genesis.optim.Adafactor([p])
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["row_var"] = np.ones((4, 3))
    with pytest.raises(ValueError, match="row_var.*must have shape \\(4, 1\\)"):
        genesis.optim.Adafactor([Parameter(np.ones((4, 3)))]).load_state_dict(sd)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_adafactor_infinite_lr_is_the_papers_relative_step(dtype):
    """lr = inf makes the step size min(lr, 1 / sqrt(t)) = 1 / sqrt(t), the paper's schedule
    (torch accepts it); without weight decay nothing multiplies by 1 - lr * wd = 1 - inf * 0
    (NOTE: [lr = inf] in include/genesis/rules/adafactor.h): finite, equal to the reference and
    to torch."""

    def check(v, u, eps1):
        assert np.isfinite(u).all()

    _adafactor_against_reference_and_torch(dtype, dict(lr=float("inf")), _growing_grads, check)
