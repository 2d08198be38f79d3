"""torch's own optimizer test inputs, pointed at genesis.

torch ships, inside the installed package, the database its optimizer tests are driven by
(`torch.testing._internal.common_optimizers.optim_db`: one OptimizerInfo per optimizer, with
constructor inputs and error inputs). Every genesis class that torch also has runs here:
- every error input gives torch's exception type and message (at construction or at step);
- every constructor input trains beside torch's class on the same model and gradients for 25
  steps, float32 and float64, with the parity tolerances of the rest of the suite, and the
  state_dict of each loads into the other.
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
NOT_APPLICABLE = {
    ("*", "differentiable"): "differentiable=True needs autograd through the step; genesis's "
                             "compiled step is not differentiable (not implemented)",
}


def _why_not(name, desc, kwargs):
    if kwargs.get("differentiable"):
        return NOT_APPLICABLE[("*", "differentiable")]
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
                yield pytest.param(info, oi, dtype,
                                   id=f"{name}-{oi.desc}-{str(dtype)[6:]}")


def _genesis_class(info):
    return getattr(genesis.optim, info.optim_cls.__name__)


def _sample_params(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(2, 2, dtype=dtype)),
            torch.nn.Parameter(torch.randn(2, dtype=dtype))]


def _raises(cls, ei):
    """Run one error input against `cls` the way torch's test_errors does."""
    oi = ei.optimizer_error_input
    params = oi.params if oi.params is not None else _sample_params()
    if ei.error_on == OptimizerErrorEnum.STEP_ERROR:
        opt = cls(params, **oi.kwargs)
        for p in (params if isinstance(params, list) else [params]):
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
    return torch.nn.Sequential(torch.nn.Linear(4, 5, bias=bias), torch.nn.Tanh(),
                               torch.nn.Linear(5, 2, bias=bias)).to(dtype)


def _loss(name, model, step, dtype):
    gen = torch.Generator().manual_seed(100 + step)
    if name == "SparseAdam":
        idx = torch.randint(0, 10, (6,), generator=gen)
        return (model(idx) ** 2).sum()
    x = torch.randn(8, 4, generator=gen, dtype=dtype)
    return (model(x) ** 2).mean()


def _run(name, model, opt, dtype, steps, start=0):
    for k in range(start, start + steps):
        def closure():
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


def test_every_torch_optimizer_genesis_has_is_covered():
    """The database really drives these tests (a rename on either side would silently empty
    them)."""
    names = {info.optim_cls.__name__ for info in INFOS}
    assert {"SGD", "Adam", "AdamW", "RMSprop"} <= names
    assert all(re.match(r"^[A-Z]", n) for n in names)
