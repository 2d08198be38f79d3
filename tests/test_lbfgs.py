"""genesis.optim.LBFGS: against torch.optim.LBFGS on torch parameters (an MLP with a frozen
and an empty parameter, with and without the strong-Wolfe line search), against a float64
NumPy reference and against torch on genesis.nn.Parameter arrays, state_dicts crossing between
the two libraries, and torch's errors."""

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import genesis  # noqa: E402
from genesis.nn import Parameter  # noqa: E402

STEPS = 20
LINE_SEARCHES = [None, "strong_wolfe"]
TORCH_TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-10)}
NUMPY_TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-10)}
DTYPES = [torch.float32, torch.float64]
NP_DTYPES = [np.float32, np.float64]


# --------------------------------------------------------------------- torch parameters
class MLP(torch.nn.Module):
    """Two layers, plus a frozen parameter (its grad stays None) and an empty one."""

    def __init__(self, dtype):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.fc1 = torch.nn.Linear(4, 6, dtype=dtype)
        self.fc2 = torch.nn.Linear(6, 2, dtype=dtype)
        with torch.no_grad():
            for p in (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=dtype) - 0.5)
        self.frozen = torch.nn.Parameter(torch.ones(3, dtype=dtype), requires_grad=False)
        self.empty = torch.nn.Parameter(torch.zeros(0, dtype=dtype))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x))) * self.frozen[0] + self.empty.sum()


def data(dtype):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=gen, dtype=dtype), torch.randn(16, 2, generator=gen, dtype=dtype)


def closure_for(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    return closure


def run_side_by_side(dtype, steps, **options):
    x, y = data(dtype)
    models = [MLP(dtype), MLP(dtype)]
    opts = [
        torch.optim.LBFGS(list(models[0].parameters()), **options),
        genesis.optim.LBFGS(list(models[1].parameters()), **options),
    ]
    for _ in range(steps):
        losses = [opt.step(closure_for(m, opt, x, y)) for m, opt in zip(models, opts)]
        torch.testing.assert_close(losses[1], losses[0], **TORCH_TOL[dtype])
    return models, opts, (x, y)


def assert_models_close(a, b, dtype):
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, **TORCH_TOL[dtype])


def first_state(opt):
    return opt.state[opt.param_groups[0]["params"][0]]


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_matches_torch_on_an_mlp(dtype, line_search_fn):
    models, opts, _ = run_side_by_side(dtype, STEPS, lr=0.8, max_iter=4, history_size=3, line_search_fn=line_search_fn)
    assert_models_close(*models, dtype)
    theirs, ours = (first_state(o) for o in opts)
    assert (
        set(ours)
        == set(theirs)
        == {
            "func_evals",
            "n_iter",
            "d",
            "t",
            "old_dirs",
            "old_stps",
            "ro",
            "H_diag",
            "prev_flat_grad",
            "prev_loss",
            "al",
        }
    )
    assert ours["n_iter"] == theirs["n_iter"] > STEPS
    assert ours["func_evals"] == theirs["func_evals"]
    assert len(ours["old_dirs"]) == len(theirs["old_dirs"]) == 3  # the history wrapped
    for name in ("d", "prev_flat_grad"):
        torch.testing.assert_close(ours[name], theirs[name], **TORCH_TOL[dtype])
    torch.testing.assert_close(torch.stack(ours["ro"]), torch.stack(theirs["ro"]), **TORCH_TOL[dtype])
    assert torch.equal(models[1].frozen, torch.ones(3, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_line_search_zooms_like_torch(dtype):
    """A large lr makes the first trial overshoot, so the line search interpolates."""
    models, opts, _ = run_side_by_side(dtype, 5, lr=20.0, max_iter=10, line_search_fn="strong_wolfe")
    assert_models_close(*models, dtype)
    theirs, ours = (first_state(o) for o in opts)
    assert ours["func_evals"] == theirs["func_evals"] > ours["n_iter"]  # more evaluations than iterations


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_16_bit_parameters_give_torch_bits(dtype, line_search_fn):
    """The same operations in the same order on torch tensors: the same bits, in the
    parameters' own dtype (as torch, L-BFGS has no mixed-precision options)."""
    x, y = (t.to(dtype) for t in data(torch.float32))
    models = [MLP(dtype), MLP(dtype)]
    opts = [
        cls(list(m.parameters()), max_iter=4, line_search_fn=line_search_fn)
        for cls, m in zip((torch.optim.LBFGS, genesis.optim.LBFGS), models)
    ]
    for _ in range(5):
        for model, opt in zip(models, opts):
            opt.step(closure_for(model, opt, x, y))
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    assert first_state(opts[1])["d"].dtype == dtype


def test_sparse_gradients_count_densified_like_torch():
    models, opts = [], []
    for cls in (torch.optim.LBFGS, genesis.optim.LBFGS):
        torch.manual_seed(0)
        models.append(torch.nn.Sequential(torch.nn.Embedding(10, 3, sparse=True), torch.nn.Linear(3, 1)))
        opts.append(cls(models[-1].parameters(), lr=0.5, max_iter=5, line_search_fn="strong_wolfe"))
    words, target = torch.tensor([1, 4, 4, 7]), torch.tensor([[1.0], [0.0], [0.0], [-1.0]])
    for _ in range(5):
        for model, opt in zip(models, opts):
            opt.step(closure_for(model, opt, words, target))
    assert models[1][0].weight.grad.is_sparse
    assert_models_close(*models, torch.float32)


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["complex64", "complex128"])
def test_complex_parameters_give_torch_bits(dtype, line_search_fn):
    """A complex parameter takes part as its real view (two elements per value), as in torch:
    the same bits beside a real parameter and one without a gradient, and the state_dicts
    cross between the libraries mid-run."""
    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(4, 3, dtype=dtype, generator=gen), torch.randn(5, dtype=dtype.to_real(), generator=gen)]
    init.append(torch.randn(2, dtype=dtype, generator=gen))  # never gets a gradient
    matrix = torch.randn(12, 12, dtype=dtype, generator=gen)
    options = dict(lr=0.5, max_iter=4, history_size=3, line_search_fn=line_search_fn)
    runs = []
    for cls in (torch.optim.LBFGS, genesis.optim.LBFGS):
        params = [torch.nn.Parameter(x.clone()) for x in init]
        runs.append((params, cls(params, **options)))

    def closure_of(params, opt):
        def closure():
            opt.zero_grad()
            loss = ((matrix @ params[0].reshape(-1) - 1).abs() ** 2).sum() + (params[1] ** 4).sum()
            loss.backward()
            return loss

        return closure

    for step in range(5):
        for params, opt in runs:
            opt.step(closure_of(params, opt))
        if step == 1:  # each continues from the other's state
            (tp, topt), (gp, gopt) = runs
            saved = [copy.deepcopy(topt.state_dict()), copy.deepcopy(gopt.state_dict())]
            runs = [(tp, torch.optim.LBFGS(tp, **options)), (gp, genesis.optim.LBFGS(gp, **options))]
            runs[0][1].load_state_dict(saved[1])
            runs[1][1].load_state_dict(saved[0])
    for a, b in zip(runs[0][0], runs[1][0]):
        assert torch.equal(a, b)
    assert first_state(runs[1][1])["d"].dtype == dtype.to_real() and first_state(runs[1][1])["d"].numel() == 33


def test_stops_at_tolerance_grad_like_torch():
    models, opts, (x, y) = run_side_by_side(torch.float64, 3, tolerance_grad=1e3)
    for opt in opts:
        assert dict(first_state(opt)) == {"func_evals": 3, "n_iter": 0}
    assert_models_close(*models, torch.float64)


# --------------------------------------------------------------------- NumPy parameters
class Problem:
    """f(z) = sum(softplus(A z - c)) + 0.25 |z|^2 over z = [x1 (4,), x2 (2, 3)]; an empty and a
    frozen parameter join the list. The closures compute in float64 from the parameters'
    values and store the gradient in the parameters' dtype, so that NumPy and torch
    parameters receive the same gradients and only the optimizers' own arithmetic differs."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.A = rng.standard_normal((12, 10))
        self.c = rng.standard_normal(12)
        self.z0 = rng.standard_normal(10)

    def value_grad(self, z):
        u = self.A @ z - self.c
        return np.sum(np.logaddexp(0, u)) + 0.25 * (z @ z), self.A.T @ (1 / (1 + np.exp(-u))) + 0.5 * z

    def numpy_params(self, dtype):
        z0 = self.z0.astype(dtype)
        return [
            Parameter(z0[:4].copy()),
            Parameter(np.zeros(0, dtype)),
            Parameter(z0[4:].reshape(2, 3).copy()),
            Parameter(np.ones(2, dtype)),
        ]

    def numpy_closure(self, params):
        x1, empty, x2, frozen = params

        def closure():
            f, g = self.value_grad(numpy_z(params).astype(np.float64))
            g = g.astype(x1.data.dtype)
            x1.grad, empty.grad, x2.grad = g[:4].copy(), np.zeros(0, g.dtype), g[4:].reshape(2, 3)
            return f

        return closure

    def torch_params(self, dtype):
        params = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in self.numpy_params(dtype)]
        params[3].requires_grad_(False)
        return params

    def torch_closure(self, params):
        x1, empty, x2, frozen = params

        def closure():
            z = torch.cat([x1.detach(), x2.detach().reshape(-1)]).double().numpy()
            f, g = self.value_grad(z)
            g = torch.from_numpy(g).to(x1.dtype)
            x1.grad, empty.grad, x2.grad = g[:4].clone(), torch.zeros(0, dtype=g.dtype), g[4:].reshape(2, 3)
            return torch.tensor(f)

        return closure


def numpy_z(params):
    return np.concatenate([params[0].data, params[2].data.reshape(-1)])


def reference_lbfgs(value_grad, z, steps, lr, max_iter, history_size, tolerance_grad=1e-7, tolerance_change=1e-9):
    """Fixed-step L-BFGS in float64, from the algorithm as torch documents it: steepest descent
    scaled to a unit L1 step first, then the two-loop recursion over the last history_size
    pairs (s, y) with ys > 1e-10 and H0 = ys/yy; max_iter iterations per step, the last one not
    re-evaluated; the history carries over between steps."""
    z = z.astype(np.float64).copy()
    max_eval = max_iter * 5 // 4
    history, H0, d, t, prev_g, iterations = [], 1.0, None, None, None, 0
    for _ in range(steps):
        f, g = value_grad(z)
        evals = 1
        if np.abs(g).max() <= tolerance_grad:
            continue
        for k in range(1, max_iter + 1):
            iterations += 1
            if iterations == 1:
                d = -g
            else:
                y, s = g - prev_g, d * t
                if y @ s > 1e-10:
                    history = (history + [(s, y, 1 / (y @ s))])[-history_size:]
                    H0 = (y @ s) / (y @ y)
                q, alphas = -g, []
                for s_i, y_i, rho in reversed(history):
                    alphas.append(rho * (s_i @ q))
                    q = q - alphas[-1] * y_i
                d = H0 * q
                for (s_i, y_i, rho), a in zip(history, reversed(alphas)):
                    d = d + (a - rho * (y_i @ d)) * s_i
            prev_g, prev_f = g, f
            t = min(1.0, 1.0 / np.abs(g).sum()) * lr if iterations == 1 else lr
            if g @ d > -tolerance_change:
                break
            z = z + t * d
            if k == max_iter:
                break
            f, g = value_grad(z)
            evals += 1
            if (
                evals >= max_eval
                or np.abs(g).max() <= tolerance_grad
                or np.abs(t * d).max() <= tolerance_change
                or abs(f - prev_f) < tolerance_change
            ):
                break
    return z


@pytest.mark.parametrize("dtype", NP_DTYPES, ids=["float32", "float64"])
def test_numpy_matches_float64_reference(dtype):
    problem = Problem()
    params = problem.numpy_params(dtype)
    opt = genesis.optim.LBFGS(params, lr=0.1, max_iter=3, history_size=4)
    closure = problem.numpy_closure(params)
    for _ in range(25):
        opt.step(closure)
    expected = reference_lbfgs(problem.value_grad, problem.z0, 25, lr=0.1, max_iter=3, history_size=4)
    np.testing.assert_allclose(numpy_z(params), expected, **NUMPY_TOL[dtype])
    assert params[3].data.tolist() == [1.0, 1.0]  # frozen: no gradient, no change
    state = opt.state[params[0]]
    assert state["n_iter"] == 50 and len(state["old_dirs"]) == 4  # max_eval (3) ends each step
    assert isinstance(state["d"], np.ndarray) and state["d"].dtype == dtype and state["d"].shape == (12,)
    assert state["d"][-2:].tolist() == [0.0, 0.0]  # the frozen parameter's part
    assert np.asarray(state["ro"][0]).dtype == dtype


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", NP_DTYPES, ids=["float32", "float64"])
def test_numpy_matches_torch(dtype, line_search_fn):
    problem = Problem()
    ours = problem.numpy_params(dtype)
    theirs = problem.torch_params(dtype)
    options = dict(lr=0.1, max_iter=3, history_size=4, line_search_fn=line_search_fn)
    opt = genesis.optim.LBFGS(ours, **options)
    topt = torch.optim.LBFGS(theirs, **options)
    closure, tclosure = problem.numpy_closure(ours), problem.torch_closure(theirs)
    for _ in range(STEPS):
        np.testing.assert_allclose(float(opt.step(closure)), topt.step(tclosure).item(), **NUMPY_TOL[dtype])
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **NUMPY_TOL[dtype])
    assert opt.state[ours[0]]["func_evals"] == topt.state[theirs[0]]["func_evals"]


# ---------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_state_dict_crosses_to_torch_and_back(line_search_fn):
    dtype = torch.float64
    options = dict(lr=0.8, max_iter=3, history_size=4, line_search_fn=line_search_fn)
    models, opts, (x, y) = run_side_by_side(dtype, 4, **options)
    sd = opts[1].state_dict()
    assert list(sd["state"]) == [0] and sd["param_groups"][0]["params"] == list(range(6))
    assert {k: v for k, v in sd["param_groups"][0].items() if k != "params"} == dict(
        options, max_eval=3 * 5 // 4, tolerance_grad=1e-7, tolerance_change=1e-9
    )
    # genesis -> torch, torch -> genesis; each continues as the original pair does.
    torch_model, genesis_model = MLP(dtype), MLP(dtype)
    torch_model.load_state_dict(models[1].state_dict())
    genesis_model.load_state_dict(models[0].state_dict())
    torch_opt = torch.optim.LBFGS(list(torch_model.parameters()), **options)
    torch_opt.load_state_dict(copy.deepcopy(sd))
    genesis_opt = genesis.optim.LBFGS(list(genesis_model.parameters()), **options)
    genesis_opt.load_state_dict(opts[0].state_dict())
    assert first_state(genesis_opt)["d"] is not first_state(opts[0])["d"]  # copied, not aliased
    pairs = [(models[0], opts[0]), (models[1], opts[1]), (torch_model, torch_opt), (genesis_model, genesis_opt)]
    for _ in range(5):
        for model, opt in pairs:
            opt.step(closure_for(model, opt, x, y))
    for model, _ in pairs[1:]:
        assert_models_close(models[0], model, dtype)


def test_numpy_state_loads_from_torch_and_saves():
    problem = Problem()
    theirs = problem.torch_params(np.float64)
    options = dict(lr=0.7, max_iter=3, history_size=4, line_search_fn="strong_wolfe")
    topt = torch.optim.LBFGS(theirs, **options)
    tclosure = problem.torch_closure(theirs)
    for _ in range(3):
        topt.step(tclosure)
    ours = problem.numpy_params(np.float64)
    for p, tp in zip(ours, theirs):
        p.data[...] = tp.detach().numpy()
    opt = genesis.optim.LBFGS(ours, **options)
    opt.load_state_dict(topt.state_dict())
    state = opt.state[ours[0]]
    assert isinstance(state["prev_flat_grad"], np.ndarray) and isinstance(state["old_dirs"][0], np.ndarray)
    # Through a genesis checkpoint into a third optimizer.
    buffer = io.BytesIO()
    genesis.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed = problem.numpy_params(np.float64)
    for p, q in zip(resumed, ours):
        p.data[...] = q.data
    resumed_opt = genesis.optim.LBFGS(resumed, **options)
    resumed_opt.load_state_dict(genesis.load(buffer))
    closure, rclosure = problem.numpy_closure(ours), problem.numpy_closure(resumed)
    for _ in range(4):
        topt.step(tclosure)
        opt.step(closure)
        resumed_opt.step(rclosure)
    np.testing.assert_allclose(
        numpy_z(ours), numpy_z([Parameter(p.detach().numpy()) for p in theirs]), rtol=1e-10, atol=1e-10
    )
    np.testing.assert_array_equal(numpy_z(resumed), numpy_z(ours))


def test_load_state_dict_validates_before_changing():
    models, opts, _ = run_side_by_side(torch.float64, 2, max_iter=3)
    opt = opts[1]
    before = dict(first_state(opt))
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["d"] = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="'d' holds a vector of shape"):
        opt.load_state_dict(sd)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["params"] = [0, 1]
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(sd)
    assert dict(first_state(opt)) == before and opt.param_groups[0]["max_iter"] == 3


# -------------------------------------------------------------------------------- errors
def test_errors_as_torch():
    w = torch.nn.Parameter(torch.ones(3))
    v = torch.nn.Parameter(torch.ones(2))
    for cls in (torch.optim.LBFGS, genesis.optim.LBFGS):
        with pytest.raises(ValueError, match="doesn't support per-parameter options"):
            cls([{"params": [w]}, {"params": [v]}])
        with pytest.raises(ValueError, match="Invalid learning rate: -1"):
            cls([w], lr=-1)
        with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
            cls([w], lr=torch.ones(2))
        opt = cls([w])
        assert opt.defaults["max_eval"] == 25 and opt.defaults["history_size"] == 100
        with pytest.raises(TypeError):
            opt.step()  # the closure is required
    with pytest.raises(ValueError, match="one library"):
        genesis.optim.LBFGS([w, Parameter(np.ones(2))])
    opt = genesis.optim.LBFGS([w])
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step(None)
    assert len(opt.state) == 0


def test_unknown_line_search_raises_before_anything_changes():
    w = torch.nn.Parameter(torch.ones(3))
    opt = genesis.optim.LBFGS([w], line_search_fn="backtracking")
    calls = []

    def closure():
        calls.append(1)
        return (w**2).sum()

    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        opt.step(closure)
    assert calls == [] and len(opt.state) == 0 and torch.equal(w, torch.ones(3))


def test_numpy_gradient_must_match_its_parameter():
    p = Parameter(np.ones(3))
    opt = genesis.optim.LBFGS([p])

    def closure():
        p.grad = np.ones(3, np.float32)
        return 1.0

    with pytest.raises(TypeError, match="dtype"):
        opt.step(closure)
    assert p.data.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.cuda
@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_cuda_matches_torch(line_search_fn):
    dtype = torch.float64
    x, y = (t.cuda() for t in data(dtype))
    models = [MLP(dtype).cuda(), MLP(dtype).cuda()]
    options = dict(lr=0.8, max_iter=4, history_size=3, line_search_fn=line_search_fn)
    opts = [
        torch.optim.LBFGS(list(models[0].parameters()), **options),
        genesis.optim.LBFGS(list(models[1].parameters()), **options),
    ]
    for _ in range(10):
        for m, opt in zip(models, opts):
            opt.step(closure_for(m, opt, x, y))
    assert_models_close(*models, dtype)
    assert first_state(opts[1])["d"].is_cuda


def test_grad_scaler_protocol():
    """A scale to divide by is refused (the step does not unscale); an inf found by the scaler
    skips the step without calling the closure."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = genesis.optim.LBFGS([w])
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    opt.grad_scale, opt.found_inf = 8.0, 0.0
    with pytest.raises(RuntimeError, match="unscale_"):
        opt.step(closure)
    opt.grad_scale, opt.found_inf = None, 1.0
    assert opt.step(closure) is None
    assert calls == [] and torch.equal(w, torch.ones(3)) and not opt._step_supports_amp_scaling
