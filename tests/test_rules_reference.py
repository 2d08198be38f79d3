"""Every genesis update rule, with every flag combination, in float32 and float64, against the
plain float64 NumPy reference of docs/semantics.md#update-rules (tests/reference.py).

NumPy parameters (genesis.nn.Parameter) only: these tests need no torch, except the one test
that checks the reference itself against torch.optim.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402
from genesis.nn import Parameter  # noqa: E402

import reference as R  # noqa: E402

STEPS = 25
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
NAMES = R.NAMES


def _make(name, groups):
    """A genesis optimizer over `groups` (list of (Parameters, hyperparameter overrides)),
    where the first group's overrides are passed as the optimizer's keyword arguments."""
    first_hp = groups[0][1]
    spec = [
        {"params": ps, **{k: v for k, v in hp.items() if k not in first_hp or hp[k] != first_hp[k]}}
        for ps, hp in groups
    ]
    return getattr(genesis.optim, name)(spec, **first_hp)


def _close_state(actual, expected, tol, key):
    """State buffers (momentum sums) are larger than the parameters: their absolute tolerance
    scales with their magnitude."""
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=key)


def _check_state(opt, ref, params, dtype, name, hp_per_param, tol):
    """Every parameter's state in `opt` equals the reference's (and has its names only)."""
    for gi, group_params in enumerate(params):
        for i, p in enumerate(group_params):
            ref_state = ref.state[gi][i]
            if not ref_state:
                if R.eager_state(name):
                    assert float(opt.state[p]["step"]) == 0.0
                else:
                    assert p not in opt.state or not opt.state[p], "a parameter without grad got state"
                continue
            state = opt.state[p]
            shapes = R.state_shapes(name, hp_per_param[gi], p.data.shape)
            expected = set(shapes)
            scalars = set(R.scalar_names(name, hp_per_param[gi]))
            if R.counts_steps(name):
                expected.add("step")
                assert state["step"].shape == () and state["step"].dtype == np.float32
                assert float(state["step"]) == ref_state["step"]
            assert set(state) == expected | scalars
            for key in scalars:
                assert state[key].shape == () and state[key].dtype == np.float32
                np.testing.assert_allclose(float(state[key]), ref_state[key], rtol=1e-6, err_msg=key)
            for key in expected - {"step"}:
                arr = state[key]
                assert isinstance(arr, np.ndarray) and arr.dtype == dtype
                assert arr.shape == shapes[key]
                _close_state(arr, ref_state[key], tol, key)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name,hp", R.all_cases(), ids=R.all_case_ids())
def test_rule_matches_reference(name, hp, dtype):
    """Two groups (the second with half the lr), several shapes, a parameter without a
    gradient; every step checked against the float64 reference."""
    rng = np.random.default_rng(1234)
    shapes = [[(5,), (3, 4), (2,)], [(2, 1, 3), (1,)]]
    hps = [dict(hp), dict(hp, lr=hp["lr"] * 0.5)]
    params = [[Parameter(rng.uniform(-1, 1, s).astype(dtype)) for s in group] for group in shapes]
    frozen = (0, 2)  # this one never gets a gradient
    ref = R.ReferenceOptimizer(name, [([p.data for p in ps], h) for ps, h in zip(params, hps)])
    opt = _make(name, list(zip(params, hps)))
    frozen_before = params[frozen[0]][frozen[1]].data.copy()
    tol = TOL[dtype]
    for _ in range(STEPS):
        grads = []
        for gi, group in enumerate(params):
            gg = []
            for i, p in enumerate(group):
                if (gi, i) == frozen:
                    gg.append(None)
                    continue
                g = rng.normal(0.0, 1.0, p.data.shape).astype(dtype)
                p.grad = g
                gg.append(g)
            grads.append(gg)
        opt.step()
        ref.step(grads)
        for gi, group in enumerate(params):
            for i, p in enumerate(group):
                assert p.data.dtype == dtype
                np.testing.assert_allclose(p.data, ref.params[gi][i], **tol)
    np.testing.assert_array_equal(params[frozen[0]][frozen[1]].data, frozen_before)
    assert (params[frozen[0]][frozen[1]] in opt.state) == R.eager_state(name)
    _check_state(opt, ref, params, dtype, name, [R.full_hyperparameters(name, h) for h in hps], tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("size", [0, 1, 3, 65537])
@pytest.mark.parametrize("name", NAMES)
def test_sizes_match_reference(name, size, dtype):
    """Sizes 0, 1, 3 and 65537 (past one 64 Ki block, odd tail), every option switched on."""
    rng = np.random.default_rng(size)
    hp = R.RICH[name]
    p = Parameter(rng.uniform(-1, 1, size).astype(dtype))
    # A small neighbour in the same group, so the sizes are mixed within one call.
    q = Parameter(rng.uniform(-1, 1, 3).astype(dtype))
    ref = R.ReferenceOptimizer(name, [([p.data, q.data], hp)])
    opt = getattr(genesis.optim, name)([p, q], **hp)
    for _ in range(20):
        grads = [rng.normal(0, 1, size).astype(dtype), rng.normal(0, 1, 3).astype(dtype)]
        p.grad, q.grad = grads
        opt.step()
        ref.step([grads])
    np.testing.assert_allclose(p.data, ref.params[0][0], **TOL[dtype])
    np.testing.assert_allclose(q.data, ref.params[0][1], **TOL[dtype])
    for key in R.state_names(name, R.full_hyperparameters(name, hp)):
        assert opt.state[p][key].shape == (size,)
        _close_state(opt.state[p][key], ref.state[0][0][key], TOL[dtype], key)
    if R.counts_steps(name):
        assert float(opt.state[p]["step"]) == 20.0


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtypes_in_one_group(name):
    """float32 and float64 parameters side by side in one group: each is updated in its own
    dtype and matches the reference within that dtype's tolerance."""
    rng = np.random.default_rng(7)
    hp = R.RICH[name]
    dtypes = [np.float32, np.float64, np.float32, np.float64]
    params = [Parameter(rng.uniform(-1, 1, (4, 3)).astype(d)) for d in dtypes]
    ref = R.ReferenceOptimizer(name, [([p.data for p in params], hp)])
    opt = getattr(genesis.optim, name)(params, **hp)
    for _ in range(STEPS):
        grads = [rng.normal(0, 1, (4, 3)).astype(d) for d in dtypes]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        ref.step([grads])
    for p, d, expected in zip(params, dtypes, ref.params[0]):
        assert p.data.dtype == d
        np.testing.assert_allclose(p.data, expected, **TOL[d])
        for key in R.state_names(name, R.full_hyperparameters(name, hp), p.data.shape):
            assert opt.state[p][key].dtype == d


def test_reference_first_steps_by_hand():
    """The reference itself, on values small enough to check by hand."""
    p = np.array([1.0, -2.0])
    g = np.array([0.5, 0.25])
    # Plain SGD and SGD with momentum (buffer = g on the first step).
    assert np.allclose(R.sgd(p, g, {}, 0.1, 0, 0, 0, False, False), [0.95, -2.025])
    st = {}
    R.sgd(p, g, st, 0.1, 0.9, 0.5, 0, False, False)
    assert np.allclose(st["momentum_buffer"], g)
    R.sgd(p, g, st, 0.1, 0.9, 0.5, 0, False, False)
    assert np.allclose(st["momentum_buffer"], 0.9 * g + 0.5 * g)
    # Adam's first step moves every element by lr * sign(g) (up to eps).
    out = R.adam(p, g, {}, 0.01, (0.9, 0.999), 0.0, 0.0, False, False, False)
    assert np.allclose(out, p - 0.01 * np.sign(g))
    # RMSprop's first step: v = (1-alpha) g^2, p -= lr * g / sqrt(v).
    out = R.rmsprop(p, g, {}, 0.01, 0.99, 0.0, 0.0, 0.0, False, False)
    assert np.allclose(out, p - 0.01 * np.sign(g) / np.sqrt(0.01))
    # maximize negates the gradient.
    assert np.allclose(R.sgd(p, g, {}, 0.1, 0, 0, 0, False, True), [1.05, -1.975])


@pytest.mark.parametrize("name,hp", R.all_cases(), ids=R.all_case_ids())
def test_reference_agrees_with_torch(name, hp):
    """The reference is checked against torch.optim in float64, so that a mistake in it cannot
    hide a mistake in genesis (skipped without torch)."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, name):
        pytest.skip(f"torch has no {name} (see test_lion_reference_follows_the_paper)")
    rng = np.random.default_rng(3)
    init = rng.uniform(-1, 1, (3, 4))
    t = torch.nn.Parameter(torch.tensor(init))
    ref = R.ReferenceOptimizer(name, [([init], hp)])
    opt = R.torch_class(name)([t], **hp)
    for _ in range(10):
        g = rng.normal(0, 1, (3, 4))
        t.grad = torch.tensor(g)
        opt.step()
        ref.step([[g]])
    np.testing.assert_allclose(t.detach().numpy(), ref.params[0][0], rtol=1e-12, atol=1e-13)


def test_lion_reference_follows_the_paper():
    """Lion's reference against Chen et al. 2023, Algorithm 2, worked by hand for two steps:
    c = b1 m + (1-b1) g; p -= lr (sign(c) + wd p); m = b2 m + (1-b2) g."""
    p = np.array([1.0, -2.0, 0.5])
    state = {}
    hp = dict(lr=0.1, betas=(0.9, 0.99), weight_decay=0.5, maximize=False)
    p1 = R.lion(p, np.array([0.3, -0.2, 0.0]), state, **hp)
    # m = 0: c = 0.1 g, sign(c) = sign(g); the zero gradient moves by weight decay only.
    np.testing.assert_allclose(p1, [1.0 - 0.1 * (1 + 0.5), -2.0 - 0.1 * (-1 - 1.0), 0.5 - 0.1 * 0.25])
    np.testing.assert_allclose(state["exp_avg"], [0.003, -0.002, 0.0])
    # Second step, g opposite to m but smaller than m's pull: c = 0.9 m + 0.1 g.
    g2 = np.array([-0.02, 0.05, 1.0])
    c = 0.9 * np.array([0.003, -0.002, 0.0]) + 0.1 * g2  # [0.0007, 0.0032, 0.1]
    p2 = R.lion(p1, g2, state, **hp)
    np.testing.assert_allclose(p2, p1 - 0.1 * (np.sign(c) + 0.5 * p1))
    np.testing.assert_allclose(state["exp_avg"], 0.99 * np.array([0.003, -0.002, 0.0]) + 0.01 * g2)


PARTITION_SIZES = [70001, 3, 0, 16, 40000, 1, 17, 65536]


@pytest.mark.parametrize("name", NAMES)
def test_many_sizes_in_one_group_and_thread_counts(name):
    """Tensors of awkward sizes in one group, enough elements for the parallel path: every
    element matches the reference, and 1 or 2 threads give the same bits."""
    hp = R.RICH[name]
    rng = np.random.default_rng(99)
    init = [rng.uniform(-1, 1, n).astype(np.float32) for n in PARTITION_SIZES]
    grads = [[rng.normal(0, 1, n).astype(np.float32) for n in PARTITION_SIZES] for _ in range(5)]
    threads = genesis.get_num_threads()
    results = []
    try:
        for n_threads in (1, 2):
            genesis.set_num_threads(n_threads)
            params = [Parameter(x.copy()) for x in init]
            opt = getattr(genesis.optim, name)(params, **hp)
            for step_grads in grads:
                for p, g in zip(params, step_grads):
                    p.grad = g
                opt.step()
            results.append([p.data.copy() for p in params])
    finally:
        genesis.set_num_threads(threads)
    ref = R.ReferenceOptimizer(name, [(init, hp)])
    for step_grads in grads:
        ref.step([step_grads])
    for one, two, expected in zip(results[0], results[1], ref.params[0]):
        np.testing.assert_array_equal(one, two)
        np.testing.assert_allclose(one, expected, **TOL[np.float32])
