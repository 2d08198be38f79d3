"""genesis.nn.utils.clip_grad_norm_ / clip_grad_value_, and clip_grad_norm_'s two halves
get_total_norm / clip_grads_with_norm_ (docs/semantics.md#gradient-clipping): against
torch.nn.utils for torch parameters, against plain NumPy for genesis.nn.Parameter; non-finite
norms; a single tensor; no gradients; determinism of the reduction."""

import math

import numpy as np
import pytest

import genesis
from genesis.nn import Parameter
from genesis.nn.utils import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

try:
    import torch
except ImportError:  # pragma: no cover - the NumPy tests run without torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

NORMS = [1, 2.0, 3, math.inf]
NORM_IDS = ["l1", "l2", "l3", "inf"]
SHAPES = [(3, 4), (0,), (70000,), (5,), (1,)]


def _torch_params(dtype, seed=0, norm_type=2.0):
    """Parameters with gradients of several sizes (one empty, one past 64 Ki elements) and one
    parameter without a gradient; twin lists for torch and genesis. torch cannot take the inf
    norm of an empty tensor, so the empty gradient is left out there."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [s for s in SHAPES if s != (0,) or not math.isinf(float(norm_type))]
    grads = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    twins = []
    for _ in range(2):
        ps = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in shapes]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        ps.insert(2, torch.nn.Parameter(torch.zeros(4, dtype=dtype)))  # grad None
        twins.append(ps)
    return twins


def _tol(dtype):
    single = dtype is np.float32 or (torch is not None and dtype == torch.float32)
    return dict(rtol=1e-5, atol=1e-7) if single else dict(rtol=1e-12, atol=1e-15)


def _grads_of(ps):
    return [None if p.grad is None else p.grad.clone() for p in ps]


def _assert_grads_equal(a, b, **tol):
    for x, y in zip(a, b):
        if x is None or y is None:
            assert x is None and y is None
        else:
            torch.testing.assert_close(x, y, equal_nan=True, **(tol or dict(rtol=0, atol=0)))


# ================================================================================ torch
@needs_torch
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clipping", "not-clipping"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm_type", NORMS, ids=NORM_IDS)
def test_clip_grad_norm_matches_torch(norm_type, dtype, max_norm):
    dtype = getattr(torch, dtype)
    pt, pg = _torch_params(dtype, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(pt, max_norm, norm_type=norm_type)
    total = clip_grad_norm_(pg, max_norm, norm_type=norm_type)
    assert isinstance(total, torch.Tensor) and total.dim() == 0
    assert total.dtype == expected.dtype and total.device == expected.device
    torch.testing.assert_close(total, expected, **_tol(dtype))
    _assert_grads_equal([p.grad for p in pg], [p.grad for p in pt], **_tol(dtype))
    if max_norm == 1e6:  # no clipping: the gradients are left bit for bit
        _assert_grads_equal([p.grad for p in pg], [p.grad for p in _torch_params(dtype, norm_type=norm_type)[0]])
    else:
        clipped = torch.linalg.vector_norm(
            torch.cat([p.grad.flatten() for p in pg if p.grad is not None]).double(), norm_type
        )
        assert clipped.item() == pytest.approx(max_norm, rel=1e-5)


@needs_torch
@pytest.mark.parametrize("foreach", [None, True, False])
def test_clip_grad_norm_accepts_foreach(foreach):
    pt, pg = _torch_params(torch.float32, seed=1)
    expected = torch.nn.utils.clip_grad_norm_(pt, 1.0, foreach=foreach)
    total = clip_grad_norm_(pg, 1.0, foreach=foreach)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)
    _assert_grads_equal([p.grad for p in pg], [p.grad for p in pt], rtol=1e-5, atol=1e-7)


@needs_torch
@pytest.mark.parametrize("norm_type", [2.0, "inf", 2])
def test_norm_type_spellings(norm_type):
    pt, pg = _torch_params(torch.float64, seed=2, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(pt, 0.1, norm_type=norm_type)
    torch.testing.assert_close(clip_grad_norm_(pg, 0.1, norm_type=norm_type), expected)


def _poison(ps, where, value):
    g = ps[where].grad
    g.view(-1)[g.numel() // 2] = value


@needs_torch
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("norm_type", NORMS, ids=NORM_IDS)
def test_error_if_nonfinite_raises_and_leaves_grads(norm_type, bad):
    pt, pg = _torch_params(torch.float32, seed=3, norm_type=norm_type)
    for ps in (pt, pg):
        big = max(range(len(ps)), key=lambda i: ps[i].numel())
        _poison(ps, big, bad)  # the 70000-element gradient
    before = _grads_of(pg)
    with pytest.raises(RuntimeError) as expected:
        torch.nn.utils.clip_grad_norm_(pt, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as got:
        clip_grad_norm_(pg, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    assert "non-finite" in str(got.value)
    assert f"order {float(norm_type)}" in str(got.value)
    assert str(got.value) == str(expected.value)
    _assert_grads_equal([p.grad for p in pg], before)


@needs_torch
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("norm_type", NORMS, ids=NORM_IDS)
def test_nonfinite_without_error_behaves_as_torch(norm_type, bad):
    pt, pg = _torch_params(torch.float32, seed=4, norm_type=norm_type)
    for ps in (pt, pg):
        _poison(ps, 0, bad)
    expected = torch.nn.utils.clip_grad_norm_(pt, 1.0, norm_type=norm_type)
    total = clip_grad_norm_(pg, 1.0, norm_type=norm_type)
    assert not math.isfinite(expected.item())
    torch.testing.assert_close(total, expected, equal_nan=True)
    _assert_grads_equal([p.grad for p in pg], [p.grad for p in pt])


@needs_torch
def test_error_if_nonfinite_with_finite_grads_clips():
    pt, pg = _torch_params(torch.float64, seed=5)
    expected = torch.nn.utils.clip_grad_norm_(pt, 0.3, error_if_nonfinite=True)
    torch.testing.assert_close(clip_grad_norm_(pg, 0.3, error_if_nonfinite=True), expected)
    _assert_grads_equal([p.grad for p in pg], [p.grad for p in pt], rtol=1e-12, atol=1e-15)


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("clip_value", [0.1, 1.0, 100.0])
def test_clip_grad_value_matches_torch(clip_value, dtype):
    pt, pg = _torch_params(getattr(torch, dtype), seed=6)
    for ps in (pt, pg):
        _poison(ps, 0, math.nan)
        _poison(ps, 3, math.inf)
        _poison(ps, 4, -math.inf)
    assert torch.nn.utils.clip_grad_value_(pt, clip_value) is None
    assert clip_grad_value_(pg, clip_value) is None
    _assert_grads_equal([p.grad for p in pg], [p.grad for p in pt])
    finite = [p.grad for p in pg if p.grad is not None]
    assert all(bool((g[~g.isnan()].abs() <= clip_value).all()) for g in finite)


@needs_torch
def test_single_tensor():
    gen = torch.Generator().manual_seed(7)
    g = torch.randn(10, 3, generator=gen)
    a, b = torch.nn.Parameter(torch.zeros(10, 3)), torch.nn.Parameter(torch.zeros(10, 3))
    a.grad, b.grad = g.clone(), g.clone()
    expected = torch.nn.utils.clip_grad_norm_(a, 0.5)
    torch.testing.assert_close(clip_grad_norm_(b, 0.5), expected)
    torch.testing.assert_close(b.grad, a.grad)
    a.grad, b.grad = g.clone(), g.clone()
    torch.nn.utils.clip_grad_value_(a, 0.2)
    clip_grad_value_(b, 0.2)
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0)


@needs_torch
def test_no_grads_returns_zero_torch():
    ps = [torch.nn.Parameter(torch.ones(3)) for _ in range(2)]
    total = clip_grad_norm_(ps, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(ps, 1.0)
    assert isinstance(total, torch.Tensor) and total.dim() == 0 and total.item() == 0.0
    assert total.dtype == expected.dtype
    assert all(p.grad is None for p in ps)
    clip_grad_value_(ps, 1.0)
    assert all(p.grad is None for p in ps)


@needs_torch
def test_mixed_dtype_grads_match_torch():
    """float32 and float64 gradients clipped together: the same total (of the same dtype as
    torch's) and the same clipped gradients."""
    gen = torch.Generator().manual_seed(8)
    grads = [torch.randn(50, generator=gen, dtype=torch.float32), torch.randn(30, generator=gen, dtype=torch.float64)]
    twins = []
    for _ in range(2):
        ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        twins.append(ps)
    expected = torch.nn.utils.clip_grad_norm_(twins[0], 1.0)
    total = clip_grad_norm_(twins[1], 1.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(twins[0], twins[1]):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-7)
    assert total.dtype == expected.dtype


# ================================================================================ NumPy
def _numpy_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    ps = [Parameter(np.zeros(s, dtype=dtype)) for s in SHAPES]
    for p in ps:
        p.grad = rng.normal(0, 1, p.data.shape).astype(dtype)
    ps.insert(1, Parameter(np.zeros(2, dtype=dtype)))  # no grad
    return ps


def _numpy_norm(grads, norm_type):
    flat = np.concatenate([g.astype(np.float64).ravel() for g in grads])
    if math.isinf(norm_type):
        return float(np.max(np.abs(flat)))
    return float(np.sum(np.abs(flat) ** norm_type) ** (1.0 / norm_type))


@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clipping", "not-clipping"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("norm_type", NORMS, ids=NORM_IDS)
def test_clip_grad_norm_numpy(norm_type, dtype, max_norm):
    ps = _numpy_params(dtype)
    grads = [p.grad.copy() for p in ps if p.grad is not None]
    expected = _numpy_norm(grads, norm_type)
    total = clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    assert type(total) is np.float64
    # the norm is accumulated in double: close to the float64 norm even for float32 grads
    assert total == pytest.approx(expected, rel=1e-12)
    coef = min(max_norm / (expected + 1e-6), 1.0)
    for p, g in zip([p for p in ps if p.grad is not None], grads):
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad, g.astype(np.float64) * coef, **_tol(dtype))
    assert ps[1].grad is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_clip_grad_value_numpy(dtype):
    ps = _numpy_params(dtype, seed=1)
    ps[0].grad[0, 0] = np.nan
    ps[3].grad[5] = np.inf
    grads = [p.grad.copy() for p in ps if p.grad is not None]
    assert clip_grad_value_(ps, 0.25) is None
    for p, g in zip([p for p in ps if p.grad is not None], grads):
        np.testing.assert_array_equal(p.grad, np.clip(g, -0.25, 0.25))


def test_numpy_single_parameter_and_no_grads():
    p = Parameter(np.zeros(4))
    p.grad = np.array([3.0, 4.0, 0.0, 0.0])
    total = clip_grad_norm_(p, 1.0)
    assert type(total) is np.float64 and total == 5.0
    np.testing.assert_allclose(p.grad, [3.0 / (5 + 1e-6), 4.0 / (5 + 1e-6), 0, 0], rtol=1e-15)
    q = Parameter(np.zeros(4))
    total = clip_grad_norm_([q, Parameter(np.ones(2))], 1.0)
    assert type(total) is np.float64 and total == 0.0
    assert q.grad is None


@pytest.mark.parametrize("bad", [np.inf, np.nan], ids=["inf", "nan"])
def test_numpy_error_if_nonfinite(bad):
    ps = _numpy_params(np.float32, seed=2)
    ps[3].grad[123] = bad
    before = [None if p.grad is None else p.grad.copy() for p in ps]
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    for p, b in zip(ps, before):
        if b is None:
            assert p.grad is None
        else:
            np.testing.assert_array_equal(p.grad, b)
    # without the error: the total is non-finite and the gradients are scaled like torch
    # (inf -> every gradient times 0, the inf itself becoming NaN; NaN -> all NaN)
    total = clip_grad_norm_(ps, 1.0)
    assert type(total) is np.float64 and not np.isfinite(total)
    g = ps[3].grad
    assert np.isnan(g[123])
    if bad == np.inf:
        assert np.all(np.delete(g, 123) == 0)
    else:
        assert np.all(np.isnan(g))


# ================================================================================ determinism
def test_norm_is_deterministic_numpy():
    rng = np.random.default_rng(11)
    sizes = [200_003, 1, 70_001, 0, 65_536, 17]
    ps = [Parameter(np.zeros(n, np.float32)) for n in sizes]
    for p in ps:
        p.grad = rng.normal(0, 1, p.data.shape).astype(np.float32)
    before = [p.grad.copy() for p in ps]
    threads = genesis.get_num_threads()
    results = []
    try:
        for n in (threads, 1, 2, threads):
            genesis.set_num_threads(n)
            for norm_type in NORMS:
                for _ in range(3):
                    results.append((norm_type, clip_grad_norm_(ps, 1e9, norm_type=norm_type)))
    finally:
        genesis.set_num_threads(threads)
    for norm_type in NORMS:
        values = {float(v).hex() for t, v in results if t == norm_type}
        assert len(values) == 1, (norm_type, values)
    for p, b in zip(ps, before):  # max_norm 1e9: nothing was scaled
        np.testing.assert_array_equal(p.grad, b)
    # and clipping the same gradients twice gives the same bits
    clipped = []
    for _ in range(2):
        for p, b in zip(ps, before):
            p.grad = b.copy()
        clip_grad_norm_(ps, 0.5)
        clipped.append([p.grad.copy() for p in ps])
    for a, b in zip(*clipped):
        np.testing.assert_array_equal(a, b)


@needs_torch
def test_norm_is_deterministic_torch():
    pt, pg = _torch_params(torch.float32, seed=12)
    grads = _grads_of(pg)
    values = set()
    for _ in range(5):
        for p, g in zip(pg, grads):
            p.grad = None if g is None else g.clone()
        values.add(clip_grad_norm_(pg, 1e9).item().hex())
    assert len(values) == 1


@needs_torch
def test_float32_norm_that_overflows_is_nonfinite():
    """Finite float32 gradients whose norm does not fit in float32 (4 x 3e38): the returned
    float32 total is inf, so error_if_nonfinite=True must raise and leave the gradients alone,
    as torch does; a call must never return a non-finite norm after promising to raise."""
    ps = [torch.nn.Parameter(torch.zeros(4)) for _ in range(2)]
    for p in ps:
        p.grad = torch.full((4,), 3e38)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(ps[:1], 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(ps[1:], 1.0, error_if_nonfinite=True)
    torch.testing.assert_close(ps[1].grad, torch.full((4,), 3e38), rtol=0, atol=0)


@needs_torch
def test_float32_norm_that_overflows_scales_by_the_returned_total():
    """Without the error: the grads are scaled by min(max_norm / (total + 1e-6), 1) of the total
    that is returned (inf -> 0), as in torch."""
    pt, pg = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    pt.grad, pg.grad = torch.full((4,), 3e38), torch.full((4,), 3e38)
    expected = torch.nn.utils.clip_grad_norm_(pt, 1.0)
    total = clip_grad_norm_(pg, 1.0)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(pg.grad, pt.grad)


def test_generator_of_parameters():
    rng = np.random.default_rng(21)
    ps = [Parameter(np.zeros(5)) for _ in range(3)]
    for p in ps:
        p.grad = rng.normal(0, 1, 5)
    expected = _numpy_norm([p.grad for p in ps], 2.0)
    assert clip_grad_norm_((p for p in ps), 1e6) == pytest.approx(expected, rel=1e-13)
    clip_grad_value_((p for p in ps), 0.1)
    assert all(np.all(np.abs(p.grad) <= 0.1) for p in ps)


# ============================================================ the order of the sum (CPU = CUDA)
_LANES, _VALUES, _GROUP, _CHUNK = 2048, 512, 4, 1 << 16


def _norm_in_order(arrays, norm_type):
    """NOTE: [norm order] (include/genesis/rules/norm.h) in NumPy float64: per chunk of 65,536
    elements, lane l of 2048 combines offsets l, l + 2048, ... in order; groups of 4 lanes, in
    order; a halving tree over the 512 values; the chunks' partials, tensor by tensor, into
    value j mod 512 in order, and the tree. The CUDA kernels combine in this order too, so the
    CPU's bits pinned here are CUDA's (tests/cpp/test_cuda.cpp compares the two)."""
    if norm_type == math.inf:

        def combine(acc, c):
            return np.where((c > acc) | np.isnan(c), c, acc)

        contribution = np.abs
    else:
        combine = np.add
        if norm_type == 1:
            contribution = np.abs
        elif norm_type == 2:
            contribution = lambda a: np.abs(a) * np.abs(a)  # noqa: E731
        else:  # the C library's pow, as the core's std::pow
            contribution = np.vectorize(lambda a: math.pow(abs(a), norm_type), otypes=[np.float64])

    def tree(v):
        v = v.copy()
        half = len(v) // 2
        while half:
            v[:half] = combine(v[:half], v[half : 2 * half])
            half //= 2
        return v[0]

    partials = []
    for a in arrays:
        x = contribution(np.asarray(a, np.float64).reshape(-1))
        for lo in range(0, x.size, _CHUNK):
            chunk = x[lo : lo + _CHUNK]
            lanes = np.zeros(_LANES)
            for r in range(0, chunk.size, _LANES):
                part = chunk[r : r + _LANES]
                lanes[: part.size] = combine(lanes[: part.size], part)
            groups = lanes.reshape(_VALUES, _GROUP)
            values = groups[:, 0]
            for k in range(1, _GROUP):
                values = combine(values, groups[:, k])
            partials.append(tree(values))
    values = np.zeros(_VALUES)
    for j, p in enumerate(partials):
        values[j % _VALUES] = combine(values[j % _VALUES], p)
    total = tree(values)
    if norm_type == 2:
        return math.sqrt(total)
    if norm_type not in (1, math.inf):
        return math.pow(total, 1.0 / norm_type)
    return float(total)


@pytest.mark.parametrize("norm_type", NORMS, ids=NORM_IDS)
def test_the_norm_adds_in_the_documented_order(norm_type):
    """The core's float64 norm, bit for bit, against the order written out in NumPy: chunks of
    several tensors (one past a chunk, odd tails, an empty one) and more chunks than values
    (600 small tensors), so every stage of the order is exercised. Then an inf in one list (an
    infinite norm) and an inf and a NaN in another (NaN wins), for every norm."""
    rng = np.random.default_rng(21)
    sizes = [70_001, 1, 0, 2 * _LANES + 3, 5 * _LANES, 65_536] + [int(n) for n in rng.integers(1, 40, 600)]
    arrays = [(rng.normal(0, 1, n) * 10.0 ** rng.integers(-3, 3)).astype(np.float32) for n in sizes]
    got = genesis._C.BufferList(arrays, False).norm(norm_type)
    if norm_type == 3:
        # The core's cube root is portable_pow's (a few ulp from the C library's): the sum's
        # order is the same code as the other norms', pinned bit for bit by their cases.
        assert got == pytest.approx(_norm_in_order(arrays, norm_type), rel=4e-16)
    else:
        assert got.hex() == _norm_in_order(arrays, norm_type).hex()
    special = [a.copy() for a in arrays[:4]]
    special[0][70_000] = np.inf
    assert genesis._C.BufferList(special, False).norm(norm_type) == _norm_in_order(special, norm_type) == math.inf
    special[3][17] = np.nan
    assert math.isnan(genesis._C.BufferList(special, False).norm(norm_type))
    assert math.isnan(_norm_in_order(special, norm_type))


# ============================================== get_total_norm and clip_grads_with_norm_
@needs_torch
@pytest.mark.parametrize("dtypes", [["float32"], ["float64"], ["float32", "float64"], ["bfloat16", "float32"]])
@pytest.mark.parametrize("norm_type", NORMS + [0.5, 0.0, -1.0], ids=NORM_IDS + ["l0.5", "l0", "neg"])
def test_get_total_norm_matches_torch(norm_type, dtypes):
    """The norm of the tensors themselves (not of parameters' gradients), with torch's return
    dtype and shape; mixed dtypes, and the norm types genesis computes as torch does."""
    gen = torch.Generator().manual_seed(4)
    kinds = [getattr(torch, d) for d in dtypes]
    tensors = [
        torch.randn(s, generator=gen, dtype=torch.float64).to(kinds[i % len(kinds)]) for i, s in enumerate(SHAPES)
    ]
    if not norm_type > 0 or math.isinf(norm_type):  # torch refuses these norms of an empty tensor
        tensors = [t for t in tensors if t.numel()]
    expected = torch.nn.utils.get_total_norm(tensors, norm_type)
    total = get_total_norm(tensors, norm_type)
    assert isinstance(total, torch.Tensor) and total.dtype == expected.dtype and total.shape == expected.shape
    narrow = "bfloat16" in dtypes
    torch.testing.assert_close(total, expected, **(dict(rtol=1e-2, atol=0) if narrow else _tol(kinds[0])))


@needs_torch
def test_get_total_norm_of_one_tensor_and_of_none():
    t = torch.arange(5.0)
    torch.testing.assert_close(get_total_norm(t), torch.nn.utils.get_total_norm(t))
    assert torch.equal(get_total_norm([]), torch.nn.utils.get_total_norm([]))
    with pytest.raises(RuntimeError, match="non-finite"):
        get_total_norm([torch.tensor([1.0, math.inf])], error_if_nonfinite=True)


@needs_torch
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clipping", "not-clipping"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm_type", NORMS, ids=NORM_IDS)
def test_the_two_halves_are_clip_grad_norm(norm_type, dtype, max_norm):
    """get_total_norm of the gradients, then clip_grads_with_norm_ with it: the same norm and
    the same gradients as clip_grad_norm_, bit for bit, and torch's within the tolerance."""
    dtype = getattr(torch, dtype)
    pt, pg = _torch_params(dtype, norm_type=norm_type)
    pc = _torch_params(dtype, norm_type=norm_type)[1]
    total = get_total_norm([p.grad for p in pg if p.grad is not None], norm_type)
    clip_grads_with_norm_(pg, max_norm, total)
    assert torch.equal(total, clip_grad_norm_(pc, max_norm, norm_type=norm_type))
    _assert_grads_equal([p.grad for p in pg], [p.grad for p in pc])
    expected = torch.nn.utils.get_total_norm([p.grad for p in pt if p.grad is not None], norm_type)
    torch.nn.utils.clip_grads_with_norm_(pt, max_norm, expected)
    torch.testing.assert_close(total, expected, **_tol(dtype))
    _assert_grads_equal([p.grad for p in pg], [p.grad for p in pt], **_tol(dtype))


@needs_torch
@pytest.mark.parametrize("total", [2.5, np.float64(2.5), np.array([2.5]), "tensor", "float32 tensor"])
def test_clip_grads_with_norm_takes_any_one_number(total):
    pt, pg = _torch_params(torch.float64, seed=3)
    if total == "tensor":
        total = torch.tensor(2.5, dtype=torch.float64)
    elif total == "float32 tensor":
        total = torch.tensor([2.5])
    clip_grads_with_norm_(pg, 1.0, total)
    for p, q in zip(pg, pt):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad * (1.0 / (2.5 + 1e-6)), rtol=1e-12, atol=0)


@needs_torch
@pytest.mark.parametrize("bad", ["2.5", None, True, [2.5], (1.0, 2.0), "vector"])
def test_clip_grads_with_norm_refuses_a_bad_total_before_any_change(bad):
    _, pg = _torch_params(torch.float32, seed=5)
    before = _grads_of(pg)
    bad = torch.tensor([1.0, 2.0]) if bad == "vector" else bad
    with pytest.raises(TypeError, match="total_norm must be a number"):
        clip_grads_with_norm_(pg, 1.0, bad)
    _assert_grads_equal([p.grad for p in pg], before)


def test_the_two_halves_on_numpy_parameters():
    rng = np.random.default_rng(6)
    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    a, b = [Parameter(np.zeros(s, np.float32)) for s in SHAPES], [Parameter(np.zeros(s, np.float32)) for s in SHAPES]
    for p, q, g in zip(a, b, grads):
        p.grad, q.grad = g.copy(), g.copy()
    total = get_total_norm([p.grad for p in a])
    assert isinstance(total, np.float64)
    clip_grads_with_norm_(a, 0.5, total)
    assert total == clip_grad_norm_(b, 0.5)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.grad, q.grad)


@needs_torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, 0.5, 0.0, -math.inf])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_gradients_clip_as_torch(dtype, norm_type):
    """torch takes a complex gradient's norm over its values' magnitudes (the real view's norm
    only for p = 2) and scales the values: the same norm, dtype and gradients here, for the
    three functions, beside a real gradient; a conjugate view is clipped in place too (torch's
    foreach multiply refuses one, so its twin gets the resolved gradient)."""
    dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(6, 5, dtype=dtype, generator=gen) * 3, torch.randn(4, dtype=dtype.to_real(), generator=gen)]
    grads.append(torch.randn(7, dtype=dtype, generator=gen).conj())

    def copy(g):  # clone() resolves a conjugate view; this keeps it one, over fresh memory
        return g.conj().clone().conj() if g.is_conj() else g.clone()

    runs = []
    for lib, fn in ((torch.nn.utils, torch.nn.utils.clip_grad_norm_), (genesis.nn.utils, clip_grad_norm_)):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = copy(g) if lib is genesis.nn.utils else g.resolve_conj().clone()
        total = fn(params, 1.0, norm_type=norm_type)
        runs.append((total, [p.grad.resolve_conj() for p in params]))
        assert lib is torch.nn.utils or params[2].grad.is_conj()
    (torch_total, torch_grads), (total, clipped) = runs
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.complex64 else dict(rtol=1e-12, atol=1e-14)
    assert total.dtype == torch_total.dtype == dtype.to_real()
    torch.testing.assert_close(total, torch_total, **tol)
    for g, t in zip(clipped, torch_grads):
        torch.testing.assert_close(g, t, **tol)
    # The two halves: the same norm, and the same scaling by a given norm.
    torch.testing.assert_close(get_total_norm(grads, norm_type), torch_total, **tol)
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = copy(g)
    clip_grads_with_norm_(params, 1.0, torch_total)
    for p, t in zip(params, torch_grads):
        torch.testing.assert_close(p.grad.resolve_conj(), t, **tol)
