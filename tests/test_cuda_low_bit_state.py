"""8-bit optimizer state on CUDA (skipped without a GPU; see conftest.py): the table kernel
(a warp per block of state; packed lanes on aligned tensors, element-wise lanes otherwise)
gives the CPU block driver's bits (codes, block scales, parameters, master weights and step
counters) for every rule, 16-bit parameters, many tensors, unaligned parameters, GradScaler's
device values, and runs without a host synchronisation."""

import os
import sys

import pytest

torch = pytest.importorskip("torch")
import genesis  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

pytestmark = pytest.mark.cuda

# 8-bit state above 4096 elements (full and partial last blocks, several CUDA blocks), float32 below.
SIZES = [4096, 4097, 70000, 300, 0]


def _at_offset(values, offset, device):
    """A parameter holding `values` that starts `offset` elements into its storage."""
    base = torch.zeros(values.numel() + offset, dtype=values.dtype, device=device)
    base[offset:] = values.to(device)
    return torch.nn.Parameter(base[offset:])


def _twins(name, hp, dtype=torch.float32, sizes=SIZES, offsets=None, **kw):
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(n, generator=gen).to(dtype) for n in sizes]
    offsets = offsets or [0] * len(sizes)
    cpu = [_at_offset(v, o, "cpu") for v, o in zip(values, offsets)]
    gpu = [_at_offset(v, o, "cuda") for v, o in zip(values, offsets)]
    cls = getattr(genesis.optim, name)
    return (cls(cpu, state_dtype="int8", **hp, **kw), cpu), (cls(gpu, state_dtype="int8", **hp, **kw), gpu)


def _step_both(pairs, seed, scale=None):
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(p.numel(), generator=gen) for p in pairs[0][1]]
    for opt, params in pairs:
        for p, g in zip(params, grads):
            p.grad = g.to(device=p.device, dtype=p.dtype)
        if scale is not None:
            opt.grad_scale = torch.tensor(scale, device=params[0].device)
        opt.step()


def _assert_same_bits(cpu_pair, gpu_pair):
    (co, cp), (go, gp) = cpu_pair, gpu_pair
    for i, (a, b) in enumerate(zip(cp, gp)):
        assert torch.equal(a.detach(), b.detach().cpu()), f"parameter {i}"
        assert set(co.state[a]) == set(go.state[b])
        for k, v in co.state[a].items():
            assert torch.equal(v, go.state[b][k].cpu()), f"state {k!r} of parameter {i}"


@pytest.mark.parametrize("name", R.ELEMENTWISE_NAMES)  # 8-bit state: the element-wise rules
def test_every_rule_matches_the_cpu_bits(name):
    cpu, gpu = _twins(name, R.RICH[name])
    for seed in range(6):
        _step_both([cpu, gpu], seed)
    _assert_same_bits(cpu, gpu)
    if cpu[0]._state_names(cpu[0].param_groups[0]):
        assert gpu[0].state[gpu[1][2]][cpu[0]._state_names(cpu[0].param_groups[0])[0]].dtype == torch.uint8


@pytest.mark.parametrize("dtype,master", [(torch.float16, True), (torch.bfloat16, True), (torch.bfloat16, False)])
def test_16bit_parameters(dtype, master):
    cpu, gpu = _twins("AdamW", R.RICH["AdamW"], dtype=dtype, master_weights=master)
    for seed in range(4):
        _step_both([cpu, gpu], seed)
    _assert_same_bits(cpu, gpu)


@pytest.mark.parametrize("name", ["AdamW", "Lion"])
def test_many_tensors_and_unaligned_parameters(name):
    # 140 tensors: more than one kernel table of 8-bit state (128 tensors each). Every third
    # parameter starts one element into its storage, so its arrays are not 16-byte aligned and
    # take the element-wise lanes; the others take the packed ones.
    sizes = [4096 + 37 * i for i in range(140)]
    offsets = [1 if i % 3 == 0 else 0 for i in range(140)]
    cpu, gpu = _twins(name, R.RICH[name], sizes=sizes, offsets=offsets)
    assert gpu[1][0].data_ptr() % 16 != 0 and gpu[1][1].data_ptr() % 16 == 0
    for seed in range(4):
        _step_both([cpu, gpu], seed)
    _assert_same_bits(cpu, gpu)


def test_grad_scaler_values_on_the_device_and_no_sync():
    cpu, gpu = _twins("AdamW", R.RICH["AdamW"])
    _step_both([cpu, gpu], 0, scale=1024.0)
    gpu[0].found_inf = torch.tensor(1.0, device="cuda")
    cpu[0].found_inf = torch.tensor(1.0)
    _step_both([cpu, gpu], 1)
    _assert_same_bits(cpu, gpu)
    gpu[0].found_inf = torch.tensor(0.0, device="cuda")
    for p in gpu[1]:
        p.grad = torch.randn_like(p)
    gpu[0].step()  # admission and plan on the warm-up step
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu[0].step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_state_dict_moves_between_cpu_and_cuda():
    cpu, gpu = _twins("Lion", R.RICH["Lion"])
    _step_both([cpu, gpu], 0)
    gpu[0].load_state_dict(cpu[0].state_dict())
    _assert_same_bits(cpu, gpu)
    _step_both([cpu, gpu], 1)
    _assert_same_bits(cpu, gpu)
