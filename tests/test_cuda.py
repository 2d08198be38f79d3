"""The CUDA backend through the Python API (skipped without a GPU; see conftest.py): parity
with torch's fused CUDA optimizers and with genesis's own CPU path, sizes that cross chunk and
table boundaries, an unaligned view, many tensors, 16-bit parameters, the clip reductions
(against torch, deterministic), no host synchronisation in step(), torch's GradScaler driving
the fused update, and state_dicts moving between CPU and CUDA optimizers."""

import os
import sys

import pytest

torch = pytest.importorskip("torch")
import genesis  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

pytestmark = pytest.mark.cuda

SIZES = [1, 3, 4097, 65537, 3 * 65536 + 5]


def _params(device, dtype=torch.float32, sizes=SIZES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=gen).to(device=device, dtype=dtype)) for n in sizes]


def _set_grads(groups, seed):
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(p.shape, generator=gen) for p in groups[0]]
    for params in groups:
        for p, g in zip(params, grads):
            p.grad = g.to(device=p.device, dtype=p.dtype)


CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01), True),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), True),
    ("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True), True),
    ("AdamW", dict(lr=1e-2, maximize=True), True),
    ("RMSprop", dict(lr=1e-2, centered=True, momentum=0.9), False),
]


@pytest.mark.parametrize("name,kw,torch_fused", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_parity_with_torch_and_with_the_cpu_path(name, kw, torch_fused):
    gpu = _params("cuda")
    ref = _params("cuda")
    cpu = _params("cpu")
    opt = getattr(genesis.optim, name)([{"params": gpu[:2], "lr": kw["lr"] / 2}, {"params": gpu[2:]}], **kw)
    extra = {"fused": True} if torch_fused else {}
    topt = getattr(torch.optim, name)([{"params": ref[:2], "lr": kw["lr"] / 2}, {"params": ref[2:]}], **kw, **extra)
    copt = getattr(genesis.optim, name)([{"params": cpu[:2], "lr": kw["lr"] / 2}, {"params": cpu[2:]}], **kw)
    for step in range(30):
        _set_grads([gpu, ref, cpu], step)
        opt.step()
        topt.step()
        copt.step()
    for a, b, c in zip(gpu, ref, cpu):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.cpu(), c, rtol=1e-5, atol=1e-6)
    assert opt.state[gpu[0]]["step" if name != "SGD" else "momentum_buffer"].is_cuda


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
    topt = getattr(torch.optim, name)(groups(ref), **hp) if hasattr(torch.optim, name) else None
    for step in range(25):
        _set_grads([gpu, cpu, ref], step)
        opt.step()
        copt.step()
        if topt is not None:
            topt.step()
    for a, c in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), c, **tol)
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


def test_unaligned_view_and_many_tensors():
    base = torch.randn(4097 * 120 + 1, device="cuda")
    views = [base[1 + i * 4097:1 + (i + 1) * 4097] for i in range(120)]  # none 16-byte aligned
    params = [torch.nn.Parameter(v) for v in views]  # shares base's storage, offset kept
    ref = [torch.nn.Parameter(v.clone()) for v in views]
    opt, topt = genesis.optim.AdamW(params, lr=1e-2), torch.optim.AdamW(ref, lr=1e-2, fused=True)
    for step in range(5):
        _set_grads([params, ref], step)
        opt.step()
        topt.step()
    for a, b in zip(params, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_parameters_match_the_cpu_path(dtype):
    gpu, cpu = _params("cuda", dtype), _params("cpu", dtype)
    opt = genesis.optim.AdamW(gpu, lr=1e-2, master_weights=True)
    copt = genesis.optim.AdamW(cpu, lr=1e-2, master_weights=True)
    for step in range(10):
        _set_grads([gpu, cpu], step)
        opt.step()
        copt.step()
    for a, b in zip(gpu, cpu):
        # float32 math on both; the GPU may contract a multiply-add, so allow one 16-bit ulp
        torch.testing.assert_close(a.cpu().float(), b.float(), rtol=1e-2, atol=1e-3)


def test_step_does_not_synchronize():
    params = _params("cuda")
    opt = genesis.optim.AdamW(params, lr=1e-3)
    _set_grads([params], 0)
    opt.step()  # the first step creates state (allocations may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(3):
            opt.step()
        genesis.nn.utils.clip_grad_norm_(params, 1.0)
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
    expected = torch.nn.utils.clip_grad_norm_(b, 1.0, norm_type=norm_type)
    assert all(torch.equal(t, totals[0]) for t in totals)
    torch.testing.assert_close(totals[0], expected, rtol=1e-5, atol=0)
    genesis.nn.utils.clip_grad_norm_(a, 1.0, norm_type=norm_type)
    for p, q in zip(a, b):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_torch_grad_scaler_skips_inf_steps_on_the_device():
    params = _params("cuda")
    opt = genesis.optim.AdamW(params, lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 8)
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
