"""capturable=True: a whole training step, genesis's step() included, captured in a
torch.cuda.CUDAGraph replays to the same bits as eager steps (CUDA only), with a CUDA tensor lr
read by the kernels so that writing into it between replays changes the captured step's lr
(docs/semantics.md#capturable-steps), and the settings that cannot be captured are refused up
front (these run on the CPU, the CUDA checks stood in for)."""

import copy

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


@pytest.fixture
def cuda_scalars(monkeypatch):
    """0-dim tensors count as CUDA tensors (no GPU here): the device-lr logic runs, nothing launches."""
    from genesis import _interop

    def is_cuda(x):
        return isinstance(x, torch.Tensor) and (x.dim() == 0 or getattr(x, "fake_cuda", False))

    monkeypatch.setattr(_interop, "is_cuda", is_cuda)


def _capturable_group(name="Adam", lr=None, **kw):
    p = torch.nn.Parameter(torch.ones(3))
    opt = getattr(genesis.optim, name)([p], lr=torch.tensor(0.1) if lr is None else lr, **kw)
    opt.param_groups[0]["capturable"] = True  # the constructor refuses it for CPU parameters
    p.grad = torch.ones(3)
    return opt, p


@pytest.mark.parametrize(
    "lr,device,error,message",
    [
        (torch.tensor([0.1, 0.2]), None, ValueError, "Tensor lr must be 1-element"),
        (torch.tensor(0.1, dtype=torch.float16), None, TypeError, "as float32 or float64; lr of param group 0 is"),
        (torch.tensor(0.1), "cuda:1", ValueError, "lr of param group 0 is on cpu, but its parameters are on cuda:1"),
    ],
)
def test_a_device_lr_is_validated_before_anything_changes(cuda_scalars, lr, device, error, message):
    from genesis.optim import _device_lr

    opt, p = _capturable_group(lr=torch.tensor(0.1))
    lr.fake_cuda = True
    opt.param_groups[0]["lr"] = lr
    with pytest.raises(error, match=message):
        _device_lr.check(opt, opt.param_groups[0], 0, torch.device(device) if device else None)
    if device is None:  # through step(): refused before any state exists
        with pytest.raises(error, match=message):
            opt.step()
        assert len(opt.state) == 0 and torch.equal(p.detach(), torch.ones(3))


def test_which_groups_read_lr_on_the_device(cuda_scalars):
    from genesis.optim import _device_lr

    for name in ("Adam", "AdamW", "ASGD", "RMSprop", "Rprop", "NAdam", "RAdam", "Adamax", "Adadelta", "SGD"):
        opt, _ = _capturable_group(name)
        assert _device_lr.uses_device_lr(opt, opt.param_groups[0]), name
        opt.param_groups[0]["capturable"] = False
        assert not _device_lr.uses_device_lr(opt, opt.param_groups[0]), name
    opt, _ = _capturable_group("Adam", lr=0.1)  # a float lr: read on the host as always
    assert not _device_lr.uses_device_lr(opt, opt.param_groups[0])
    # A reduction rule's passes take their options from the host: refused while capturing.
    opt, _ = _capturable_group("LAMB")
    assert not _device_lr.uses_device_lr(opt, opt.param_groups[0])
    torch.cuda.is_current_stream_capturing, saved = (lambda: True), torch.cuda.is_current_stream_capturing
    try:
        with pytest.raises(RuntimeError, match="its rule takes lr from the host"):
            opt.step()
    finally:
        torch.cuda.is_current_stream_capturing = saved
    assert len(opt.state) == 0


def test_the_core_gets_lr_from_the_device_and_no_host_read(cuda_scalars, monkeypatch):
    """step() hands the kernels the lr tensor's address and never reads its value: the options
    carry 0 in its place, and the state layout is found without it."""
    from genesis.optim import _device_lr, _rules

    class NoHostRead(torch.Tensor):
        def item(self):
            raise AssertionError("lr was read on the host")

    lr = torch.tensor(0.25, dtype=torch.float64).as_subclass(NoHostRead)
    opt, p = _capturable_group("ASGD", lr=torch.tensor(0.25))
    group = opt.param_groups[0]
    group["lr"] = lr
    seen = {}
    monkeypatch.setattr(_rules, "core_options", _spy(_rules.core_options, seen))
    assert opt._state_names(group) == ("ax",)  # found without reading lr
    assert opt._state_shapes(group, p.detach()) is not None
    assert seen["host_lr"] is False
    cached = type("Cached", (), {})()
    assert _device_lr.control(group, cached) == {"lr_ptr": lr.data_ptr(), "lr_is_double": True}
    assert cached.lr is lr  # kept alive until the next step
    options = _rules.core_options("asgd", group, host_lr=False)
    assert options.as_dict()["lr"] == 0.0
    control = genesis._C.StepControl(lr_ptr=lr.data_ptr(), lr_is_double=True)
    assert control is not None


def _spy(fn, seen):
    def wrapper(rule, group, host_lr=True):
        seen["host_lr"] = host_lr
        return fn(rule, group, host_lr)

    return wrapper


def _loss(params, x, y):
    # element-wise only: the eager twin runs the very same kernels, so bits can be compared
    return sum(((p * xi - yi) ** 2).sum() for p, xi, yi in zip(params, x, y))


def _twins(seed):
    """Inputs, and two identical parameter lists: one for the graph, one for eager steps."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [1, 4097, 65537 + 3]
    init = [torch.randn(n, generator=gen) for n in sizes]
    x = [torch.randn(n, generator=gen).cuda() for n in sizes]
    y = [torch.randn(n, generator=gen).cuda() for n in sizes]
    return x, y, [torch.nn.Parameter(t.cuda()) for t in init], [torch.nn.Parameter(t.cuda()) for t in init]


def _train_step(params, o, x, y):
    o.zero_grad(set_to_none=False)  # the captured graph keeps the same gradient tensors
    _loss(params, x, y).backward()
    o.step()


def _capture(step, warm_up):
    """Runs `warm_up` on a side stream (gradients and state are created outside the graph), then
    captures `step`; capturing runs none of its launches."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm_up()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def _assert_same_bits(opt, graphed, ref, eager):
    torch.cuda.synchronize()
    for a, b in zip(graphed, eager):
        assert torch.equal(a, b)
        for key, value in ref.state[b].items():
            assert torch.equal(opt.state[a][key], value), key


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
    x, y, graphed, eager = _twins(0)
    cls = getattr(genesis.optim, name)
    opt = cls(graphed, **kw)
    ref = cls(eager, **{k: v for k, v in kw.items() if k != "capturable"})

    def warm_up():
        for _ in range(3):
            _train_step(graphed, opt, x, y)

    graph = _capture(lambda: _train_step(graphed, opt, x, y), warm_up)
    for _ in range(3):
        _train_step(eager, ref, x, y)
    for _ in range(5):
        graph.replay()
        _train_step(eager, ref, x, y)
    _assert_same_bits(opt, graphed, ref, eager)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "name,kw",
    [
        ("AdamW", dict(weight_decay=0.1, amsgrad=True)),
        ("Adam", dict(state_dtype="int8", min_8bit_size=1)),  # the 8-bit state kernel
        ("ASGD", dict(t0=2.0)),  # its eta follows lr on the device (advance_steps)
        ("Rprop", dict()),  # fresh step sizes start at lr
        ("RMSprop", dict(momentum=0.9)),
        ("NAdam", dict()),
    ],
)
@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64])
def test_a_captured_step_reads_a_device_lr_written_between_replays(name, kw, lr_dtype):
    """torch's capturable Adam pattern: lr a CUDA tensor, the step captured once, the lr changed
    by writing into the tensor (lr.fill_, as a scheduler does) before each replay. The eager twin
    gets the same values as host floats (the float32 value, widened as the kernels widen it)."""
    x, y, graphed, eager = _twins(1)
    cls = getattr(genesis.optim, name)
    lr = torch.tensor(1e-2, dtype=lr_dtype, device="cuda")
    opt = cls(graphed, lr=lr, capturable=True, **kw)
    ref = cls(eager, lr=float(lr), **kw)
    schedule = [1e-2, 1e-2, 1e-2, 3e-3, 5e-2, 0.0, 2e-2, 1e-3]

    def warm_up():
        for value in schedule[:3]:
            lr.fill_(value)
            _train_step(graphed, opt, x, y)

    graph = _capture(lambda: _train_step(graphed, opt, x, y), warm_up)
    for i, value in enumerate(schedule):
        if i >= 3:  # the graph's steps
            lr.fill_(value)
            graph.replay()
        lr_value = torch.tensor(value, dtype=lr_dtype)  # the value as stored (float32 rounding included)
        ref.param_groups[0]["lr"] = float(lr_value)
        _train_step(eager, ref, x, y)
    _assert_same_bits(opt, graphed, ref, eager)


@pytest.mark.cuda
def test_eager_capturable_steps_with_a_device_lr_do_not_synchronize():
    params = [torch.nn.Parameter(torch.randn(1000, device="cuda")) for _ in range(3)]
    lr = torch.tensor(1e-2, device="cuda")
    opt = genesis.optim.AdamW(params, lr=lr, capturable=True)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # state created
    torch.cuda.synchronize()
    # The same steps with the lr given from the host (the device value, widened as the kernels do).
    ref_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ref = genesis.optim.AdamW(ref_params, lr=1e-2, capturable=True)
    ref.load_state_dict(copy.deepcopy(opt.state_dict()))  # a copy: opt's steps below must not reach it
    values = [float(lr) * 0.5 ** (k + 1) for k in range(3)]
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            lr.mul_(0.5)
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    for value in values:
        ref.param_groups[0]["lr"] = value
        for rp, p in zip(ref_params, params):
            rp.grad = p.grad
        ref.step()
    for rp, p in zip(ref_params, params):
        assert torch.equal(rp, p)
