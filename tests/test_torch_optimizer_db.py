"""torch's own optimizer test inputs, pointed at genesis.

torch ships, inside the installed package, the database its optimizer tests are driven by
(`torch.testing._internal.common_optimizers.optim_db`: one OptimizerInfo per optimizer, with
constructor inputs and error inputs). Every genesis class that torch also has runs here:
- every error input gives torch's exception type and message (at construction or at step);
- every constructor input trains beside torch's class on the same model and gradients for 25
  steps, float32 and float64, with the parity tolerances of the rest of the suite, and the
  state_dict of each loads into the other.
- every constructor input also trains complex64 parameters beside torch's class (torch updates
  them as their real views), the state_dicts crossing both ways;
- every input with torch's global `differentiable=True` flag added (torch's
  `_get_optim_inputs_including_global_cliquey_kwargs`) backpropagates through 3 steps
  (MAML-style: each gradient taken with create_graph=True) to the same values and the same
  gradient of the initial parameters as torch's class, float64.
Inputs that cannot apply to genesis are listed in NOT_APPLICABLE with the reason, one line each.
"""

import copy
import re

import pytest

torch = pytest.importorskip("torch")
common = pytest.importorskip("torch.testing._internal.common_optimizers")

import genesis.optim  # noqa: E402

OptimizerErrorEnum = common.OptimizerErrorEnum
INFOS = [info for info in common.optim_db if hasattr(genesis.optim, info.optim_cls.__name__)]
STEPS = 25
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}

# (optimizer, input description) -> why the input cannot apply to genesis.
NOT_APPLICABLE = {}


def _why_not(name, desc, kwargs):
    return NOT_APPLICABLE.get((name, desc))


def _error_cases():
    for info in INFOS:
        name = info.optim_cls.__name__
        for i, ei in enumerate(info.optim_error_inputs_func(device="cpu", dtype=torch.float32)):
            yield pytest.param(info, ei, id=f"{name}-{i}-{ei.optimizer_error_input.desc}")


def _input_cases():
    for info in INFOS:
        name = info.optim_cls.__name__
        for dtype in (torch.float32, torch.float64):
            for oi in info.optim_inputs_func(device="cpu", dtype=dtype):
                yield pytest.param(info, oi, dtype, id=f"{name}-{oi.desc}-{str(dtype)[6:]}")


def _genesis_class(info):
    return getattr(genesis.optim, info.optim_cls.__name__)


def _sample_params(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(2, 2, dtype=dtype)), torch.nn.Parameter(torch.randn(2, dtype=dtype))]


def _raises(cls, ei):
    """Run one error input against `cls` the way torch's test_errors does."""
    oi = ei.optimizer_error_input
    params = oi.params if oi.params is not None else _sample_params()
    if ei.error_on == OptimizerErrorEnum.STEP_ERROR:
        opt = cls(params, **oi.kwargs)
        for p in params if isinstance(params, list) else [params]:
            if isinstance(p, torch.Tensor):
                p.grad = torch.rand_like(p)
        with pytest.raises(ei.error_type, match=ei.error_regex):
            opt.step()
    elif issubclass(ei.error_type, Warning):
        with pytest.warns(ei.error_type, match=ei.error_regex):
            cls(params, **oi.kwargs)
    else:
        with pytest.raises(ei.error_type, match=ei.error_regex):
            cls(params, **oi.kwargs)


@pytest.mark.parametrize("info,ei", list(_error_cases()))
def test_error_inputs_give_torchs_errors(info, ei):
    _raises(info.optim_cls, ei)  # the input really is an error for torch
    _raises(_genesis_class(info), ei)


# ------------------------------------------------------------------------ training parity
def _model(name, dtype):
    torch.manual_seed(1)
    if name == "SparseAdam":
        return torch.nn.Embedding(10, 3, sparse=True).to(dtype)
    bias = name != "Muon"  # Muon takes 2-D parameters only
    return torch.nn.Sequential(torch.nn.Linear(4, 5, bias=bias), torch.nn.Tanh(), torch.nn.Linear(5, 2, bias=bias)).to(
        dtype
    )


def _loss(name, model, step, dtype):
    gen = torch.Generator().manual_seed(100 + step)
    if name == "SparseAdam":
        idx = torch.randint(0, 10, (6,), generator=gen)
        return (model(idx) ** 2).sum()
    x = torch.randn(8, 4, generator=gen, dtype=dtype)
    return (model(x) ** 2).mean()


def _run(name, model, opt, dtype, steps, start=0):
    for k in range(start, start + steps):

        def closure(k=k):
            opt.zero_grad()
            loss = _loss(name, model, k, dtype)
            loss.backward()
            return loss

        if name == "LBFGS":
            opt.step(closure)
        else:
            closure()
            opt.step()


def _assert_close(a_model, b_model, tol):
    for a, b in zip(a_model.parameters(), b_model.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), **tol)


@pytest.mark.parametrize("info,oi,dtype", list(_input_cases()))
def test_inputs_train_as_torch(info, oi, dtype):
    name = info.optim_cls.__name__
    why = _why_not(name, oi.desc, oi.kwargs)
    if why:
        pytest.skip(why)
    steps = 5 if name == "LBFGS" else STEPS
    tol = TOL[dtype]
    classes = {"torch": info.optim_cls, "genesis": _genesis_class(info)}
    runs = {}
    for lib, cls in classes.items():
        model = _model(name, dtype)
        opt = cls(model.parameters(), **copy.deepcopy(oi.kwargs))
        _run(name, model, opt, dtype, steps)
        runs[lib] = (model, opt)
    _assert_close(runs["genesis"][0], runs["torch"][0], tol)
    # Each state_dict loads into the other library's class; the resumed runs continue as the
    # uninterrupted ones.
    for src, dst in (("torch", "genesis"), ("genesis", "torch")):
        model, opt = runs[src]
        twin = copy.deepcopy(model)
        resumed = classes[dst](twin.parameters(), **copy.deepcopy(oi.kwargs))
        resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
        _run(name, twin, resumed, dtype, 3, start=steps)
        _run(name, model, opt, dtype, 3, start=steps)
        _assert_close(twin, model, tol)


# ------------------------------------------------------------------------ complex parameters
NO_COMPLEX = {"Adafactor", "Muon", "SparseAdam"}  # torch refuses complex parameters there too


def _complex_cases():
    for info in INFOS:
        name = info.optim_cls.__name__
        if name not in NO_COMPLEX:
            for oi in info.optim_inputs_func(device="cpu", dtype=torch.complex64):
                yield pytest.param(info, oi, id=f"{name}-{oi.desc}")


def _complex_run(opt, params, steps, start=0):
    """A complex least-squares problem (the loss is real): every rule sees real and imaginary
    parts move differently."""
    for k in range(start, start + steps):
        gen = torch.Generator().manual_seed(200 + k)
        x = torch.randn(6, 4, dtype=torch.complex64, generator=gen)

        def closure(x=x):
            opt.zero_grad()
            loss = (x @ params[0] + params[1] - 1).abs().pow(2).mean()
            loss.backward()
            return loss

        if isinstance(opt, (torch.optim.LBFGS, genesis.optim.LBFGS)):
            opt.step(closure)
        else:
            closure()
            opt.step()


@pytest.mark.parametrize("info,oi", list(_complex_cases()))
def test_inputs_train_complex_parameters_as_torch(info, oi):
    """torch updates a complex parameter as its real view, state complex; so does genesis,
    for every constructor input, and the state_dicts cross both ways."""
    name = info.optim_cls.__name__
    why = _why_not(name, oi.desc, oi.kwargs)
    if why:
        pytest.skip(why)
    steps = 5 if name == "LBFGS" else STEPS
    classes = {"torch": info.optim_cls, "genesis": _genesis_class(info)}
    gen = torch.Generator().manual_seed(7)
    init = [
        torch.randn(4, 3, dtype=torch.complex64, generator=gen),
        torch.randn(3, dtype=torch.complex64, generator=gen),
    ]
    runs = {}
    for lib, cls in classes.items():
        params = [torch.nn.Parameter(x.clone()) for x in init]
        opt = cls(params, **copy.deepcopy(oi.kwargs))
        _complex_run(opt, params, steps)
        runs[lib] = (params, opt)
    for a, b in zip(runs["genesis"][0], runs["torch"][0]):
        torch.testing.assert_close(a.detach(), b.detach(), **TOL[torch.float32])
    for src, dst in (("torch", "genesis"), ("genesis", "torch")):
        params, opt = runs[src]
        twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
        resumed = classes[dst](twin, **copy.deepcopy(oi.kwargs))
        resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
        _complex_run(resumed, twin, 3, start=steps)
        _complex_run(opt, params, 3, start=steps)
        for a, b in zip(twin, params):
            torch.testing.assert_close(a.detach(), b.detach(), **TOL[torch.float32])


# ------------------------------------------------------------------------ differentiable=True
def _differentiable_cases():
    for info in INFOS:
        if "differentiable" not in info.supported_impls:
            continue
        name = info.optim_cls.__name__
        for oi in common._get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float64, info):
            if oi.kwargs.get("differentiable"):
                yield pytest.param(info, oi, id=f"{name}-{oi.desc}")


def _unrolled(cls, kwargs, steps):
    """Train a non-leaf copy of fixed initial parameters for `steps` steps, each gradient taken
    with create_graph=True, and return the final parameters, the tensors of the final state
    and the gradient of a loss on them with respect to the initial parameters."""
    torch.manual_seed(3)
    leaves = [
        torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
        torch.randn(2, dtype=torch.float64, requires_grad=True),
    ]
    x = torch.randn(5, 3, dtype=torch.float64)
    params = [w.clone() for w in leaves]
    opt = cls(params, **copy.deepcopy(kwargs))
    for _ in range(steps):
        loss = torch.tanh(x @ params[0] + params[1]).pow(2).sum()
        for p, g in zip(params, torch.autograd.grad(loss, params, create_graph=True)):
            p.grad = g
        opt.step()
    state = [v for p in params for _, v in sorted(opt.state[p].items()) if isinstance(v, torch.Tensor)]
    meta = sum((p * p).sum() for p in params) + sum(v.sum() for v in state if v.requires_grad)
    return params, state, torch.autograd.grad(meta, leaves, allow_unused=True)


@pytest.mark.parametrize("info,oi", list(_differentiable_cases()))
def test_differentiable_inputs_backprop_as_torch(info, oi):
    assert oi.kwargs["differentiable"] is True
    for steps in (1, 3):
        try:
            expected = _unrolled(info.optim_cls, oi.kwargs, steps)
        except RuntimeError as e:
            # Some of torch's updates overwrite, in place, tensors their backward needs, so
            # they cannot be unrolled over several steps: genesis fails the same way.
            assert steps > 1, e
            with pytest.raises(RuntimeError, match=re.escape(str(e).split(":")[0])):
                _unrolled(_genesis_class(info), oi.kwargs, steps)
            continue
        got = _unrolled(_genesis_class(info), oi.kwargs, steps)
        for want, have in zip(expected, got):
            assert len(want) == len(have)
            for a, b in zip(want, have):
                if a is None:  # a gradient that does not reach the initial parameters
                    assert b is None
                    continue
                torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-10, atol=1e-12)
        assert all(g is not None for g in got[2])  # the step really was recorded


def test_every_torch_optimizer_genesis_has_is_covered():
    """The database really drives these tests (a rename on either side would silently empty
    them)."""
    names = {info.optim_cls.__name__ for info in INFOS}
    assert {"SGD", "Adam", "AdamW", "RMSprop"} <= names
    differentiable = {info.optim_cls.__name__ for info in INFOS if "differentiable" in info.supported_impls}
    assert {
        "SGD",
        "Adam",
        "AdamW",
        "RMSprop",
        "Adagrad",
        "Adadelta",
        "Adamax",
        "ASGD",
        "NAdam",
        "RAdam",
        "Rprop",
    } <= differentiable
    assert all(re.match(r"^[A-Z]", n) for n in names)
