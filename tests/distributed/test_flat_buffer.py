"""Contiguous buffers and their layout, in one process (no process group needed), and the
ZeroOptimizer's argument checks."""

import pytest

torch = pytest.importorskip("torch")

import genesis  # noqa: E402
from genesis.distributed import FlatBuffer, FlatParameters, ZeroOptimizer, layout  # noqa: E402


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    act = torch.nn.Tanh() if dtype.is_complex else torch.nn.ReLU()  # torch's ReLU takes no complex
    return torch.nn.Sequential(torch.nn.Linear(5, 9), act, torch.nn.Linear(9, 4)).to(dtype)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("bucket", [None, 1, 17, 1000])
def test_layout_pieces_cover_every_element_once(world_size, bucket):
    numels = [45, 9, 36, 4, 1]
    plan = layout.plan(numels, world_size, bucket)
    assert plan.logical_total == sum(numels)
    covered = []
    for rank in range(world_size):
        for lo, hi, llo, lhi in plan.pieces(rank, world_size):
            assert (hi - lo) % layout.ALIGN == 0 and lo % layout.ALIGN == 0
            covered.extend(range(llo, lhi))
    assert sorted(covered) == list(range(sum(numels)))
    # which parameters share a bucket does not depend on the world size
    assert [b.params for b in plan.buckets] == [b.params for b in layout.plan(numels, 1, bucket).buckets]
    for offset, n, nxt in zip(plan.offsets, numels, plan.offsets[1:] + (plan.total,)):
        assert offset + n <= nxt


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("numels", [[45, 9, 36, 4, 1], [1000, 1, 1, 1], [1, 1, 1, 1000], [5] * 13, [0, 3, 0], [2, 3]])
def test_whole_tensor_owners_balance_within_the_largest_tensor(world_size, numels):
    """layout.owners: a contiguous, monotonic split of whole tensors whose per-rank totals are
    within the largest tensor of total / world_size; owned_ranges covers each tensor once."""
    owner = layout.owners(numels, world_size)
    assert list(owner) == sorted(owner) and all(0 <= r < world_size for r in owner)
    loads = [sum(n for n, r in zip(numels, owner) if r == rank) for rank in range(world_size)]
    assert sum(loads) == sum(numels)
    for load in loads:
        assert abs(load - sum(numels) / world_size) <= max(numels)
    for bucket in (None, 1, 40):
        plan = layout.plan(numels, world_size, bucket)
        covered = []
        for b, ranges in zip(plan.buckets, layout.owned_ranges(plan, owner, world_size)):
            for rank, (lo, hi) in enumerate(ranges):
                mine = [i for i in b.params if owner[i] == rank]
                assert hi - lo == sum(numels[i] for i in mine)
                covered.extend(mine)
        assert sorted(covered) == list(range(len(numels)))


def test_layout_rejects_bad_sizes():
    with pytest.raises(ValueError, match="world_size"):
        layout.plan([3], 0)
    with pytest.raises(ValueError, match="bucket_numel"):
        layout.plan([3], 1, 0)


def test_parameters_and_gradients_become_views():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    buf = FlatBuffer(list(model.parameters()))
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
        assert p.untyped_storage().data_ptr() == buf.data.untyped_storage().data_ptr()
    grad_ptrs = [p.grad.data_ptr() for p in model.parameters()]
    for _ in range(2):  # backward accumulates into the buffer, in place
        model(torch.randn(3, 5)).sum().backward()
    assert [p.grad.data_ptr() for p in model.parameters()] == grad_ptrs
    assert buf.views_intact()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert torch.equal(buf.grad[: expected.numel()], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_flat_parameters_step_equals_per_tensor_step(dtype):
    flat_model, ref_model = _model(dtype), _model(dtype)
    flat = FlatParameters(
        [{"params": list(flat_model.parameters())[:2]}, {"params": list(flat_model.parameters())[2:], "lr": 0.1}]
    )
    opt = genesis.optim.AdamW(flat.param_groups, lr=0.01)
    ref = genesis.optim.AdamW(
        [{"params": list(ref_model.parameters())[:2]}, {"params": list(ref_model.parameters())[2:], "lr": 0.1}], lr=0.01
    )
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]
    for step in range(5):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(step), dtype=dtype)
        for model, o in ((flat_model, opt), (ref_model, ref)):
            model(x).abs().pow(2).sum().backward()
            o.step()
        flat.zero_grad()
        ref.zero_grad()
    for a, b in zip(flat_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(float(p.grad.abs().max()) == 0 for p in flat_model.parameters())


def test_reattach_after_set_to_none():
    model = _model()
    flat = FlatParameters(model.parameters())
    model.zero_grad(set_to_none=True)
    flat.buffers[0].grad.fill_(7.0)
    flat.reattach()
    assert flat.buffers[0].views_intact()
    assert all(float(p.grad.abs().max()) == 0 for p in model.parameters())


def test_flat_buffer_rejects_bad_input():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="one dtype"):
        FlatBuffer([a, b])
    with pytest.raises(ValueError, match="more than once"):
        FlatBuffer([a, a])
    with pytest.raises(ValueError, match="leaf"):
        FlatBuffer([a * 2])
    with pytest.raises(TypeError, match="not a torch tensor"):
        FlatParameters([a, [1.0]])
    with pytest.raises(TypeError, match="not a floating or complex dtype"):
        FlatBuffer([torch.zeros(3, dtype=torch.int64)])


def test_zero_optimizer_checks_arguments_first():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="stage"):
        ZeroOptimizer([p], genesis.optim.AdamW, stage=3)
    with pytest.raises(TypeError, match="optimizer class"):
        ZeroOptimizer([p], genesis.optim.AdamW(list(_model().parameters())))
    with pytest.raises(ValueError, match="shard_grads=True needs stage=2"):
        ZeroOptimizer([p], genesis.optim.AdamW, stage=1, shard_grads=True)
    assert p.grad is None  # untouched


def test_flat_buffer_without_gradient_buffer_leaves_gradients_alone():
    model = _model()
    grads = [torch.full_like(p, 2.0) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    buf = FlatBuffer(list(model.parameters()), grads=False)
    assert buf.grad is None and buf.views_intact()
    for p, g in zip(model.parameters(), grads):
        assert p.grad is g
        assert p.untyped_storage().data_ptr() == buf.data.untyped_storage().data_ptr()
