"""genesis.optim.SparseAdam: against torch.optim.SparseAdam on nn.Embedding(sparse=True)
models (two groups, a frozen and an empty parameter), against a float64 NumPy reference for
NumPy parameters, state_dicts crossing between the two libraries, and torch's errors."""

import copy
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import genesis  # noqa: E402
from genesis.nn import Parameter  # noqa: E402

STEPS = 25
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-10)}
NP_TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-10)}
DENSE_ERROR = "SparseAdam does not support dense gradients, please consider Adam instead"


class EmbeddingModel(torch.nn.Module):
    """Two sparse embeddings (one param group each), a frozen one (its grad stays None), an
    empty one (0 columns: its sparse gradient holds no values) and a fixed dense head."""

    def __init__(self, dtype):
        super().__init__()
        torch.manual_seed(0)
        self.words = torch.nn.Embedding(30, 4, sparse=True, dtype=dtype)
        self.tags = torch.nn.Embedding(7, 3, sparse=True, dtype=dtype)
        self.frozen = torch.nn.Embedding(5, 2, sparse=True, dtype=dtype)
        self.frozen.weight.requires_grad_(False)
        self.empty = torch.nn.Embedding(6, 0, sparse=True, dtype=dtype)
        self.head = torch.nn.Linear(9, 1, dtype=dtype).requires_grad_(False)

    def forward(self, words, tags):
        features = torch.cat([self.words(words), self.tags(tags), self.frozen(tags % 5), self.empty(tags % 6)], dim=1)
        return self.head(torch.tanh(features))

    def param_groups(self):
        return [
            {"params": [self.words.weight, self.frozen.weight]},
            {"params": [self.tags.weight, self.empty.weight], "lr": 0.05, "betas": (0.8, 0.99)},
        ]


def batches(steps):
    gen = torch.Generator().manual_seed(1)
    # Repeated indices within a batch: the sparse gradients hold duplicates to coalesce.
    return [
        (torch.randint(0, 30, (12,), generator=gen), torch.randint(0, 7, (12,), generator=gen)) for _ in range(steps)
    ]


def train(model, opt, data):
    for words, tags in data:
        opt.zero_grad()
        model(words, tags).pow(2).sum().backward()
        opt.step()


def twin(dtype, maximize=False):
    models = [EmbeddingModel(dtype), EmbeddingModel(dtype)]
    opts = [
        torch.optim.SparseAdam(models[0].param_groups(), lr=0.01, maximize=maximize),
        genesis.optim.SparseAdam(models[1].param_groups(), lr=0.01, maximize=maximize),
    ]
    return models, opts


def assert_same_training(models, opts, dtype):
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a, **TOL[dtype])
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        theirs, ours = opts[0].state.get(p, {}), opts[1].state.get(q, {})
        assert set(ours) == set(theirs)
        if ours:
            assert ours["step"] == theirs["step"] and isinstance(ours["step"], int)
            torch.testing.assert_close(ours["exp_avg"], theirs["exp_avg"], **TOL[dtype])
            torch.testing.assert_close(ours["exp_avg_sq"], theirs["exp_avg_sq"], **TOL[dtype])


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_matches_torch_on_embeddings(dtype, maximize):
    models, opts = twin(dtype, maximize)
    data = batches(STEPS)
    for model, opt in zip(models, opts):
        train(model, opt, data)
    assert_same_training(models, opts, dtype)
    model, opt = models[1], opts[1]
    assert model.frozen.weight not in opt.state
    assert opt.state[model.empty.weight]["step"] == STEPS  # counted, though nothing to update
    assert opt.state[model.tags.weight]["step"] == STEPS


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_16_bit_parameters_give_torch_bits(dtype):
    """The same operations in the same order: the same bits, in the parameters' own dtype."""
    models, opts = twin(dtype)
    data = batches(10)
    for model, opt in zip(models, opts):
        train(model, opt, data)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    assert opts[1].state[models[1].words.weight]["exp_avg"].dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_several_sparse_dimensions_like_torch(dtype):
    """A fully sparse gradient of a 3-d parameter addresses single elements."""
    gen = torch.Generator().manual_seed(2)
    start = torch.rand(4, 3, 2, generator=gen, dtype=dtype)
    params = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    opts = [torch.optim.SparseAdam([params[0]], lr=0.1), genesis.optim.SparseAdam([params[1]], lr=0.1)]
    for _ in range(STEPS):
        mask = torch.rand(4, 3, 2, generator=gen) < 0.3
        grad = (torch.randn(4, 3, 2, generator=gen, dtype=dtype) * mask).to_sparse()
        for p, opt in zip(params, opts):
            p.grad = grad.clone()
            opt.step()
    torch.testing.assert_close(params[1], params[0], **TOL[dtype])
    assert not torch.equal(params[1], start)


# ------------------------------------------------------------------ NumPy and a reference
def reference_sparse_adam(p0, grads, lr, betas, eps, maximize=False):
    """float64 SparseAdam from its formula: Adam on the rows a gradient touches (duplicates
    summed); every step counts, an empty gradient changes nothing else."""
    p = p0.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    b1, b2 = betas
    for t, (indices, values) in enumerate(grads, start=1):
        rows = np.unique(indices)
        if rows.size == 0:
            continue
        g = np.zeros_like(p)
        np.add.at(g, indices, values.astype(np.float64))
        g = -g if maximize else g
        m[rows] = b1 * m[rows] + (1 - b1) * g[rows]
        v[rows] = b2 * v[rows] + (1 - b2) * g[rows] ** 2
        p[rows] -= lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m[rows] / (np.sqrt(v[rows]) + eps)
    return p


def sparse_grad(indices, values):
    """The torch sparse gradient holding NumPy (indices, values) rows of a (20, 3) parameter."""
    return torch.sparse_coo_tensor(
        torch.from_numpy(indices)[None], torch.from_numpy(values), (20, 3), check_invariants=True
    )


def numpy_grads(dtype, steps, rows=20, cols=3):
    rng = np.random.default_rng(3)
    grads = []
    for t in range(steps):
        n = 0 if t == 4 else int(rng.integers(1, 8))
        indices = rng.integers(0, rows, n)  # duplicates included
        grads.append((indices, rng.standard_normal((n, cols)).astype(dtype)))
    return grads


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_numpy_matches_float64_reference_and_torch(dtype, maximize):
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal((20, 3)).astype(dtype)
    grads = numpy_grads(dtype, STEPS)
    ours = Parameter(p0.copy())
    theirs = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    options = dict(lr=0.02, betas=(0.85, 0.995), eps=1e-6, maximize=maximize)
    opt, topt = genesis.optim.SparseAdam([ours], **options), torch.optim.SparseAdam([theirs], **options)
    for indices, values in grads:
        ours.grad = (indices, values)
        theirs.grad = sparse_grad(indices, values)
        opt.step()
        topt.step()
    expected = reference_sparse_adam(p0, grads, **options)
    np.testing.assert_allclose(ours.data, expected, **NP_TOL[dtype])
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), **NP_TOL[dtype])
    state = opt.state[ours]
    assert state["step"] == STEPS and state["exp_avg"].dtype == dtype
    np.testing.assert_allclose(state["exp_avg_sq"], topt.state[theirs]["exp_avg_sq"].numpy(), **NP_TOL[dtype])


def test_numpy_gradient_checks_raise_before_changes():
    p = Parameter(np.ones((5, 2)))
    q = Parameter(np.ones((4, 2)))
    opt = genesis.optim.SparseAdam([p, q])
    cases = [
        (np.ones((4, 2)), RuntimeError, re.escape(DENSE_ERROR)),
        ([np.array([0]), np.ones((1, 2))], TypeError, "pair"),
        ((np.array([[0]]), np.ones((1, 2))), ValueError, "1-d integer array"),
        ((np.array([0.0]), np.ones((1, 2))), ValueError, "1-d integer array"),
        ((np.array([0]), np.ones((1, 3))), ValueError, r"shape \(1, 2\) and dtype float64"),
        ((np.array([0]), np.ones((1, 2), np.float32)), ValueError, "dtype float64"),
        ((np.array([4]), np.ones((1, 2))), ValueError, r"in \[0, 4\)"),
    ]
    for bad, error, message in cases:
        p.grad = (np.array([1, 1]), np.ones((2, 2)))  # a valid gradient listed first
        q.grad = bad
        with pytest.raises(error, match=message):
            opt.step()
        assert len(opt.state) == 0 and (p.data == 1).all()


# ---------------------------------------------------------------------------- state_dict
def test_state_dict_crosses_to_torch_and_back():
    dtype = torch.float32
    models, opts = twin(dtype)
    data = batches(20)
    for model, opt in zip(models, opts):
        train(model, opt, data[:10])
    sd = opts[1].state_dict()
    assert sorted(sd["state"]) == [0, 2, 3] and isinstance(sd["state"][0]["step"], int)
    assert sd["param_groups"][1] == {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-8, "maximize": False, "params": [2, 3]}
    fresh = [EmbeddingModel(dtype), EmbeddingModel(dtype)]
    fresh[0].load_state_dict(models[1].state_dict())
    fresh[1].load_state_dict(models[0].state_dict())
    crossed = [torch.optim.SparseAdam(fresh[0].param_groups()), genesis.optim.SparseAdam(fresh[1].param_groups())]
    crossed[0].load_state_dict(copy.deepcopy(sd))
    crossed[1].load_state_dict(opts[0].state_dict())
    assert isinstance(crossed[1].state[fresh[1].words.weight]["step"], int)
    for model, opt in list(zip(models, opts)) + list(zip(fresh, crossed)):
        train(model, opt, data[10:])
    for model in models[1:] + fresh:
        for a, b in zip(models[0].parameters(), model.parameters()):
            torch.testing.assert_close(b, a, **TOL[dtype])


def test_numpy_loads_torch_state():
    p0 = np.random.default_rng(5).standard_normal((20, 3))
    theirs = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.SparseAdam([theirs], lr=0.1)
    grads = numpy_grads(np.float64, 10)
    for indices, values in grads[:5]:
        theirs.grad = sparse_grad(indices, values)
        topt.step()
    ours = Parameter(theirs.detach().numpy().copy())
    opt = genesis.optim.SparseAdam([ours], lr=0.1)
    opt.load_state_dict(topt.state_dict())
    assert isinstance(opt.state[ours]["exp_avg"], np.ndarray) and opt.state[ours]["step"] == 5
    for indices, values in grads[5:]:
        theirs.grad = sparse_grad(indices, values)
        topt.step()
        ours.grad = (indices, values)
        opt.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)


# -------------------------------------------------------------------------------- errors
def test_errors_as_torch():
    dense = torch.nn.Linear(3, 2)
    emb = torch.nn.Embedding(4, 2, sparse=True)
    sparse_param = torch.nn.Parameter(torch.zeros(3, 3).to_sparse())
    for cls in (torch.optim.SparseAdam, genesis.optim.SparseAdam):
        for kwargs, message in [
            (dict(lr=0.0), "Invalid learning rate: 0.0"),
            (dict(eps=0.0), "Invalid epsilon value: 0.0"),
            (dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
            (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
        ]:
            with pytest.raises(ValueError, match=re.escape(message)):
                cls([emb.weight], **kwargs)
        with pytest.raises(ValueError, match=re.escape("Sparse params at indices [[1, 0]]")):
            cls([{"params": [emb.weight]}, {"params": [sparse_param]}])
        opt = cls([emb.weight])
        assert opt.defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "maximize": False}
    # A dense gradient: torch's error, raised by genesis before any state or value changes.
    opt = genesis.optim.SparseAdam([emb.weight, dense.weight])
    emb(torch.tensor([1, 2])).sum().backward()
    dense(torch.ones(3)).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match=re.escape(DENSE_ERROR)):
        opt.step()
    assert len(opt.state) == 0 and torch.equal(emb.weight, before)


def test_closure_is_called_with_grad_enabled():
    emb = torch.nn.Embedding(4, 2, sparse=True)
    opt = genesis.optim.SparseAdam([emb.weight])
    losses = []

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        losses.append(emb(torch.tensor([0, 3])).sum())
        losses[-1].backward()
        return losses[-1]

    with torch.no_grad():
        assert opt.step(closure) is losses[0]
    assert opt.state[emb.weight]["step"] == 1


@pytest.mark.cuda
def test_cuda_matches_torch():
    dtype = torch.float32
    models = [EmbeddingModel(dtype).cuda(), EmbeddingModel(dtype).cuda()]
    opts = [
        torch.optim.SparseAdam(models[0].param_groups(), lr=0.01),
        genesis.optim.SparseAdam(models[1].param_groups(), lr=0.01),
    ]
    data = [(w.cuda(), t.cuda()) for w, t in batches(STEPS)]
    for model, opt in zip(models, opts):
        train(model, opt, data)
    assert_same_training(models, opts, dtype)


def test_torch_grad_scaler_unscales_for_it():
    """torch.amp.GradScaler unscales the sparse gradients itself (the class does not claim to
    divide by the scale in step()) and skips the steps with an inf, exactly as for torch's."""
    models, opts = twin(torch.float32)
    scalers = [torch.amp.GradScaler("cpu", init_scale=1024.0) for _ in models]
    for i, (words, tags) in enumerate(batches(8)):
        for model, opt, scaler in zip(models, opts, scalers):
            opt.zero_grad()
            loss = model(words, tags).pow(2).sum() * (float("inf") if i == 3 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    assert scalers[0].get_scale() == scalers[1].get_scale() == 512.0
    assert opts[1].state[models[1].words.weight]["step"] == 7  # the inf step was skipped
    assert_same_training(models, opts, torch.float32)


def test_refuses_a_scale_to_divide_by():
    """genesis.amp.GradScaler's fused protocol passes grad_scale; this step does not divide by
    it, so it says so instead of updating with scaled gradients."""
    emb = torch.nn.Embedding(4, 2, sparse=True)
    opt = genesis.optim.SparseAdam([emb.weight])
    emb(torch.tensor([1])).sum().backward()
    opt.grad_scale, opt.found_inf = 8.0, 0.0
    with pytest.raises(RuntimeError, match="unscale_"):
        opt.step()
    opt.grad_scale, opt.found_inf = None, 1.0
    opt.step()
    assert len(opt.state) == 0


def test_zero_grad_empties_numpy_pairs():
    p = Parameter(np.ones((5, 2), np.float32))
    opt = genesis.optim.SparseAdam([p])
    p.grad = (np.array([1, 3]), np.ones((2, 2), np.float32))
    opt.zero_grad(set_to_none=False)
    indices, values = p.grad
    assert indices.shape == (0,) and values.shape == (0, 2) and values.dtype == np.float32
    opt.step()  # an empty gradient: counted, nothing else changes (torch's zeroed sparse grad)
    assert opt.state[p]["step"] == 1 and (p.data == 1).all()
    opt.zero_grad()
    assert p.grad is None
