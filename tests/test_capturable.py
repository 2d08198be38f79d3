"""capturable=True: a whole training step, genesis's step() included, captured in a
torch.cuda.CUDAGraph replays to the same bits as eager steps (CUDA only), and the settings that
cannot be captured are refused up front (these run on the CPU)."""

import pytest

torch = pytest.importorskip("torch")
import genesis  # noqa: E402


def test_capturable_needs_cuda_parameters():
    with pytest.raises(ValueError, match="capturable=True needs CUDA parameters"):
        genesis.optim.Adam([torch.nn.Parameter(torch.zeros(3))], capturable=True)


def test_capturable_refuses_stochastic_rounding():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="stochastic_rounding"):
        genesis.optim.AdamW([p], capturable=True, stochastic_rounding=True)


def _loss(params, x, y):
    # element-wise only: the eager twin runs the very same kernels, so bits can be compared
    return sum(((p * xi - yi) ** 2).sum() for p, xi, yi in zip(params, x, y))


@pytest.mark.cuda
@pytest.mark.parametrize(
    "name,kw",
    [
        ("AdamW", dict(lr=1e-2, weight_decay=0.1, capturable=True)),
        ("SGD", dict(lr=1e-2, momentum=0.9, dampening=0.2)),  # torch's has no flag
        ("RMSprop", dict(lr=1e-3, centered=True, capturable=True)),
    ],
)
def test_a_captured_training_step_replays_like_eager_steps(name, kw):
    gen = torch.Generator().manual_seed(0)
    sizes = [1, 4097, 65537 + 3]
    init = [torch.randn(n, generator=gen) for n in sizes]
    x = [torch.randn(n, generator=gen).cuda() for n in sizes]
    y = [torch.randn(n, generator=gen).cuda() for n in sizes]
    graphed = [torch.nn.Parameter(t.cuda()) for t in init]
    eager = [torch.nn.Parameter(t.cuda()) for t in init]
    cls = getattr(genesis.optim, name)
    opt = cls(graphed, **kw)
    ref = cls(eager, **{k: v for k, v in kw.items() if k != "capturable"})

    def train_step(params, o):
        o.zero_grad(set_to_none=False)  # the captured graph keeps the same gradient tensors
        _loss(params, x, y).backward()
        o.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up creates gradients and state outside the graph
        for _ in range(3):
            train_step(graphed, opt)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        train_step(graphed, opt)
    for _ in range(3):
        train_step(eager, ref)
    for _ in range(5):
        graph.replay()
        train_step(eager, ref)
    torch.cuda.synchronize()
    for a, b in zip(graphed, eager):
        assert torch.equal(a, b)
        for key, value in ref.state[b].items():
            assert torch.equal(opt.state[a][key], value), key
