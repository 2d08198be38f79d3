"""Sparse gradients (nn.Embedding(sparse=True)) in SGD and Adagrad (genesis/optim/_sparse.py):
updated entry by entry with torch's numbers, bit for bit (SGD without momentum and weight
decay, Adagrad); densified, with the dense update's numbers, where the update touches every
element (SGD with momentum) or the storage needs the core (16-bit state in float32, master
weights). Also GradScaler (genesis's and torch's) with inf steps, state_dicts crossing to
torch, a group added later, and torch's weight-decay error raised before anything changes. SparseAdam has its own file (test_sparse_adam.py)."""

import copy

import pytest

torch = pytest.importorskip("torch")
import genesis  # noqa: E402

STEPS = 25


class Model(torch.nn.Module):
    """A sparse embedding and a sparse bag (mode "sum"), as a recommendation model has them,
    read through a fixed head, plus a dense parameter in its own param group. The dense term
    is added to the loss, so the tables' gradients do not depend on it: the dense update (the
    core's, within rounding of torch's) cannot blur the tables' bit-for-bit comparison."""

    def __init__(self, dtype, device="cpu"):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(50, 7, sparse=True, dtype=dtype, device=device)
        self.bag = torch.nn.EmbeddingBag(20, 7, mode="sum", sparse=True, dtype=dtype, device=device)
        self.head = torch.nn.Linear(7, 1, dtype=dtype, device=device).requires_grad_(False)
        self.dense = torch.nn.Parameter(torch.randn(9, dtype=dtype, device=device))

    def loss(self, step):
        gen = torch.Generator().manual_seed(100 + step)
        device = self.table.weight.device
        rows = torch.randint(0, 50, (13,), generator=gen).to(device)  # repeated rows are likely
        x = self.table(rows)
        if step % 4 != 3:  # some steps leave the bag without a gradient (None after zero_grad)
            bags = torch.randint(0, 20, (2, 5), generator=gen).to(device)
            x = x + self.bag(bags).sum(0)
        return (torch.tanh(self.head(x)).float() ** 2).mean() + (self.dense.float() ** 2).sum() / 8

    def groups(self, **dense):
        return [{"params": [self.table.weight, self.bag.weight]}, {"params": [self.dense], **dense}]


def _train(model, opt, steps, start=0, scaler=None, infs=()):
    for k in range(start, start + steps):
        opt.zero_grad()
        loss = model.loss(k) * (float("inf") if k in infs else 1.0)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()


def _assert_same(a_model, b_model, a_opt=None, b_opt=None, dense=True):
    """The sparse tables and their state bit for bit; the dense parameter (the core's update;
    torch's single-tensor loop contracts a product with the sum) within rounding, unless
    `dense` is False (16-bit: the core rounds once per step, torch after each operation)."""
    for name, a in a_model.named_parameters():
        if name == "dense" and not dense:
            continue
        b = b_model.get_parameter(name)
        assert torch.isfinite(a).all()
        same = _equal if name != "dense" else _close
        same(a.detach(), b.detach())
        if a_opt is not None:
            sa, sb = a_opt.state[a], b_opt.state[b]
            assert sorted(sa) == sorted(sb)
            for key in sa:
                same(torch.as_tensor(sa[key]), torch.as_tensor(sb[key]))


def _equal(a, b):
    assert torch.equal(a, b)


def _close(a, b):
    tol = dict(rtol=1e-10, atol=1e-12) if a.dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, b, **tol)


RULES = {
    "SGD": (torch.optim.SGD, genesis.optim.SGD, dict(lr=0.1)),
    "SGD tensor lr": (torch.optim.SGD, genesis.optim.SGD, dict(lr=torch.tensor(0.05))),
    "Adagrad": (torch.optim.Adagrad, genesis.optim.Adagrad, dict(lr=0.1)),
    "Adagrad options": (
        torch.optim.Adagrad,
        genesis.optim.Adagrad,
        dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.5, eps=1e-6),
    ),
}


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", list(RULES))
def test_row_updates_equal_torch_bit_for_bit(rule, dtype, maximize):
    torch_cls, genesis_cls, kw = RULES[rule]
    a, b = Model(dtype), Model(dtype)
    a_opt = torch_cls(a.groups(), maximize=maximize, **kw)
    b_opt = genesis_cls(b.groups(), maximize=maximize, **kw)
    _train(a, a_opt, STEPS)
    _train(b, b_opt, STEPS)
    _assert_same(a, b, a_opt, b_opt)


@pytest.mark.parametrize("rule", ["SGD", "Adagrad"])
def test_bfloat16_with_state_in_the_parameter_dtype_equals_torch(rule):
    torch_cls, genesis_cls, kw = RULES[rule]
    a, b = Model(torch.bfloat16), Model(torch.bfloat16)
    a_opt = torch_cls(a.groups(), **kw)
    b_opt = genesis_cls(b.groups(), state_dtype=torch.bfloat16, **kw)
    _train(a, a_opt, STEPS)
    _train(b, b_opt, STEPS)
    _assert_same(a, b, a_opt, b_opt, dense=False)


def test_only_the_gradients_entries_change():
    """eps=0 and a zero accumulator: a dense update would divide 0 by 0 in every row the batch
    did not touch; the row update leaves those rows' bits alone, as torch's does."""
    table = torch.nn.Embedding(100, 3, sparse=True)
    before = table.weight.detach().clone()
    opt = genesis.optim.Adagrad(table.parameters(), lr=0.1, eps=0.0)
    rows = torch.tensor([3, 17, 17, 64])
    table(rows).sum().backward()
    opt.step()
    changed = (table.weight.detach() != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [3, 17, 64]
    assert torch.isfinite(table.weight).all()
    assert (opt.state[table.weight]["sum"][~changed] == 0).all()


@pytest.mark.parametrize(
    "kw",
    [dict(momentum=0.9), dict(momentum=0.9, nesterov=True), dict(weight_decay=0.01), dict(momentum=0.5, dampening=0.1)],
    ids=["momentum", "nesterov", "weight_decay", "dampening"],
)
def test_sgd_that_touches_every_element_densifies(kw):
    """Momentum and weight decay move every element: the gradient is densified and the core
    updates the table, bit for bit as given the dense gradient, and as torch's SGD on the dense
    gradient within rounding (torch's own sparse path keeps an uncoalesced sparse momentum
    buffer, summed in another order, and refuses weight decay)."""
    a, b, c = Model(torch.float32), Model(torch.float32), Model(torch.float32)
    a_opt = torch.optim.SGD(a.groups(), lr=0.05, **kw)
    b_opt = genesis.optim.SGD(b.groups(), lr=0.05, **kw)
    c_opt = genesis.optim.SGD(c.groups(), lr=0.05, **kw)
    for k in range(STEPS):
        for model, opt in ((a, a_opt), (b, b_opt), (c, c_opt)):
            opt.zero_grad()
            model.loss(k).backward()
        for model in (a, c):
            for p in model.parameters():
                if p.grad is not None and p.grad.is_sparse:
                    p.grad = p.grad.to_dense()
        for opt in (a_opt, b_opt, c_opt):
            opt.step()
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        _close(pa.detach(), pb.detach())
        _equal(pb.detach(), pc.detach())


@pytest.mark.parametrize(
    "rule,options",
    [
        ("Adagrad", {}),  # bfloat16 parameters keep float32 state by default (docs/mixed-precision.md)
        ("Adagrad", dict(master_weights=True)),
        ("SGD", dict(master_weights=True)),
        ("SGD", dict(stochastic_rounding=True, seed=3)),
        ("Adagrad", dict(state_dtype="int8", min_8bit_size=0)),
    ],
    ids=[
        "Adagrad float32 state",
        "Adagrad master weights",
        "SGD master weights",
        "SGD stochastic rounding",
        "Adagrad 8-bit state",
    ],
)
def test_16_bit_storage_the_core_keeps_densifies(rule, options):
    """A master copy, stochastic rounding, or state in another dtype than the parameter (8-bit
    included) need the core: it updates the table on the densified gradient, exactly as on the dense gradient."""
    _, genesis_cls, kw = RULES[rule]
    b, c = Model(torch.bfloat16), Model(torch.bfloat16)
    b_opt = genesis_cls(b.groups(), **options, **kw)
    c_opt = genesis_cls(c.groups(), **options, **kw)
    for k in range(10):
        for model, opt in ((b, b_opt), (c, c_opt)):
            opt.zero_grad()
            model.loss(k).backward()
        for p in c.parameters():
            if p.grad is not None and p.grad.is_sparse:
                p.grad = p.grad.to_dense()
        b_opt.step()
        c_opt.step()
    for pb, pc in zip(b.parameters(), c.parameters()):
        _equal(pb.detach(), pc.detach())
        assert sorted(b_opt.state[pb]) == sorted(c_opt.state[pc])
        for key in b_opt.state[pb]:
            _equal(torch.as_tensor(b_opt.state[pb][key]), torch.as_tensor(c_opt.state[pc][key]))
    if options.get("master_weights"):
        assert b_opt.state[b.table.weight]["master_param"].dtype == torch.float32


@pytest.mark.parametrize("unscale", [False, True])
@pytest.mark.parametrize("scaler", ["genesis", "torch"])
@pytest.mark.parametrize("rule", ["SGD", "Adagrad"])
def test_grad_scaler_skips_inf_steps_as_torch(rule, scaler, unscale):
    torch_cls, genesis_cls, kw = RULES[rule]
    infs = (3, 7, 8)

    def make_scaler(kind):
        options = dict(init_scale=1024.0, growth_interval=3)
        return genesis.amp.GradScaler(**options) if kind == "genesis" else torch.amp.GradScaler("cpu", **options)

    def train(model, opt, sc):
        for k in range(STEPS):
            opt.zero_grad()
            sc.scale(model.loss(k) * (float("inf") if k in infs else 1.0)).backward()
            if unscale:
                sc.unscale_(opt)
            sc.step(opt)
            sc.update()

    a, b = Model(torch.float32), Model(torch.float32)
    a_opt, b_opt = torch_cls(a.groups(), **kw), genesis_cls(b.groups(), **kw)
    a_scaler, b_scaler = make_scaler("torch"), make_scaler(scaler)
    train(a, a_opt, a_scaler)
    train(b, b_opt, b_scaler)
    assert a_scaler.get_scale() == b_scaler.get_scale()
    assert torch.isfinite(b.table.weight).all()
    _assert_same(a, b, a_opt, b_opt)


def test_adagrad_state_dict_crosses_to_torch_and_back():
    a, b = Model(torch.float32), Model(torch.float32)
    kw = RULES["Adagrad options"][2]
    a_opt, b_opt = torch.optim.Adagrad(a.groups(), **kw), genesis.optim.Adagrad(b.groups(), **kw)
    _train(a, a_opt, 10)
    _train(b, b_opt, 10)
    # swap: each library continues from the other's state
    a_to_genesis = genesis.optim.Adagrad(a.groups(), **kw)
    a_to_genesis.load_state_dict(copy.deepcopy(a_opt.state_dict()))
    b_to_torch = torch.optim.Adagrad(b.groups(), **kw)
    b_to_torch.load_state_dict(copy.deepcopy(b_opt.state_dict()))
    _train(a, a_to_genesis, 10, start=10)
    _train(b, b_to_torch, 10, start=10)
    _assert_same(a, b, a_to_genesis, b_to_torch)


def test_adagrad_group_added_later_gets_its_state():
    a, b = Model(torch.float32), Model(torch.float32)
    a_opt = torch.optim.Adagrad([a.dense], lr=0.1, initial_accumulator_value=0.25)
    b_opt = genesis.optim.Adagrad([b.dense], lr=0.1, initial_accumulator_value=0.25)
    _train(a, a_opt, 3)
    _train(b, b_opt, 3)
    for model, opt in ((a, a_opt), (b, b_opt)):
        opt.add_param_group({"params": [model.table.weight, model.bag.weight]})
    _train(a, a_opt, 10, start=3)
    _train(b, b_opt, 10, start=3)
    _assert_same(a, b, a_opt, b_opt)


def _snapshot(model, opt):
    params = [p.detach().clone() for p in model.parameters()]
    state = {id(p): {k: torch.as_tensor(v).clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    return params, state


def _assert_unchanged(model, opt, snapshot):
    params, state = snapshot
    for p, before in zip(model.parameters(), params):
        assert torch.equal(p.detach(), before)
        for k, v in opt.state[p].items():
            assert torch.equal(torch.as_tensor(v), state[id(p)][k])


@pytest.mark.parametrize("first", [True, False], ids=["first step", "later step"])
def test_adagrad_weight_decay_with_sparse_gradients_raises_before_anything(first):
    """torch's RuntimeError; the dense parameter (its group is updated first) is not changed either."""
    model = Model(torch.float32)
    groups = model.groups()
    opt = genesis.optim.Adagrad([groups[1], {**groups[0], "weight_decay": 0.1}], lr=0.1)
    if not first:  # a step whose sparse gradients are absent caches the plans first
        opt.zero_grad()
        (model.dense**2).sum().backward()
        opt.step()
    opt.zero_grad()
    model.loss(0).backward()
    snapshot = _snapshot(model, opt)
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse gradients"):
        opt.step()
    _assert_unchanged(model, opt, snapshot)
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse gradients"):
        torch.optim.Adagrad(model.table.parameters(), weight_decay=0.1).step()


@pytest.mark.cuda
@pytest.mark.parametrize("rule", ["SGD", "Adagrad options"])
def test_cuda_row_updates_equal_torch(rule):
    """The same torch operations on the device: Adagrad coalesces first (bit for bit); SGD adds
    the uncoalesced entries, whose order on the GPU is the device's (within rounding)."""
    torch_cls, genesis_cls, kw = RULES[rule]
    a, b = Model(torch.float32, "cuda"), Model(torch.float32, "cuda")
    a_opt, b_opt = torch_cls(a.groups(), **kw), genesis_cls(b.groups(), **kw)
    _train(a, a_opt, STEPS)
    _train(b, b_opt, STEPS)
    for name, pa in a.named_parameters():
        pb = b.get_parameter(name)
        if name == "dense" or rule == "SGD":  # the dense group: genesis's CUDA kernel, not torch's
            torch.testing.assert_close(pa.detach(), pb.detach(), rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(pa.detach(), pb.detach())


@pytest.mark.parametrize("rule", ["SGD", "Adagrad"])
def test_deferred_clip_grad_value_clamps_each_elements_sum(rule):
    """optimizer.clip_grad_value_ clamps a sparse gradient's summed entries (the clamp of the
    gradient, whatever its repeated rows): torch's step on the coalesced, clamped gradient."""
    torch_cls, genesis_cls, kw = RULES[rule]
    a, b = Model(torch.float32), Model(torch.float32)
    a_opt, b_opt = torch_cls(a.groups(), **kw), genesis_cls(b.groups(), **kw)
    for k in range(10):
        for model, opt in ((a, a_opt), (b, b_opt)):
            opt.zero_grad()
            (model.loss(k) * 40).backward()  # large enough for the clamp to bite
        for p in (a.table.weight, a.bag.weight):
            if p.grad is not None:
                g = p.grad.coalesce()
                p.grad = torch.sparse_coo_tensor(g.indices(), g.values().clamp(-0.05, 0.05), g.shape)
        a.dense.grad.clamp_(-0.05, 0.05)
        b_opt.clip_grad_value_(0.05)
        a_opt.step()
        b_opt.step()
    _assert_same(a, b, a_opt, b_opt)


def test_clip_grad_norm_refuses_sparse_gradients_by_name():
    """As torch's clip_grad_norm_ (NotImplementedError for sparse tensors), with a message."""
    model = Model(torch.float32)
    opt = genesis.optim.SGD(model.groups(), lr=0.1)
    model.loss(0).backward()
    with pytest.raises(TypeError, match=r"gradient 1 is sparse"):
        genesis.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    with pytest.raises(TypeError, match="is sparse"):
        opt.clip_grad_norm_(1.0)


@pytest.mark.parametrize("sparse_dim", [1, 2])
@pytest.mark.parametrize(
    "rule,kw", [("SGD", dict(lr=0.1)), ("Adagrad", dict(lr=0.1)), ("SGD", dict(lr=0.1, momentum=0.9))]
)
def test_any_sparse_dim(rule, kw, sparse_dim):
    """Gradients whose sparse dimensions are rows (as embeddings make them) or every dimension
    (dense.to_sparse()): row updates equal torch's, densified ones the dense gradient's, over
    steps whose entries change (the kept dense buffer's previous rows are cleared)."""
    torch_cls = getattr(torch.optim, rule)
    genesis_cls = getattr(genesis.optim, rule)
    densify = "momentum" in kw
    gen = torch.Generator().manual_seed(4)
    start = torch.randn(30, 6, generator=gen)
    params = [torch.nn.Parameter(start.clone()) for _ in range(3)]
    ref = (genesis_cls if densify else torch_cls)([params[0]], **kw)
    ours = genesis_cls([params[1]], **kw)
    for _ in range(12):
        grad = torch.zeros(30, 6)
        rows = torch.randint(0, 30, (5,), generator=gen)
        grad[rows] = torch.randn(5, 6, generator=gen)
        grad[rows[:2], :3] = 0  # zeros inside stored rows
        sparse = grad.to_sparse(sparse_dim)
        params[0].grad = grad if densify else sparse.clone()
        params[1].grad = sparse
        ref.step()
        ours.step()
    _equal(params[0].detach(), params[1].detach())
