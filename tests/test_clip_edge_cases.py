"""clip_grad_norm_ / clip_grad_value_ at the edges (docs/semantics.md#gradient-clipping; torch
2.13 where the docs are silent): NumPy gradients genesis must not read or write (non-native byte order, read-only
memory), the clip values and norm types torch accepts, gradients of mixed dtypes whose
per-gradient norm overflows, and an empty parameter list."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import genesis
import genesis.nn.utils as genesis_utils
from genesis.nn import Parameter
from genesis.nn.utils import clip_grad_norm_, clip_grad_value_

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from no_torch import NO_TORCH_ENV  # noqa: E402

CLIPS = [
    lambda ps: clip_grad_norm_(ps, 1.0),
    lambda ps: clip_grad_norm_(ps, 1e9),  # would not even scale
    lambda ps: clip_grad_value_(ps, 0.5),
]
CLIP_IDS = ["norm", "norm-no-scaling", "value"]


def _numpy_params(*grads):
    ps = []
    for g in grads:
        p = Parameter(np.zeros(g.shape, dtype=g.dtype.newbyteorder("=")))
        p.grad = g
        ps.append(p)
    return ps


# ------------------------------------------------------------------ memory genesis must not use
@pytest.mark.parametrize("clip", CLIPS, ids=CLIP_IDS)
@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2"])
def test_non_native_byte_order_is_rejected_before_anything_changes(dtype, clip):
    native = np.array([3.0, -4.0, 12.0])
    swapped = np.array([30.0, -40.0], dtype=dtype)
    ps = _numpy_params(native.copy(), swapped.copy())
    with pytest.raises(TypeError, match=r"gradient 1 has non-native byte order .*astype"):
        clip(ps)
    np.testing.assert_array_equal(ps[0].grad, native)
    assert ps[1].grad.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(ps[1].grad, swapped)


def test_big_endian_norm_was_wrong_and_native_copy_is_right():
    """The failure being prevented: the bytes of a '>f4' array read as native floats."""
    g = np.array([3.0, 4.0], dtype=">f4")
    ps = _numpy_params(g.astype("=f4"))
    assert clip_grad_norm_(ps, 1e9) == pytest.approx(5.0, rel=1e-7)


def _read_only_grads():
    frozen = bytes(np.array([3.0, -4.0, 12.0]).tobytes())
    flagged = np.array([1.0, 2.0], dtype=np.float32)
    flagged.setflags(write=False)
    return frozen, [np.frombuffer(frozen, dtype=np.float64), flagged]


@pytest.mark.parametrize("clip", CLIPS, ids=CLIP_IDS)
@pytest.mark.parametrize("which", [0, 1], ids=["over-bytes", "write-flag-off"])
def test_read_only_gradients_are_rejected_before_anything_changes(which, clip):
    frozen, read_only = _read_only_grads()
    writable = np.array([7.0, -9.0])
    ps = _numpy_params(writable.copy(), read_only[which])
    with pytest.raises(ValueError, match="gradient 1 is a read-only array"):
        clip(ps)
    np.testing.assert_array_equal(ps[0].grad, writable)
    assert frozen == np.array([3.0, -4.0, 12.0]).tobytes()
    assert not ps[1].grad.flags.writeable


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_read_only_gradients_have_a_norm(strided):
    """Taking a norm writes nothing: get_total_norm takes read-only arrays, contiguous or (through
    a copy) strided, and leaves them as they are."""
    values = np.arange(16, dtype=np.float32)
    values.flags.writeable = False
    grad = values[::2] if strided else values
    want = float(np.linalg.norm(grad.astype(np.float64)))
    assert float(genesis_utils.get_total_norm([grad])) == pytest.approx(want, rel=1e-12)
    assert not grad.flags.writeable


# ------------------------------------------------------------------ clip values torch accepts
def _torch_twins(dtype, values=(-2.0, 0.5, 3.0, math.nan, math.inf, -math.inf, -0.0, 0.0)):
    twins = []
    for _ in range(2):
        p = torch.nn.Parameter(torch.zeros(len(values), dtype=dtype))
        p.grad = torch.tensor(values, dtype=dtype)
        q = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
        q.grad = torch.tensor([10.0, -10.0, 0.25], dtype=dtype)
        twins.append([p, q])
    return twins


def _same_bits(a, b):
    """Equal values, NaN where NaN, and the same sign of zero."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    numbers = ~torch.isnan(b)
    assert torch.equal(torch.signbit(a[numbers]), torch.signbit(b[numbers]))


@pytest.mark.parametrize("clip_value", [-1.0, -0.0, math.nan, -math.inf, math.inf, 0.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_clip_grad_value_matches_torch_for_any_clip_value(dtype, clip_value):
    ref, ps = _torch_twins(dtype)
    torch.nn.utils.clip_grad_value_(ref, clip_value)
    assert clip_grad_value_(ps, clip_value) is None
    for p, r in zip(ps, ref):
        _same_bits(p.grad, r.grad)


@pytest.mark.parametrize("clip_value", [-1.0, math.nan, -math.inf, 0.5])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_clip_grad_value_numpy_matches_torch_for_any_clip_value(dtype, clip_value):
    ref, _ = _torch_twins(torch.float64)
    ps = _numpy_params(*[r.grad.numpy().astype(dtype) for r in ref])
    expected = [torch.from_numpy(p.grad.copy()) for p in ps]
    for e in expected:
        e.clamp_(min=-clip_value, max=clip_value)
    clip_grad_value_(ps, clip_value)
    for p, e in zip(ps, expected):
        _same_bits(torch.from_numpy(p.grad), e)


# ------------------------------------------------------------------ norm types torch accepts
ODD_NORMS = [0, 0.0, 0.5, -1, -2.5, -math.inf, math.nan, "-inf"]


def _norm_twins(dtype):
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(s, generator=gen, dtype=dtype) for s in [(3, 4), (70000,), (5,)]]
    grads[2][1] = 0.0  # a zero element: negative norms of this gradient are 0
    grads.append(torch.zeros(6, dtype=dtype))  # an all-zero gradient: not counted by norm 0
    twins = []
    for _ in range(2):
        ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        twins.append(ps)
    return twins


@pytest.mark.parametrize("norm_type", ODD_NORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_norm_types_torch_accepts_match_torch(dtype, norm_type):
    ref, ps = _norm_twins(dtype)
    expected = torch.nn.utils.clip_grad_norm_(ref, 0.5, norm_type=norm_type)
    total = clip_grad_norm_(ps, 0.5, norm_type=norm_type)
    assert isinstance(total, torch.Tensor) and total.dtype == expected.dtype
    tol = dict(rtol=1e-5, atol=0) if dtype == torch.float32 else dict(rtol=1e-12, atol=0)
    torch.testing.assert_close(total, expected, equal_nan=True, **tol)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p.grad, r.grad, equal_nan=True, **tol)


@pytest.mark.parametrize("norm_type", ODD_NORMS)
def test_norm_types_torch_accepts_numpy(norm_type):
    ref, _ = _norm_twins(torch.float64)
    ps = _numpy_params(*[r.grad.numpy().copy() for r in ref])
    expected = torch.nn.utils.clip_grad_norm_(ref, 0.5, norm_type=norm_type)
    total = clip_grad_norm_(ps, 0.5, norm_type=norm_type)
    assert type(total) is np.float64
    np.testing.assert_allclose(total, expected.item(), rtol=1e-12)
    for p, r in zip(ps, ref):
        np.testing.assert_allclose(p.grad, r.grad.numpy(), rtol=1e-12)


def test_norm_zero_counts_gradients_with_a_non_zero_element():
    ps = _numpy_params(np.array([0.0, 2.0, 3.0]), np.zeros(4), np.array([-1.0]))
    assert clip_grad_norm_(ps, 1e9, norm_type=0) == 2.0


@pytest.mark.parametrize("norm_type", [-1.0, -math.inf])
def test_negative_norm_of_an_empty_gradient_raises_like_torch(norm_type):
    ref, ps = _norm_twins(torch.float32)
    for group in (ref, ps):
        empty = torch.nn.Parameter(torch.zeros(0))
        empty.grad = torch.zeros(0)
        group.insert(0, empty)
    before = [p.grad.clone() for p in ps]
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(ref, 0.5, norm_type=norm_type)
    with pytest.raises(RuntimeError, match="gradient 0 is undefined: it is empty"):
        clip_grad_norm_(ps, 0.5, norm_type=norm_type)
    for p, b in zip(ps, before):
        torch.testing.assert_close(p.grad, b, rtol=0, atol=0)


@pytest.mark.parametrize("norm_type", ["fro", None])
def test_norm_types_torch_refuses_are_refused(norm_type):
    ref, ps = _norm_twins(torch.float32)
    with pytest.raises((TypeError, ValueError)) as expected:
        torch.nn.utils.clip_grad_norm_(ref, 0.5, norm_type=norm_type)
    with pytest.raises(expected.type):
        clip_grad_norm_(ps, 0.5, norm_type=norm_type)


# ------------------------------------------------------------------ mixed dtypes that overflow
def _mixed(grads):
    twins = []
    for _ in range(2):
        ps = []
        for values, dtype in grads:
            p = torch.nn.Parameter(torch.zeros(len(values), dtype=dtype))
            p.grad = torch.tensor(values, dtype=dtype)
            ps.append(p)
        twins.append(ps)
    return twins


MIXED_OVERFLOW = {
    # torch sums the bfloat16 gradient's |x|**p in float32, which overflows: its total is inf
    "bf16-norm-overflows": [([2e38, 2e38], torch.bfloat16), ([1.0, 2.0], torch.float64)],
    "bf16-sum-overflows": [([1e20, 1e20], torch.bfloat16), ([1.0, 2.0], torch.float64)],
    # each bfloat16 norm fits; together beyond bfloat16 but within float64: finite
    "bf16-norms-fit": [([2e38], torch.bfloat16), ([2e38], torch.bfloat16), ([1.0], torch.float64)],
    "f16-norm-overflows": [([5e4, 5e4], torch.float16), ([3.0], torch.float32)],
    "f32-norm-overflows": [([3e38, 3e38], torch.float32), ([1.0], torch.float64)],
    "bf16-and-f32-fit": [([3e38], torch.bfloat16), ([3e38], torch.float32)],
}


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("case", list(MIXED_OVERFLOW))
def test_mixed_dtype_norm_overflow_matches_torch(case, norm_type):
    ref, ps = _mixed(MIXED_OVERFLOW[case])
    expected = torch.nn.utils.clip_grad_norm_(ref, 1.0, norm_type=norm_type)
    total = clip_grad_norm_(ps, 1.0, norm_type=norm_type)
    assert total.dtype == expected.dtype
    assert math.isfinite(total.item()) == math.isfinite(expected.item())
    torch.testing.assert_close(total, expected, rtol=1e-2, atol=0)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-2, atol=0, equal_nan=True)
    if not math.isfinite(expected.item()):
        with pytest.raises(RuntimeError, match="non-finite"):
            clip_grad_norm_(_mixed(MIXED_OVERFLOW[case])[1], 1.0, norm_type=norm_type, error_if_nonfinite=True)


SINGLE_DTYPE = {
    # torch sums float32 squares in float32: [1e20, 1e20] has norm 1.4e20 but gives inf ...
    "two-gradients": [([1e20, 1e20], torch.float32), ([1.0], torch.float32)],
    "one-gradient": [([1e20, 1e20], torch.float32)],
    "norms-of-one-element": [([1e20], torch.float32), ([1e20], torch.float32)],
    # ... but returns a single element as it is
    "one-element": [([1e30], torch.float32)],
    "bfloat16": [([1e20], torch.bfloat16), ([3.0, 4.0], torch.bfloat16)],
    "float64": [([1e200], torch.float64), ([1e200], torch.float64)],
}


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 4.0])
@pytest.mark.parametrize("case", list(SINGLE_DTYPE))
def test_one_dtype_sum_overflow_as_in_torch(case, norm_type):
    ref, ps = _mixed(SINGLE_DTYPE[case])
    expected = torch.nn.utils.clip_grad_norm_(ref, 1.0, norm_type=norm_type)
    total = clip_grad_norm_(ps, 1.0, norm_type=norm_type)
    assert math.isfinite(total.item()) == math.isfinite(expected.item())
    torch.testing.assert_close(total, expected, rtol=1e-2, atol=0)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-2, atol=0, equal_nan=True)


def test_numpy_gradients_keep_the_double_precision_norm():
    """NumPy gradients have no torch to agree with: the norm of everything, in double."""
    ps = _numpy_params(np.array([5e4, 5e4], dtype=np.float16), np.array([1e20, 1e20], dtype=np.float32))
    assert clip_grad_norm_(ps, 1e30) == pytest.approx(math.hypot(1e20, 1e20), rel=1e-6)


# ------------------------------------------------------------------ no parameters
def test_empty_parameter_list_returns_torchs_zero():
    expected = torch.nn.utils.clip_grad_norm_([], 1.0)
    total = clip_grad_norm_([], 1.0)
    assert isinstance(total, torch.Tensor)
    assert total.dtype == expected.dtype and total.device == expected.device
    assert total.item() == expected.item() == 0.0
    assert clip_grad_value_([], 1.0) is None


def test_empty_parameter_list_without_torch_returns_numpy_zero():
    code = (
        "import sys, numpy as np\n"
        "from genesis.nn.utils import clip_grad_norm_\n"
        "total = clip_grad_norm_([], 1.0)\n"
        "assert type(total) is np.float64 and total == 0.0, type(total)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=NO_TORCH_ENV)


# ------------------------------------------------------------------ strided gradients
def _strided_twins(device="cpu"):
    """Two lists of parameters with the same gradients: a view with gaps, a transposed (dense)
    one, a 2-D view with gaps in both dimensions, a float64 view with gaps and a contiguous one."""
    lists = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(0)
        sources = [
            torch.randn(8, generator=gen)[::2],
            torch.randn(5, 3, generator=gen).t(),
            torch.randn(6, 7, generator=gen)[::2, 1:7:2],
            torch.randn(9, generator=gen, dtype=torch.float64)[::3],
            torch.randn(5, generator=gen),
        ]
        ps = []
        for g in sources:
            p = torch.nn.Parameter(torch.zeros(g.shape, dtype=g.dtype, device=device))
            p.grad = g.to(device)
            ps.append(p)
        lists.append(ps)
    return lists


STRIDED_OPS = {
    "clip_grad_norm_": lambda lib, ps: lib.clip_grad_norm_(ps, 0.5),
    "clip_grad_norm_ inf": lambda lib, ps: lib.clip_grad_norm_(ps, 0.5, norm_type=math.inf),
    "clip_grad_value_": lambda lib, ps: lib.clip_grad_value_(ps, 0.3),
    "get_total_norm": lambda lib, ps: lib.get_total_norm([p.grad for p in ps]),
    "clip_grads_with_norm_": lambda lib, ps: lib.clip_grads_with_norm_(ps, 0.5, torch.tensor(4.0)),
}


@pytest.mark.parametrize("op", sorted(STRIDED_OPS))
def test_strided_gradients_are_clipped_as_torch_clips_them(op):
    """Gradients that are views with gaps (``x[::2]``), which torch's clip functions take: genesis
    clips contiguous copies and writes them back, leaving the gradients' strides as they were."""
    ref, ps = _strided_twins()
    strides = [p.grad.stride() for p in ps]
    want = STRIDED_OPS[op](torch.nn.utils, ref)
    got = STRIDED_OPS[op](genesis_utils, ps)
    if want is None:
        assert got is None
    else:
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-6, atol=0)
    assert [p.grad.stride() for p in ps] == strides


def test_strided_numpy_gradients_are_clipped():
    """A NumPy gradient that is a view with gaps: clipped through a copy, written back."""
    values = np.arange(16, dtype=np.float32)
    p = Parameter(np.zeros(8, dtype=np.float32))
    p.grad = values[::2]
    total = clip_grad_norm_([p], 1.0)
    assert total == pytest.approx(np.linalg.norm(np.arange(16.0)[::2]), rel=1e-12)
    np.testing.assert_allclose(values[::2], np.arange(16.0)[::2] / total, rtol=1e-6)
    np.testing.assert_array_equal(values[1::2], np.arange(16.0)[1::2])  # the gaps untouched


@pytest.mark.parametrize("clip", CLIPS, ids=CLIP_IDS)
def test_expanded_gradient_is_refused_before_anything_changes(clip):
    """A gradient whose elements share memory (an expanded tensor) cannot be written in place
    (torch raises too): refused, naming it, before any gradient changes."""
    ps = [torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))]
    ps[0].grad = torch.full((4,), 3.0)
    ps[1].grad = torch.full((1,), 2.0).expand(4)
    if clip is CLIPS[1]:  # no scaling: nothing is written, so torch's way gives the norm
        assert float(clip(ps)) == pytest.approx(float(torch.tensor([3.0, 2.0]).repeat(4).norm()))
        return
    with pytest.raises(ValueError, match="gradient 1 is an expanded tensor"):
        clip(ps)
    assert torch.equal(ps[0].grad, torch.full((4,), 3.0))


def test_interleaved_strided_gradient_is_clipped_as_torch_clips_it():
    """Strides that interleave the elements of a view with gaps (2 x 3 elements at strides (3,
    2): offsets 0, 2, 4, 3, 5, 7): no element shares memory with another, and torch writes such a
    view in place; so does the clip, through its copy."""
    twins = []
    for _ in range(2):
        p = torch.nn.Parameter(torch.zeros(2, 3))
        p.grad = torch.arange(1.0, 9.0).as_strided((2, 3), (3, 2))
        twins.append([p])
    want = torch.nn.utils.clip_grad_norm_(twins[0], 1.0)
    got = genesis_utils.clip_grad_norm_(twins[1], 1.0)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    torch.testing.assert_close(twins[1][0].grad, twins[0][0].grad, rtol=1e-6, atol=0)
    torch.testing.assert_close(twins[1][0].grad._base, twins[0][0].grad._base, rtol=1e-6, atol=0)


def test_deferred_clip_and_grad_scaler_take_strided_gradients():
    """The optimizer's deferred clip and genesis's GradScaler on strided gradients, against
    torch's clip, GradScaler and AdamW, over several steps."""
    results = []
    for lib in ("torch", "genesis"):
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(6))]
        opt = (torch.optim if lib == "torch" else genesis.optim).AdamW(ps, lr=0.1)
        kw = dict(init_scale=4.0, growth_interval=2)
        scaler = torch.amp.GradScaler("cpu", **kw) if lib == "torch" else genesis.amp.GradScaler(**kw)
        norms = []
        for _ in range(6):
            scaler.scale(torch.ones(()))
            ps[0].grad = torch.randn(8)[::2] * 4
            ps[1].grad = torch.randn(6) * 4
            scaler.unscale_(opt)
            clip = torch.nn.utils.clip_grad_norm_(ps, 1.0) if lib == "torch" else opt.clip_grad_norm_(1.0)
            norms.append(float(clip))
            scaler.step(opt)
            scaler.update()
        results.append((norms, [p.detach() for p in ps]))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("norm_type", [0, -1.0, -math.inf, math.nan, 2.0])
def test_cuda_norm_types_torch_accepts(norm_type):
    ref, ps = _norm_twins(torch.float32)
    for group in (ref, ps):
        for p in group:
            p.data, p.grad = p.data.cuda(), p.grad.cuda()
    expected = torch.nn.utils.clip_grad_norm_(ref, 0.5, norm_type=norm_type)
    total = clip_grad_norm_(ps, 0.5, norm_type=norm_type)
    assert total.device == expected.device and total.dtype == expected.dtype
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0, equal_nan=True)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-5, atol=0, equal_nan=True)


@pytest.mark.cuda
@pytest.mark.parametrize("clip_value", [-1.0, math.nan, 0.5])
def test_cuda_clip_grad_value_for_any_clip_value(clip_value):
    ref, ps = _torch_twins(torch.float32)
    for group in (ref, ps):
        for p in group:
            p.data, p.grad = p.data.cuda(), p.grad.cuda()
    torch.nn.utils.clip_grad_value_(ref, clip_value)
    clip_grad_value_(ps, clip_value)
    for p, r in zip(ps, ref):
        _same_bits(p.grad.cpu(), r.grad.cpu())


@pytest.mark.cuda
@pytest.mark.parametrize("op", sorted(STRIDED_OPS))
def test_cuda_strided_gradients_are_clipped_as_torch_clips_them(op):
    ref, ps = _strided_twins("cuda")
    want = STRIDED_OPS[op](torch.nn.utils, ref)
    got = STRIDED_OPS[op](genesis_utils, ps)
    if want is not None:
        torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-6, atol=0)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-6, atol=0)
