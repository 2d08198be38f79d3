"""differentiable=True (genesis/optim/_differentiable.py): the step is recorded by autograd, as
torch's is, on genesis's own state, so the flag can be switched during training.

torch's OptimizerInfo inputs with the flag are unrolled against torch in
tests/test_torch_optimizer_db.py; here: gradcheck of one step with respect to the parameter,
the gradient and the state (as torch's own differentiable tests do), gradients with respect
to a tensor learning rate, switching the flag mid-training (float32 and float64, torch's
numbers), GradScaler's scale, the errors, and optimizers built over meta-device parameters.
"""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import genesis.optim  # noqa: E402
from genesis.nn import Parameter  # noqa: E402

# Every genesis class torch has a differentiable implementation of, with non-default options
# that reach every state entry.
CASES = {
    "SGD": dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False),
    "SGD-nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "Adam": dict(lr=0.1, weight_decay=0.01, amsgrad=True),
    "AdamW": dict(lr=0.1, weight_decay=0.1),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01),
    "Adagrad": dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "Adadelta": dict(lr=0.5, rho=0.8, weight_decay=0.01),
    "Adamax": dict(lr=0.1, weight_decay=0.01),
    "ASGD": dict(lr=0.1, t0=3, lambd=0.01),
    "NAdam": dict(lr=0.1, momentum_decay=0.01, decoupled_weight_decay=True, weight_decay=0.1),
    "RAdam": dict(lr=0.1, weight_decay=0.01),
    "Rprop": dict(lr=0.05, etas=(0.4, 1.3), step_sizes=(1e-4, 1.0)),
}


def _class(lib, case):
    return getattr(lib, case.split("-")[0])


def _one_step(cls, kwargs, p, grad, state, *state_values):
    """One step from the given state, returning the parameter and every state tensor that
    requires grad (torch's _diff_fn; the state values are arguments so gradcheck perturbs
    them)."""
    p = p.clone()
    p.grad = grad
    opt = cls([p], **kwargs)
    opt.state[p].update({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()})
    opt.step()
    return (p,) + tuple(v for _, v in sorted(opt.state[p].items()) if isinstance(v, torch.Tensor) and v.requires_grad)


def _warm_state(case):
    """The state torch has after two plain steps, its per-element tensors replaced by values
    in [0.1, 1.1) that require grad (as in torch's own tests: well away from the kinks, so that
    finite differences are accurate)."""
    torch.manual_seed(5)
    p = torch.randn(6, dtype=torch.float64)
    opt = _class(torch.optim, case)([p], **CASES[case])
    for _ in range(2):
        p.grad = torch.randn(6, dtype=torch.float64)
        opt.step()
    # RMSprop's centered variance square_avg - grad_avg^2 must stay positive.
    scale = {"grad_avg": 0.1}
    return {
        k: ((torch.rand(6, dtype=torch.float64) + 0.1) * scale.get(k, 1.0)).requires_grad_()
        if v.dim() > 0
        else v.detach().clone()
        for k, v in opt.state[p].items()
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_passes_gradcheck_and_matches_torch(case):
    kwargs = dict(CASES[case], differentiable=True)
    state = _warm_state(case)
    torch.manual_seed(6)
    p = torch.randn(6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(6, dtype=torch.float64, requires_grad=True)
    inputs = (p, grad, state, *state.values())
    genesis_cls, torch_cls = _class(genesis.optim, case), _class(torch.optim, case)
    assert torch.autograd.gradcheck(lambda *a: _one_step(genesis_cls, kwargs, *a), inputs)
    got = _one_step(genesis_cls, kwargs, *inputs)
    want = _one_step(torch_cls, kwargs, *inputs)
    assert len(got) == len(want) >= 2 or case.startswith("SGD")
    cotangents = [torch.randn_like(t) for t in want]
    leaves = [p, grad] + [v for v in state.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    g_got = torch.autograd.grad(got, leaves, cotangents, allow_unused=True)
    g_want = torch.autograd.grad(want, leaves, cotangents, allow_unused=True)
    for a, b in zip(g_got, g_want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_gradient_with_respect_to_a_tensor_learning_rate(name):
    """A learning rate given as a tensor that requires grad is differentiated too (torch's
    differentiable SGD, Adam and AdamW accept one)."""
    results = []
    for lib in (torch.optim, genesis.optim):
        torch.manual_seed(7)
        lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
        w = torch.randn(4, dtype=torch.float64, requires_grad=True)
        p = w.clone()
        opt = getattr(lib, name)([p], lr=lr, differentiable=True)
        p.grad = torch.linspace(-1, 1, 4, dtype=torch.float64)
        opt.step()
        results.append((p.detach(), *torch.autograd.grad((p**2).sum(), (lr, w))))
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=0)
    assert results[1][1] != 0


def _train(cls, kwargs, dtype, switch, steps=24, scale=None):
    """Train a small model; group 0's differentiable flag is True for the steps in `switch`
    (the optimizer's default stays False, so the step runs without grad, as torch's does)."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).to(dtype)
    opt = cls(model.parameters(), **kwargs)
    for k in range(steps):
        gen = torch.Generator().manual_seed(100 + k)
        x = torch.randn(8, 4, generator=gen, dtype=dtype)
        opt.zero_grad()
        loss = (model(x) ** 2).mean()
        (loss * scale if scale else loss).backward()
        opt.param_groups[0]["differentiable"] = k in switch
        if scale:
            opt.grad_scale = torch.tensor(float(scale))
        opt.step()
    return model, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_switching_the_flag_mid_training_keeps_torchs_numbers(case, dtype):
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    switch = set(range(6, 15))
    want, want_opt = _train(_class(torch.optim, case), CASES[case], dtype, switch)
    never, _ = _train(_class(genesis.optim, case), CASES[case], dtype, set())
    got, got_opt = _train(_class(genesis.optim, case), CASES[case], dtype, switch)
    # torch's differentiable Adam, AdamW and NAdam compute their bias corrections from the
    # float32 step tensor (its other paths: from a Python float), so the switched steps agree
    # with the never-switched run only to float32 precision, in torch as in genesis.
    for a, b, c in zip(got.parameters(), want.parameters(), never.parameters()):
        torch.testing.assert_close(a, b, **tol)
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
    # The state keeps torch's layout throughout: same names, dtypes and values.
    for p, q in zip(got.parameters(), want.parameters()):
        mine, theirs = got_opt.state[p], want_opt.state[q]
        assert sorted(mine) == sorted(theirs)
        for k in theirs:
            assert mine[k].dtype == theirs[k].dtype or k in ("step", "eta", "mu", "mu_product")
            torch.testing.assert_close(mine[k].to(theirs[k].dtype), theirs[k], **tol)


@pytest.mark.parametrize("case", ["SGD", "Adam", "Rprop"])
def test_first_step_differentiable_creates_torchs_state(case):
    """State created by a differentiable step (SGD's buffer from the gradient, Rprop's step
    sizes at lr) is what the compiled steps continue from."""
    switch = {0}
    want, _ = _train(_class(torch.optim, case), CASES[case], torch.float64, switch)
    got, _ = _train(_class(genesis.optim, case), CASES[case], torch.float64, switch)
    for a, b in zip(got.parameters(), want.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_grad_scale_is_divided_out():
    """GradScaler hands genesis its scale (genesis fuses the unscale); the differentiable path
    divides the gradients by it too."""
    want, _ = _train(genesis.optim.Adam, dict(lr=0.01), torch.float64, set(range(24)))
    got, _ = _train(genesis.optim.Adam, dict(lr=0.01), torch.float64, set(range(24)), scale=1024)
    for a, b in zip(got.parameters(), want.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("differentiable", [False, True])
def test_grad_scaler_unscale_then_step_divides_once(differentiable):
    """unscale_ divides a differentiable group's gradients in place (its update is torch's
    traceable one, so the unscale cannot be deferred into it); the step must then not divide
    them by the scale again. A plain group's unscale_ is lazy and the step divides once."""
    w = torch.ones(3, requires_grad=True)
    p = w.clone()
    p.retain_grad()
    opt = genesis.optim.SGD([p], lr=1.0, differentiable=differentiable)
    scaler = genesis.amp.GradScaler(init_scale=4.0)
    scaler.scale((p * 2.0).sum()).backward()
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(p.detach(), torch.full((3,), -1.0), rtol=0, atol=0)  # 1 - lr * 2


def test_found_inf_skips_the_step():
    p = torch.ones(3)
    opt = genesis.optim.Adam([p], lr=0.1)
    opt.param_groups[0]["differentiable"] = True
    p.grad = torch.ones(3)
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    assert torch.equal(p, torch.ones(3)) and len(opt.state) == 0


# ------------------------------------------------------------------------------------ errors
def test_numpy_parameters_are_refused():
    p = Parameter(np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match="differentiable=True needs torch tensors"):
        genesis.optim.Adam([p], differentiable=True)
    opt = genesis.optim.Adam([p])
    opt.param_groups[0]["differentiable"] = True
    p.grad = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="differentiable=True needs torch tensors"):
        opt.step()
    assert np.array_equal(p.data, np.ones(3, dtype=np.float32)) and len(opt.state) == 0


def test_leaf_parameter_is_refused_as_torch_refuses_it_before_anything_changes():
    for lib in (torch.optim, genesis.optim):
        p = torch.nn.Parameter(torch.ones(3))
        opt = lib.Adam([p], differentiable=True)
        p.grad = torch.ones(3)
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
            opt.step()
    assert torch.equal(p.detach(), torch.ones(3))
    assert all(len(s) == 0 for s in opt.state.values())


def test_step_that_requires_grad_is_refused_as_torch():
    for lib in (torch.optim, genesis.optim):
        p = torch.ones(3, requires_grad=True).clone()
        opt = lib.Adam([p], differentiable=True)
        p.grad = torch.ones(3)
        opt.step()
        opt.state[p]["step"] = torch.tensor(1.0, requires_grad=True)
        with pytest.raises(RuntimeError, match="`requires_grad` is not supported for `step` in differentiable mode"):
            opt.step()


def test_unsupported_combinations_are_refused():
    p = torch.ones(3)
    with pytest.raises(ValueError, match="Lion does not support differentiable=True"):
        genesis.optim.Lion([{"params": [p], "differentiable": True}])
    with pytest.raises(ValueError, match="master_weights"):
        genesis.optim.Adam([p.half()], differentiable=True, master_weights=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        genesis.optim.Adam([p], differentiable=True, fused=True)


def test_hooks_and_closure_run_as_for_a_compiled_step():
    calls = []
    p = torch.ones(3, requires_grad=True).clone()
    opt = genesis.optim.SGD([p], lr=0.5, differentiable=True)
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))

    def closure():
        p.grad = torch.full((3,), 2.0)
        return torch.tensor(7.0)

    assert opt.step(closure).item() == 7.0
    assert calls == ["pre", "post"]
    torch.testing.assert_close(p.detach(), torch.zeros(3))
    assert p.grad_fn is not None  # recorded


# ------------------------------------------------------------------ meta device, to_empty
@pytest.fixture
def swap_params_on_conversion():
    """to_empty keeps each parameter object (its storage is swapped in) only with this torch
    setting; without it the module gets new parameters and any optimizer, torch's or genesis's,
    keeps the old meta ones."""
    before = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    yield
    torch.__future__.set_swap_module_params_on_conversion(before)


@pytest.mark.parametrize("name", ["AdamW", "SGD", "Adagrad", "RMSprop"])
def test_meta_parameters_materialized_with_to_empty_train_as_torch(name, swap_params_on_conversion):
    """An optimizer built over meta-device parameters (a model built under torch.device("meta")
    to be materialized later), then model.to_empty(...), model.load_state_dict and an
    optimizer load_state_dict, behaves as torch's: same parameters, state and numbers."""
    kwargs = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    torch.manual_seed(0)
    source = torch.nn.Linear(4, 3)
    # An optimizer state to resume from, made by torch on a real copy of the model.
    trained = copy.deepcopy(source)
    resumed_from = getattr(torch.optim, name)(trained.parameters(), **kwargs)
    trained(torch.ones(2, 4)).pow(2).sum().backward()
    resumed_from.step()
    for resume in (False, True):
        if name == "Adagrad" and not resume:
            # Adagrad creates its state in the constructor, on the meta device: to_empty does
            # not move it, so the first step fails in torch; genesis refuses it too.
            with pytest.raises(RuntimeError, match="meta"):
                _meta_run(torch.optim, name, kwargs, source, None)
            with pytest.raises(ValueError, match="state 'sum' of parameter 0 of param group 0 does not match"):
                _meta_run(genesis.optim, name, kwargs, source, None)
            continue
        runs = [
            _meta_run(lib, name, kwargs, source, resumed_from if resume else None)
            for lib in (torch.optim, genesis.optim)
        ]
        (tm, to), (gm, go) = runs
        for a, b in zip(gm.parameters(), tm.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for p, q in zip(gm.parameters(), tm.parameters()):
            assert sorted(go.state[p]) == sorted(to.state[q])
            for key, value in to.state[q].items():
                torch.testing.assert_close(go.state[p][key], value, rtol=1e-5, atol=1e-6)


def _meta_run(lib, name, kwargs, source, resume_from):
    with torch.device("meta"):
        model = torch.nn.Linear(4, 3)
    opt = getattr(lib, name)(model.parameters(), **kwargs)
    params = list(model.parameters())
    model.to_empty(device="cpu")
    assert all(a is b for a, b in zip(model.parameters(), params)) and params[0].device.type == "cpu"
    model.load_state_dict(source.state_dict())
    if resume_from is not None:
        opt.load_state_dict(copy.deepcopy(resume_from.state_dict()))
    for k in range(5):
        opt.zero_grad()
        model(torch.full((2, 4), float(k))).pow(2).sum().backward()
        opt.step()
    return model, opt


COMPLEX_KWARGS = {
    "Adam": {},
    "SGD": dict(momentum=0.9),
    "RMSprop": dict(momentum=0.9),
    # State torch starts at v + v*j for a complex parameter, not at v.
    "Adagrad": dict(initial_accumulator_value=0.3),
    "Rprop": {},
}


@pytest.mark.parametrize("name", COMPLEX_KWARGS)
def test_complex_parameters_differentiate_as_torch(name):
    """Complex parameters go through torch's real views, as in torch; values and gradients
    are torch's."""
    results = []
    for lib in (torch.optim, genesis.optim):
        torch.manual_seed(0)
        w = torch.randn(3, dtype=torch.complex128, requires_grad=True)
        p = w.clone()
        opt = getattr(lib, name)([p], lr=0.1, differentiable=True, **COMPLEX_KWARGS[name])
        p.grad = torch.full((3,), 1 + 2j, dtype=torch.complex128)
        opt.step()
        results.append((p.detach(), *torch.autograd.grad(p.abs().sum(), w)))
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=1e-14)
