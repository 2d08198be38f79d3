"""The CUDA backend through the Python API (skipped without a GPU; see conftest.py).

Against genesis's own CPU path the CUDA kernels give the same bits (both are compiled without
floating-point contraction): parameters, every state array, master weights and step counters
are compared with torch.equal. Against torch's fused CUDA optimizers, which contract and round
differently, within float32 rounding. Also: sizes that cross chunk and table boundaries, empty
and unaligned tensors, many tensors, a tensor of more than 2^31 elements, the clip reductions
(against torch, deterministic), no host synchronisation in step(), torch's GradScaler driving
the fused update (SGD's first step included), state_dicts moving between CPU and CUDA, and
groups on a second GPU while the first is current."""

import os
import sys

import pytest

torch = pytest.importorskip("torch")
import genesis  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

pytestmark = pytest.mark.cuda

SIZES = [1, 3, 0, 4097, 65537, 3 * 65536 + 5]


def _params(device, dtype=torch.float32, sizes=SIZES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=gen).to(device=device, dtype=dtype)) for n in sizes]


def _set_grads(groups, seed):
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(p.shape, generator=gen) for p in groups[0]]
    for params in groups:
        for p, g in zip(params, grads):
            p.grad = g.to(device=p.device, dtype=p.dtype)


def _assert_same_bits(gpu_opt, gpu, cpu_opt, cpu):
    """Every parameter and every state entry (step counters included) equal, bit for bit."""
    for i, (a, b) in enumerate(zip(gpu, cpu)):
        assert torch.equal(a.detach().cpu(), b.detach()), f"parameter {i} differs"
        sa, sb = gpu_opt.state[a], cpu_opt.state[b]
        assert set(sa) == set(sb), f"state keys of parameter {i}: {set(sa)} vs {set(sb)}"
        for name in sb:
            va, vb = sa[name], sb[name]
            assert torch.equal(va.cpu(), vb), f"state {name!r} of parameter {i} differs"


CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01), True),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3), True),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), True),
    ("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True), True),
    ("AdamW", dict(lr=1e-2, maximize=True), True),
    ("RMSprop", dict(lr=1e-2, centered=True, momentum=0.9), False),
]


@pytest.mark.parametrize("name,kw,torch_fused", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_same_bits_as_the_cpu_path_and_close_to_torch_fused(name, kw, torch_fused):
    gpu = _params("cuda")
    ref = _params("cuda")
    cpu = _params("cpu")
    opt = getattr(genesis.optim, name)([{"params": gpu[:2], "lr": kw["lr"] / 2}, {"params": gpu[2:]}], **kw)
    extra = {"fused": True} if torch_fused else {}
    topt = R.torch_class(name)([{"params": ref[:2], "lr": kw["lr"] / 2}, {"params": ref[2:]}], **kw, **extra)
    copt = getattr(genesis.optim, name)([{"params": cpu[:2], "lr": kw["lr"] / 2}, {"params": cpu[2:]}], **kw)
    for step in range(30):
        _set_grads([gpu, ref, cpu], step)
        opt.step()
        topt.step()
        copt.step()
    _assert_same_bits(opt, gpu, copt, cpu)
    # From the fourth step on, both backends' groups went through the one-call step and its
    # guard (NOTE: [one-call step], [batched tensor facts] in csrc/python/bindings.cpp).
    for o in (opt, copt):
        assert [c.plan.path_counts() for c in o._plans] == [{"one_call": 29, "batched": 27}] * 2
    for a, b in zip(gpu, ref):
        # torch's CUDA kernels contract into FMAs (genesis does not: it keeps the CPU core's
        # bits), so an element that cancels to near zero is off by about an ulp of the largest
        # values (seen: 1.3e-6 on an element of 3e-3, SGD momentum after 30 steps, H200).
        largest = b.detach().abs().max().item() if b.numel() else 0.0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * max(1.0, largest))
    if name != "SGD":
        assert opt.state[gpu[0]]["step"].is_cuda
        assert opt.state[gpu[2]]["step"].item() == 30  # the empty tensor counts its steps too
    else:
        assert opt.state[gpu[0]]["momentum_buffer"].is_cuda


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", R.NAMES)
def test_every_rule_matches_its_cpu_path_and_torch(name, dtype):
    """Every element-wise rule with every option on, on CUDA: the same numbers as genesis on the
    CPU (and torch on CUDA where torch has the rule), its state and per-tensor scalars on the
    device, and a state_dict that a CPU optimizer continues from identically."""
    hp = R.RICH[name]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    gpu, cpu, ref = _params("cuda", dtype), _params("cpu", dtype), _params("cuda", dtype)
    groups = lambda ps: [{"params": ps[:2], "lr": hp["lr"] / 2}, {"params": ps[2:]}]  # noqa: E731
    opt = getattr(genesis.optim, name)(groups(gpu), **hp)
    copt = getattr(genesis.optim, name)(groups(cpu), **hp)
    # torch's ASGD on CUDA defaults to its foreach form, p - eta * (g + wd * p + lambd * p), not
    # the single-tensor form it runs on the CPU, p * (1 - lambd * eta) - eta * (g + wd * p): the
    # two were 2e-9 apart in float64 after 25 steps (H200, torch 2.11). genesis computes the
    # CPU form on both backends, so torch is asked for that form here.
    extra = {"foreach": False} if name == "ASGD" else {}
    topt = R.torch_class(name)(groups(ref), **hp, **extra) if hasattr(torch.optim, name) else None
    for step in range(25):
        _set_grads([gpu, cpu, ref], step)
        opt.step()
        copt.step()
        if topt is not None:
            topt.step()
    _assert_same_bits(opt, gpu, copt, cpu)
    if topt is not None:
        for a, b in zip(gpu, ref):
            torch.testing.assert_close(a, b, **tol)
    for key, value in opt.state[gpu[0]].items():
        assert value.is_cuda, key
        torch.testing.assert_close(value.cpu(), copt.state[cpu[0]][key], **tol)
    # The CUDA state continues on the CPU exactly like the CPU run.
    moved = [torch.nn.Parameter(p.detach().cpu()) for p in gpu]
    resumed = getattr(genesis.optim, name)(groups(moved), **hp)
    resumed.load_state_dict(opt.state_dict())
    for step in range(25, 30):
        _set_grads([moved, cpu], step)
        resumed.step()
        copt.step()
    for a, c in zip(moved, cpu):
        torch.testing.assert_close(a, c, **tol)


def test_unaligned_views_and_many_tensors():
    base = torch.randn(4097 * 120 + 1, device="cuda")
    views = [base[1 + i * 4097 : 1 + (i + 1) * 4097] for i in range(120)]  # none 16-byte aligned
    params = [torch.nn.Parameter(v) for v in views]  # shares base's storage, offset kept
    ref = [torch.nn.Parameter(v.clone()) for v in views]
    cpu = [torch.nn.Parameter(v.detach().cpu()) for v in views]
    opt, topt = genesis.optim.AdamW(params, lr=1e-2), torch.optim.AdamW(ref, lr=1e-2, fused=True)
    copt = genesis.optim.AdamW(cpu, lr=1e-2)
    for step in range(5):
        _set_grads([params, ref, cpu], step)
        opt.step()
        topt.step()
        copt.step()
    _assert_same_bits(opt, params, copt, cpu)
    for a, b in zip(params, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_more_tensors_than_a_table_holds():
    sizes = [1 + (i * 37) % 3000 for i in range(300)]
    gpu, cpu = _params("cuda", sizes=sizes), _params("cpu", sizes=sizes)
    opt, copt = genesis.optim.Adam(gpu, lr=1e-2), genesis.optim.Adam(cpu, lr=1e-2)
    for step in range(3):
        _set_grads([gpu, cpu], step)
        opt.step()
        copt.step()
    _assert_same_bits(opt, gpu, copt, cpu)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_parameters_same_bits_as_the_cpu_path(dtype):
    gpu, cpu = _params("cuda", dtype), _params("cpu", dtype)
    opt = genesis.optim.AdamW(gpu, lr=1e-2, master_weights=True)
    copt = genesis.optim.AdamW(cpu, lr=1e-2, master_weights=True)
    for step in range(10):
        _set_grads([gpu, cpu], step)
        opt.step()
        copt.step()
    _assert_same_bits(opt, gpu, copt, cpu)


def test_bfloat16_stochastic_rounding_same_bits_as_the_cpu_path():
    gpu, cpu = _params("cuda", torch.bfloat16), _params("cpu", torch.bfloat16)
    kw = dict(lr=1e-2, state_dtype="bfloat16", stochastic_rounding=True, seed=3)
    opt, copt = genesis.optim.AdamW(gpu, **kw), genesis.optim.AdamW(cpu, **kw)
    for step in range(5):
        _set_grads([gpu, cpu], step)
        opt.step()
        copt.step()
    _assert_same_bits(opt, gpu, copt, cpu)


def test_step_does_not_synchronize():
    params = _params("cuda")
    opt = genesis.optim.AdamW(params, lr=1e-3)
    sgd_params = _params("cuda", seed=1)
    sgd = genesis.optim.SGD(sgd_params, lr=1e-3, momentum=0.9)
    _set_grads([params], 0)
    _set_grads([sgd_params], 0)
    opt.step()  # the first step creates state (allocations may sync)
    sgd.step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step()
            sgd.step()
        genesis.nn.utils.clip_grad_norm_(params, 1.0)
        genesis.nn.utils.clip_grad_value_(params, 1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, float("inf")])
def test_clip_grad_norm_matches_torch_and_is_deterministic(norm_type):
    a, b = _params("cuda"), _params("cuda")
    _set_grads([a, b], 7)
    totals = []
    for _ in range(5):
        grads = [p.grad.clone() for p in a]
        totals.append(genesis.nn.utils.clip_grad_norm_(a, 1.0, norm_type=norm_type))
        for p, g in zip(a, grads):
            p.grad = g
    # torch's CUDA foreach norm refuses an empty tensor's inf norm (no identity for max); an
    # empty gradient adds nothing to any norm and has nothing to scale, so torch gets the others.
    expected = torch.nn.utils.clip_grad_norm_([p for p in b if p.numel()], 1.0, norm_type=norm_type, foreach=True)
    assert all(torch.equal(t, totals[0]) for t in totals)
    torch.testing.assert_close(totals[0], expected, rtol=1e-5, atol=0)
    genesis.nn.utils.clip_grad_norm_(a, 1.0, norm_type=norm_type)
    for p, q in zip(a, b):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_get_total_norm_and_clip_grads_with_norm_on_the_device(norm_type):
    """clip_grad_norm_'s two halves on CUDA gradients: the norm stays a device tensor (no host
    sync), equal to clip_grad_norm_'s, and clipping with it gives clip_grad_norm_'s gradients."""
    a, b = _params("cuda"), _params("cuda")
    _set_grads([a, b], 11)
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = genesis.nn.utils.get_total_norm([p.grad for p in a if p.grad is not None], norm_type)
        genesis.nn.utils.clip_grads_with_norm_(a, 0.5, total)
        expected = genesis.nn.utils.clip_grad_norm_(b, 0.5, norm_type=norm_type)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert total.device == expected.device and torch.equal(total, expected)
    for p, q in zip(a, b):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)


def test_clip_grad_norm_of_mixed_dtypes():
    a = _params("cuda") + _params("cuda", torch.bfloat16, seed=1)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    _set_grads([a[:6], b[:6]], 1)
    _set_grads([a[6:], b[6:]], 2)
    total = genesis.nn.utils.clip_grad_norm_(a, 1.0)
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.double()) for p in b]))
    torch.testing.assert_close(total.double(), expected, rtol=1e-5, atol=0)


def test_torch_grad_scaler_skips_inf_steps_on_the_device():
    params = _params("cuda")
    opt = genesis.optim.AdamW(params, lr=1e-3, fused=True)  # fused: torch's scaler hands it the scale
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8)
    _set_grads([params], 0)
    scaler.scale(torch.ones((), device="cuda"))
    scaler.step(opt)
    scaler.update()
    before = [p.detach().clone() for p in params]
    step_before = opt.state[params[0]]["step"].clone()
    params[1].grad[0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(params, before))
    assert torch.equal(opt.state[params[0]]["step"], step_before)


def test_sgd_first_step_skipped_by_grad_scaler_leaves_the_next_one_first():
    """With dampening, the first step sets b = g and later ones b = mu*b + (1 - dampening)*g.
    A first step that GradScaler skips on the device must leave the next step first (the host
    cannot know it was skipped without a sync)."""
    gpu, cpu = _params("cuda"), _params("cpu")
    kw = dict(lr=0.1, momentum=0.9, dampening=0.5)
    opt, copt = genesis.optim.SGD(gpu, fused=True, **kw), genesis.optim.SGD(cpu, **kw)
    scaler = torch.amp.GradScaler("cuda", init_scale=1.0)
    scaler.scale(torch.ones((), device="cuda"))  # creates the scale on the device
    _set_grads([gpu], 0)
    gpu[3].grad[5] = float("inf")
    scaler.step(opt)  # skipped on the device
    scaler.update()  # halves the scale: gradients below are scaled to match (powers of 2: exact)
    for step in range(1, 4):
        _set_grads([gpu, cpu], step)
        for p in gpu:
            p.grad.mul_(scaler.get_scale())
        scaler.step(opt)
        scaler.update()
        copt.step()
    _assert_same_bits(opt, gpu, copt, cpu)


def test_state_dict_moves_between_cpu_and_cuda():
    gpu, cpu = _params("cuda"), _params("cpu")
    opt = genesis.optim.Adam(gpu, lr=1e-2)
    copt = genesis.optim.Adam(cpu, lr=1e-2)
    for step in range(3):
        _set_grads([gpu, cpu], step)
        opt.step()
        copt.step()
    fresh_cpu = genesis.optim.Adam(cpu, lr=1e-2)
    fresh_cpu.load_state_dict(opt.state_dict())
    assert fresh_cpu.state[cpu[0]]["exp_avg"].device.type == "cpu"
    fresh_gpu = genesis.optim.Adam(gpu, lr=1e-2)
    fresh_gpu.load_state_dict(copt.state_dict())
    assert fresh_gpu.state[gpu[0]]["exp_avg"].is_cuda
    assert fresh_gpu.state[gpu[0]]["step"].is_cuda
    # and they continue in step, bit for bit
    _set_grads([gpu, cpu], 9)
    fresh_gpu.step()
    fresh_cpu.step()
    _assert_same_bits(fresh_gpu, gpu, fresh_cpu, cpu)


def test_sgd_state_dict_loaded_on_cuda_is_not_a_first_step():
    gpu, cpu = _params("cuda"), _params("cpu")
    kw = dict(lr=0.1, momentum=0.9, dampening=0.5)
    copt = genesis.optim.SGD(cpu, **kw)
    _set_grads([cpu], 0)
    copt.step()
    for p, q in zip(gpu, cpu):
        p.data.copy_(q.detach())
    opt = genesis.optim.SGD(gpu, **kw)
    opt.load_state_dict(copt.state_dict())
    _set_grads([gpu, cpu], 1)
    opt.step()
    copt.step()
    _assert_same_bits(opt, gpu, copt, cpu)


def test_a_group_mixing_devices_is_refused():
    a = torch.nn.Parameter(torch.zeros(3, device="cuda"))
    b = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="several devices"):
        genesis.optim.SGD([a, b], lr=0.1)
    opt = genesis.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1)  # one group per device
    a.grad, b.grad = torch.ones(3, device="cuda"), torch.ones(3)
    opt.step()
    assert torch.equal(a.cpu(), b.detach())


def test_host_grad_scale_reaches_cuda_kernels():
    """A scale given on the host (a float) still divides CUDA gradients inside the update."""
    scaled, plain = _params("cuda"), _params("cuda")
    _set_grads([scaled, plain], 3)
    for p in scaled:
        p.grad.mul_(4.0)
    opt, ref = genesis.optim.AdamW(scaled, lr=1e-2), genesis.optim.AdamW(plain, lr=1e-2)
    opt.grad_scale = 4.0
    opt.step()
    ref.step()
    for p, q in zip(scaled, plain):
        torch.testing.assert_close(p, q)


def test_a_tensor_of_more_than_2_31_elements():
    """Indices past 2^31 (64-bit offsets) and a tensor spanning several tables."""
    n = 2**31 + 5
    free, _ = torch.cuda.mem_get_info()
    if free < 6 * 4 * n:
        pytest.skip("needs about 52 GB of free GPU memory")
    p = torch.nn.Parameter(torch.zeros(n, device="cuda"))
    p.grad = torch.ones(n, device="cuda")
    p.grad[-3:] = torch.tensor([2.0, -4.0, 8.0], device="cuda")
    opt = genesis.optim.SGD([p], lr=0.5, momentum=0.9)
    opt.step()
    opt.step()
    # b1 = g, p1 = -0.5 g; b2 = 0.9 b1 + g, p2 = p1 - 0.5 b2: about -1.45 g, and exactly the
    # value at g = 1 times g for the powers of two.
    x = p.detach()
    first = x[0].item()
    assert abs(first + 1.45) < 1e-6
    got = torch.stack([x[-3], x[-2], x[-1]]).cpu()
    assert torch.equal(got, torch.tensor([2.0, -4.0, 8.0]) * first)
    assert int((x != first).sum()) == 3  # every other element updated alike, none missed
    del p, opt
    torch.cuda.empty_cache()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_group_on_a_second_gpu_while_the_first_is_current():
    gpu1 = _params("cuda:1")
    cpu = _params("cpu")
    opt = genesis.optim.AdamW(gpu1, lr=1e-2, fused=True)
    copt = genesis.optim.AdamW(cpu, lr=1e-2)
    scaler = torch.amp.GradScaler("cuda", init_scale=4.0)
    with torch.cuda.device(0):
        scaler.scale(torch.ones((), device="cuda:0"))  # the scale and found_inf live on cuda:0
    side = torch.cuda.Stream(device=1)
    for step in range(3):
        # cuda:1's current stream is `side` while cuda:0 is the current device
        with torch.cuda.stream(side), torch.cuda.device(0):
            _set_grads([gpu1, cpu], step)
            for p in gpu1:
                p.grad.mul_(4.0)
            scaler.step(opt)
            scaler.update()
            genesis.nn.utils.clip_grad_norm_(gpu1, 1e9)
        copt.step()
    torch.cuda.synchronize(1)
    _assert_same_bits(opt, gpu1, copt, cpu)


# ------------------------------------------ the deferred clip (docs/mixed-precision.md#fused-clipping)
@pytest.mark.parametrize(
    "name, extra",
    [("AdamW", {}), ("SGD", {}), ("Lion", {}), ("AdamW", dict(state_dtype="int8", min_8bit_size=1))],
    ids=["AdamW", "SGD", "Lion", "AdamW-int8"],
)
def test_deferred_clip_same_bits_as_eager_clip_on_cuda(name, extra):
    """optimizer.clip_grad_norm_ (+ clip_grad_value_) then step on CUDA: the norm and the
    coefficient stay on the device, and the result equals genesis.nn.utils' in-place clip then
    step bit for bit (the 8-bit kernel too), and the CPU's deferred clip within the norm's last
    bits (the CPU and CUDA norms add in different orders; with 8-bit state such a last bit may
    move a code, so there the parameters are compared with CUDA only)."""
    hp = dict(R.RICH[name], **extra)
    fused, eager, cpu = _params("cuda"), _params("cuda"), _params("cpu")
    of, oe, oc = (getattr(genesis.optim, name)(ps, **hp) for ps in (fused, eager, cpu))
    for step in range(6):
        _set_grads([fused, eager, cpu], step)
        a = of.clip_grad_norm_(0.5)
        b = genesis.nn.utils.clip_grad_norm_(eager, 0.5)
        c = oc.clip_grad_norm_(0.5)
        assert torch.equal(a, b)
        torch.testing.assert_close(a.cpu(), c, rtol=1e-6, atol=0)
        if step % 2:
            of.clip_grad_value_(0.01)
            genesis.nn.utils.clip_grad_value_(eager, 0.01)
            oc.clip_grad_value_(0.01)
        of.step()
        oe.step()
        oc.step()
    for p, q, r in zip(fused, eager, cpu):
        assert torch.equal(p, q)
        if not extra:
            torch.testing.assert_close(p.cpu(), r.detach(), rtol=1e-5, atol=1e-6)
    for p, q in zip(fused, eager):
        for k, v in of.state[p].items():
            assert torch.equal(v, oe.state[q][k]), k
    if extra:
        assert of.state[fused[3]]["exp_avg"].dtype == torch.uint8


def test_deferred_clip_does_not_synchronize():
    params = _params("cuda")
    opt = genesis.optim.AdamW(params, lr=1e-3)
    _set_grads([params], 0)
    opt.step()  # state creation may allocate
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.clip_grad_norm_(1.0)
            opt.clip_grad_value_(0.5)
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_deferred_clip_with_torch_grad_scaler_skips_inf_on_the_device():
    """torch's GradScaler("cuda") unscales in place; the deferred clip then reads true
    gradients, and a step with an inf gradient changes nothing."""
    params = _params("cuda")
    opt = genesis.optim.AdamW(params, lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**8)
    for step in range(3):
        _set_grads([params], step)
        for p in params:
            p.grad.mul_(scaler.get_scale())
        if step == 2:
            params[1].grad[0] = float("inf")
        scaler.scale(torch.ones((), device="cuda"))
        before = [p.detach().clone() for p in params]
        scaler.unscale_(opt)
        opt.clip_grad_norm_(0.1)
        scaler.step(opt)
        scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(params, before))
    assert float(opt.state[params[0]]["step"]) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16-master"])
@pytest.mark.parametrize("name", ["LAMB", "Adafactor"])
def test_reduction_rules_same_bits_as_the_cpu_path_on_matrices(name, dtype):
    """The reduction rules' sums (NOTE: [reduction rules]) have one order on both backends:
    matrices with more columns than a block has threads, batches, several tiles of rows per
    matrix (Adafactor's first pass), one row or column, several chunks, an empty matrix; with
    master weights for bfloat16. Same bits as the CPU."""
    shapes = [(71, 1100), (2, 151, 1000), (3, 40, 600), (1, 700), (700, 1), (2 * 65536 + 3,), (0, 5), ()]
    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    gpu = [torch.nn.Parameter(x.cuda()) for x in init]
    cpu = [torch.nn.Parameter(x.clone()) for x in init]
    extra = dict(master_weights=True) if dtype == torch.bfloat16 else {}
    opt = getattr(genesis.optim, name)(gpu, **R.RICH[name], **extra)
    copt = getattr(genesis.optim, name)(cpu, **R.RICH[name], **extra)
    for step in range(5):
        _set_grads([gpu, cpu], step)
        opt.step()
        copt.step()
    _assert_same_bits(opt, gpu, copt, cpu)
