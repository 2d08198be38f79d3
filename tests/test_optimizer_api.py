"""The Optimizer interface (docs/semantics.md#parameters and
docs/semantics.md#the-optimizer-interface): construction and its errors, invalid
hyperparameters, bad gradients (raised before anything changes), step(closure), zero_grad,
lazily created state and its layout, the step counter, state_dict / load_state_dict (errors,
atomicity, copies), add_param_group, editing hyperparameters, replacing state, __repr__.

NumPy parameters are tested without torch; the torch cases are skipped where torch is absent.
"""

import copy
import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402
from genesis.nn import Parameter  # noqa: E402

import reference as R  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover - the NumPy half of this file runs without torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

NAMES = R.NAMES
LIBS = ["numpy", pytest.param("torch", marks=needs_torch)]


def _opt(name, params, **hp):
    if name == "SGD":
        hp.setdefault("lr", 0.1)
    return getattr(genesis.optim, name)(params, **hp)


def _param(lib, values, dtype="float32"):
    values = np.asarray(values, dtype=dtype)
    if lib == "numpy":
        return Parameter(values.copy())
    return torch.nn.Parameter(torch.from_numpy(values.copy()))


def _values(p):
    """A NumPy copy of a parameter's values (either library)."""
    return p.detach().numpy().copy() if torch is not None and isinstance(p, torch.Tensor) else p.data.copy()


def _set_grad(p, values):
    values = np.asarray(values, dtype=_values(p).dtype)
    if torch is not None and isinstance(p, torch.Tensor):
        p.grad = torch.from_numpy(values.copy())
    else:
        p.grad = values.copy()


def _snapshot_state(opt):
    return {
        id(p): {k: (np.array(v) if not hasattr(v, "detach") else v.detach().clone().numpy()) for k, v in s.items()}
        for p, s in opt.state.items()
    }


# ================================================================================ construction
@pytest.mark.parametrize("name", NAMES)
def test_empty_parameter_list(name):
    with pytest.raises(ValueError, match="^optimizer got an empty parameter list$"):
        _opt(name, [])


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", NAMES)
def test_single_parameter_instead_of_iterable(name, lib):
    with pytest.raises(TypeError):
        _opt(name, _param(lib, [1.0, 2.0]))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", NAMES)
def test_set_of_parameters_is_refused(name, lib):
    a, b = _param(lib, [1.0]), _param(lib, [2.0])
    with pytest.raises(TypeError):
        _opt(name, {a, b})
    with pytest.raises(TypeError):
        _opt(name, [{"params": {a, b}}])
    opt = _opt(name, [a])
    with pytest.raises(TypeError):
        opt.add_param_group({"params": {b}})
    assert len(opt.param_groups) == 1


def test_generator_of_parameters_is_accepted():
    ps = [_param("numpy", [1.0, 2.0]) for _ in range(3)]
    opt = genesis.optim.SGD((p for p in ps), lr=0.1)
    assert opt.param_groups[0]["params"] == ps


def test_non_parameter_is_refused():
    with pytest.raises(TypeError):
        genesis.optim.Adam([np.zeros(3, dtype=np.float32)])


@needs_torch
@pytest.mark.parametrize("name", ["AdamW", "SGD", "Adafactor"])
def test_repeated_load_state_dict_keeps_no_bookkeeping_per_load(name):
    """A step keeps each group's core options while its hyperparameters stay the same objects,
    keyed by the group; load_state_dict replaces every group dict, and each load used to leave
    its groups' entries behind for good (about 1.4 KB per load of a two-group AdamW: a leak in
    a loop that restores a checkpoint often). The entries of groups gone are now dropped, and
    the steps still give the numbers of an optimizer that never reloaded."""
    params = [torch.nn.Parameter(torch.ones(4, 3)), torch.nn.Parameter(torch.ones(3))]
    twins = [torch.nn.Parameter(torch.ones(4, 3)), torch.nn.Parameter(torch.ones(3))]
    cls = getattr(genesis.optim, name)
    opt = cls([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.01)
    ref = cls([{"params": twins[:1]}, {"params": twins[1:], "lr": 0.05}], lr=0.01)
    for k in range(200):
        for p, q in zip(params, twins):
            p.grad = torch.full(p.shape, 0.1 * (k % 7 - 3))
            q.grad = p.grad.clone()
        opt.load_state_dict(opt.state_dict())
        opt.step()
        ref.step()
    assert len(opt.__dict__.get("_options_kept", {})) <= 2 * len(opt.param_groups)
    for p, q in zip(params, twins):
        assert torch.equal(p, q)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", NAMES)
def test_duplicate_parameters(name, lib):
    """Within a group a duplicate warns, as torch 2.13 does (and is updated once per step:
    the compiled plan never updates one array twice concurrently); across groups it is an
    error, as in torch."""
    a, b = _param(lib, [1.0]), _param(lib, [2.0])
    with pytest.warns(UserWarning, match="duplicate parameters"):
        dup = _opt(name, [a, b, a])
    twin_a, twin_b = _param(lib, [1.0]), _param(lib, [2.0])
    single = _opt(name, [twin_a, twin_b])
    for p in (a, b, twin_a, twin_b):
        p.grad = _grad_like(lib, p, 0.5)
    dup.step()
    single.step()
    assert np.array_equal(_values(a), _values(twin_a)) and np.array_equal(_values(b), _values(twin_b))
    with pytest.raises(ValueError):
        _opt(name, [{"params": [a]}, {"params": [b, a]}])
    opt = _opt(name, [a])
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [a]})
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt.add_param_group({"params": [b, b]})
    assert len(opt.param_groups) == 2


def _grad_like(lib, p, value):
    if lib == "torch":
        return torch.full_like(p, value)
    return np.full_like(p.data, value)


def test_sgd_lr_defaults_to_1e_3_as_in_torch_2_13():
    p = _param("numpy", [1.0])
    assert genesis.optim.SGD([p]).param_groups[0]["lr"] == 1e-3
    assert genesis.optim.SGD([{"params": [p]}]).param_groups[0]["lr"] == 1e-3
    if torch is not None:
        assert torch.optim.SGD([torch.nn.Parameter(torch.ones(1))]).defaults["lr"] == 1e-3


def test_a_required_hyperparameter_missing_from_a_group_is_named():
    """The `required` marker (torch's contract for optimizers without a default) still works
    for genesis subclasses that use it."""

    class NeedsLr(genesis.optim.SGD):
        def __init__(self, params):
            super().__init__(params)
            self.defaults["lr"] = genesis.optim.optimizer.required

    p, q = _param("numpy", [1.0]), _param("numpy", [2.0])
    opt = NeedsLr([p])
    msg = "parameter group didn't specify a value of required optimization parameter lr"
    with pytest.raises(ValueError, match=re.escape(msg)):
        opt.add_param_group({"params": [q]})


# Invalid hyperparameters: (optimizer, keyword, value, text that the message must contain).
_NAN = float("nan")
INVALID = [
    ("SGD", "lr", -0.1, "-0.1"),
    ("SGD", "lr", _NAN, "nan"),
    ("SGD", "momentum", -0.5, "-0.5"),
    ("SGD", "weight_decay", -0.01, "-0.01"),
    ("SGD", "dampening", -0.2, "-0.2"),
    ("SGD", "lr", -0.123456789, "-0.123456789"),  # the value as given, not rounded
    ("Adam", "lr", -0.001, "-0.001"),
    ("Adam", "lr", _NAN, "nan"),
    ("Adam", "betas", (-0.1, 0.999), "-0.1"),
    ("Adam", "betas", (0.9, 1.0), "1.0"),
    ("Adam", "betas", (1.0, 0.9), "1.0"),
    ("Adam", "betas", (_NAN, 0.9), "nan"),
    ("Adam", "eps", -1e-08, "-1e-08"),
    ("Adam", "eps", _NAN, "nan"),
    ("Adam", "weight_decay", -0.5, "-0.5"),
    ("AdamW", "lr", -2.0, "-2.0"),
    ("AdamW", "betas", (0.9, 1.5), "1.5"),
    ("AdamW", "eps", -0.25, "-0.25"),
    ("AdamW", "weight_decay", -0.75, "-0.75"),
    ("RMSprop", "lr", -0.01, "-0.01"),
    ("RMSprop", "lr", _NAN, "nan"),
    ("RMSprop", "eps", -0.125, "-0.125"),
    ("RMSprop", "alpha", -0.5, "-0.5"),
    ("RMSprop", "alpha", _NAN, "nan"),
    ("RMSprop", "momentum", -0.3, "-0.3"),
    ("RMSprop", "weight_decay", -0.4, "-0.4"),
]


@pytest.mark.parametrize("name,key,value,text", INVALID, ids=[f"{n}-{k}={v}" for n, k, v, _ in INVALID])
def test_invalid_hyperparameter(name, key, value, text):
    p, q = _param("numpy", [1.0]), _param("numpy", [2.0])
    with pytest.raises(ValueError, match=re.escape(text)):
        _opt(name, [p], **{key: value})
    # The same check through add_param_group; a refused group is not added.
    opt = _opt(name, [p])
    with pytest.raises(ValueError, match=re.escape(text)):
        opt.add_param_group({"params": [q], key: value})
    assert len(opt.param_groups) == 1
    # ... and through a constructor's per-group override.
    with pytest.raises(ValueError, match=re.escape(text)):
        _opt(name, [{"params": [p]}, {"params": [q], key: value}])


@pytest.mark.parametrize("value", [1.0, 0, None, "yes", np.bool_(True)], ids=repr)
def test_differentiable_must_be_a_bool_as_torchs_step_requires(value):
    """torch's step passes `differentiable` to torch.set_grad_enabled, which refuses anything
    but a bool (TypeError); genesis ran a truthy value through the traceable update (a
    confusing in-place autograd error) and a falsy one as False. Now a TypeError from the
    constructor, add_param_group and load_state_dict alike."""
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    with pytest.raises(TypeError):
        torch.optim.Adam([p], differentiable=value).step()
    with pytest.raises(TypeError, match="differentiable must be True or False"):
        genesis.optim.Adam([p], differentiable=value)
    opt = genesis.optim.Adam([p])
    with pytest.raises(TypeError, match="differentiable must be True or False"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "differentiable": value})
    bad = opt.state_dict()
    bad["param_groups"][0]["differentiable"] = value
    with pytest.raises(TypeError, match="differentiable must be True or False"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["differentiable"] is False


@pytest.mark.parametrize(
    "kwargs",
    [dict(momentum=0.0, nesterov=True), dict(momentum=0.9, dampening=0.1, nesterov=True)],
    ids=["no-momentum", "dampening"],
)
def test_nesterov_needs_momentum_and_no_dampening(kwargs):
    p = _param("numpy", [1.0])
    with pytest.raises(ValueError):
        genesis.optim.SGD([p], lr=0.1, **kwargs)
    opt = genesis.optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [_param("numpy", [2.0])], **kwargs})


@needs_torch
@pytest.mark.parametrize("name", NAMES)
def test_strided_complex_and_strided_grad_parameters_step_as_torch(name):
    """What torch accepts, genesis accepts: a transposed parameter, a parameter with a strided
    gradient and a complex parameter are updated (through staging copies) to torch's numbers,
    over several steps, with torch's state layout."""
    R.skip_without_torch_twin(name)
    torch.manual_seed(0)
    inits = [torch.randn(4, 3).t(), torch.randn(5, 6), torch.randn(7, dtype=torch.complex64)]
    grads = [[torch.randn(4, 3).t(), torch.randn(6, 5).t(), torch.randn(7, dtype=torch.complex64)] for _ in range(6)]
    if name == "Adafactor":  # torch refuses complex parameters, and so does genesis
        for module in (torch.optim, genesis.optim):
            p = torch.nn.Parameter(inits[2].clone())
            p.grad = grads[0][2].clone()
            with pytest.raises(RuntimeError, match="does not support complex"):
                getattr(module, name)([p]).step()
        inits, grads = inits[:2], [gs[:2] for gs in grads]
    kw = {"lr": 0.05} if name == "SGD" else {}
    runs = {}
    for lib, module in (("torch", torch.optim), ("genesis", genesis.optim)):
        params = [torch.nn.Parameter(x.clone() if x.is_contiguous() else x.t().clone().t()) for x in inits]
        assert not params[0].is_contiguous()
        opt = getattr(module, name)(params, **kw)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone() if g.is_contiguous() else g.t().clone().t()
            opt.step()
        runs[lib] = (params, opt)
    (tp, topt), (gp, gopt) = runs["torch"], runs["genesis"]
    for a, b in zip(gp, tp):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(gp, tp):
        for key, value in topt.state[b].items():
            mine = gopt.state[a][key]
            assert mine.dtype == value.dtype and mine.shape == value.shape, key
            torch.testing.assert_close(mine, value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_numpy_parameter(name):
    bad = Parameter(np.zeros((4, 6), dtype=np.float32)[:, ::2])
    with pytest.raises(ValueError, match="parameter 0 of param group 0"):
        _opt(name, [bad])


@pytest.mark.parametrize("dtype", ["int32", "int64", "complex64", "uint16"])
@pytest.mark.parametrize("name", NAMES)
def test_unsupported_numpy_dtype(name, dtype):
    p = Parameter(np.zeros(3, dtype=dtype))
    with pytest.raises(TypeError, match=dtype):
        _opt(name, [_param("numpy", [1.0]), p])


@needs_torch
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool"])
@pytest.mark.parametrize("name", NAMES)
def test_unsupported_torch_dtype(name, dtype):
    p = torch.zeros(3, dtype=getattr(torch, dtype))
    with pytest.raises(TypeError, match=dtype):
        _opt(name, [p])


# ================================================================================ bad gradients
def _bad_grads():
    cases = [
        ("shape", ValueError, lambda p: np.zeros((2, 2), dtype=p.data.dtype)),
        ("dtype", TypeError, lambda p: np.zeros(p.data.shape, dtype=np.float64)),
        ("non-contiguous", ValueError, lambda p: np.zeros((p.data.shape[0] * 2,), dtype=p.data.dtype)[::2]),
        ("list", TypeError, lambda p: [0.0] * p.data.shape[0]),
        ("int", TypeError, lambda p: np.zeros(p.data.shape, dtype=np.int32)),
    ]
    if torch is not None:
        cases.append(("torch-grad-for-numpy", TypeError, lambda p: torch.zeros(p.data.shape)))
    return cases


@pytest.mark.parametrize("first_step", [True, False], ids=["before-state", "after-state"])
@pytest.mark.parametrize("kind,exc,make", _bad_grads(), ids=[c[0] for c in _bad_grads()])
@pytest.mark.parametrize("name", NAMES)
def test_bad_grad_raises_before_anything_changes(name, kind, exc, make, first_step):
    rng = np.random.default_rng(0)
    hp = R.RICH[name]
    params = [[Parameter(rng.uniform(-1, 1, 5).astype(np.float32)) for _ in range(2)] for _ in range(2)]
    opt = getattr(genesis.optim, name)([{"params": params[0]}, {"params": params[1], "lr": 0.02}], **hp)
    ref = getattr(genesis.optim, name)(
        [
            {"params": [Parameter(p.data.copy()) for p in params[0]]},
            {"params": [Parameter(p.data.copy()) for p in params[1]], "lr": 0.02},
        ],
        **hp,
    )
    all_params = params[0] + params[1]
    ref_params = ref.param_groups[0]["params"] + ref.param_groups[1]["params"]

    def give_grads():
        grads = [rng.normal(0, 1, 5).astype(np.float32) for _ in all_params]
        for p, q, g in zip(all_params, ref_params, grads):
            p.grad, q.grad = g.copy(), g.copy()

    if not first_step:
        give_grads()
        opt.step()
        ref.step()
    give_grads()
    params[1][1].grad = make(params[1][1])
    before = [p.data.copy() for p in all_params]
    state_before = _snapshot_state(opt)
    state_objects = {id(p): dict(s) for p, s in opt.state.items()}
    with pytest.raises(exc, match="parameter 1 of param group 1"):
        opt.step()
    for p, b in zip(all_params, before):
        np.testing.assert_array_equal(p.data, b)
    assert _snapshot_state(opt).keys() == state_before.keys()
    for key, entries in _snapshot_state(opt).items():
        assert entries.keys() == state_before[key].keys()
        for k in entries:
            np.testing.assert_array_equal(entries[k], state_before[key][k])
    assert {id(p): dict(s) for p, s in opt.state.items()} == state_objects
    if first_step:
        assert len(opt.state) == (len(all_params) if R.eager_state(name) else 0)
    # Fixed, the optimizer carries on exactly like one that never saw the bad gradient.
    params[1][1].grad = ref_params[3].grad.copy()
    opt.step()
    ref.step()
    for p, q in zip(all_params, ref_params):
        np.testing.assert_array_equal(p.data, q.data)


@needs_torch
@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_torch_grad(name):
    """A strided gradient (torch accepts one) gives the numbers of its contiguous copy."""
    p0 = torch.nn.Parameter(torch.ones(3, 4))
    p1 = torch.nn.Parameter(torch.ones(3, 4))
    opt = _opt(name, [{"params": [p0]}, {"params": [p1]}])
    p0.grad = torch.arange(12.0).reshape(4, 3).t().contiguous()
    p1.grad = torch.arange(12.0).reshape(4, 3).t()
    assert not p1.grad.is_contiguous()
    opt.step()
    assert torch.equal(p0.detach(), p1.detach()) and not torch.equal(p0.detach(), torch.ones(3, 4))
    assert all(torch.equal(v, opt.state[p1][k]) for k, v in opt.state[p0].items())


# ================================================================================ step, closure
@pytest.mark.parametrize("name", NAMES)
def test_closure_numpy(name):
    p = _param("numpy", [1.0, -1.0])
    opt = _opt(name, [p])
    calls = []

    def closure():
        calls.append(1)
        p.grad = np.array([0.5, 0.5], dtype=np.float32)
        return 3.25

    assert opt.step(closure) == 3.25
    assert len(calls) == 1
    assert not np.array_equal(p.data, [1.0, -1.0])  # the gradient set by the closure was used
    assert opt.step() is None


@needs_torch
@pytest.mark.parametrize("name", NAMES)
def test_closure_torch(name):
    R.skip_without_torch_twin(name)
    """The closure runs with gradients enabled (even under no_grad), once; step returns its
    value and uses the gradients it produced, as torch does."""
    hp = R.RICH[name]
    torch.manual_seed(0)
    x, y = torch.randn(6, 3), torch.randn(6, 1)
    models = [torch.nn.Linear(3, 1) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [
        R.torch_class(name)(models[0].parameters(), **hp),
        getattr(genesis.optim, name)(models[1].parameters(), **hp),
    ]
    for _ in range(5):
        results = []
        for model, opt in zip(models, opts):
            calls = []

            def closure(model=model, opt=opt, calls=calls):
                calls.append(torch.is_grad_enabled())
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                loss.backward()
                return loss

            with torch.no_grad():
                results.append(opt.step(closure))
            assert calls == [True]
        assert isinstance(results[1], torch.Tensor)
        torch.testing.assert_close(results[1], results[0])
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("lib", LIBS)
def test_zero_grad(lib):
    a, b, c = _param(lib, [1.0, 2.0]), _param(lib, [3.0]), _param(lib, [4.0])
    opt = genesis.optim.SGD([{"params": [a, b]}, {"params": [c]}], lr=0.1)
    _set_grad(a, [5.0, 6.0])
    _set_grad(b, [7.0])
    grad_a = a.grad
    opt.zero_grad(set_to_none=False)
    assert a.grad is grad_a  # zeroed in place
    assert np.array_equal(_values(a.grad) if lib == "torch" else a.grad, [0.0, 0.0])
    assert c.grad is None  # a missing gradient stays missing
    opt.zero_grad()
    assert a.grad is None and b.grad is None and c.grad is None


@needs_torch
def test_zero_grad_in_place_keeps_storage_torch():
    model = torch.nn.Linear(3, 2)
    opt = genesis.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    ptr = model.weight.grad.data_ptr()
    opt.zero_grad(set_to_none=False)
    assert model.weight.grad.data_ptr() == ptr
    assert torch.count_nonzero(model.weight.grad) == 0
    assert not model.weight.grad.requires_grad


@pytest.mark.parametrize("lib", LIBS)
def test_parameters_updated_in_place(lib):
    p = _param(lib, [1.0, 2.0, 3.0])
    ident = p.data if lib == "numpy" else p
    ptr = p.data.ctypes.data if lib == "numpy" else p.data_ptr()
    opt = genesis.optim.Adam([p], lr=0.1)
    for _ in range(3):
        _set_grad(p, [1.0, 1.0, 1.0])
        opt.step()
    if lib == "numpy":
        assert p.data is ident and p.data.ctypes.data == ptr
    else:
        assert p.data_ptr() == ptr
    assert np.all(_values(p) < [1.0, 2.0, 3.0])


# ================================================================================ state
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", NAMES)
def test_state_is_lazy_and_matches_the_parameter(name, lib, dtype):
    hp = R.RICH[name]
    p = _param(lib, np.arange(6.0).reshape(2, 3) / 10, dtype)
    skipped = _param(lib, [1.0], dtype)
    opt = getattr(genesis.optim, name)([p, skipped], **hp)
    assert len(opt.state) == (2 if R.eager_state(name) else 0)
    _set_grad(p, np.ones((2, 3)))
    opt.step()
    assert (skipped in opt.state) == R.eager_state(name)
    state = opt.state[p]
    shapes = R.state_shapes(name, R.full_hyperparameters(name, hp), (2, 3))
    names = set(shapes)
    scalars = set(R.scalar_names(name, hp))
    if R.counts_steps(name):
        names.add("step")
    assert set(state) == names | scalars
    for key, value in state.items():
        if key == "step" or key in scalars:
            if lib == "torch":
                assert isinstance(value, torch.Tensor) and value.dtype == torch.float32
                assert value.dim() == 0 and value.device.type == "cpu"
            else:
                assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == ()
            if key == "step":
                assert float(value) == 1.0
            continue
        if lib == "torch":
            assert isinstance(value, torch.Tensor) and value.dtype == p.dtype
            assert value.shape == shapes[key] and value.device == p.device and value.is_contiguous()
            assert value.data_ptr() != p.data_ptr()
        else:
            assert isinstance(value, np.ndarray) and value.dtype == p.data.dtype
            assert value.shape == shapes[key] and not np.shares_memory(value, p.data)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_step_counter_advances_live(name, lib):
    p = _param(lib, [1.0, 2.0])
    opt = getattr(genesis.optim, name)([p], lr=0.01)
    _set_grad(p, [1.0, 1.0])
    opt.step()
    counter = opt.state[p]["step"]
    for k in range(2, 6):
        _set_grad(p, [1.0, -1.0])
        opt.step()
        assert opt.state[p]["step"] is counter  # the same, live array
        assert float(counter) == k
    sd_step = opt.state_dict()["state"][0]["step"]
    if lib == "numpy":
        assert type(sd_step) is float and sd_step == 5.0
    else:
        assert isinstance(sd_step, torch.Tensor) and sd_step.dtype == torch.float32
        assert sd_step.dim() == 0 and float(sd_step) == 5.0 and sd_step is not counter


def test_sgd_has_no_step_and_no_buffer_without_momentum():
    p, q = _param("numpy", [1.0]), _param("numpy", [1.0])
    opt = genesis.optim.SGD([{"params": [p]}, {"params": [q], "momentum": 0.9}], lr=0.1)
    p.grad = np.ones(1, np.float32)
    q.grad = np.ones(1, np.float32)
    opt.step()
    assert "momentum_buffer" not in opt.state.get(p, {}) and "step" not in opt.state.get(p, {})
    assert set(opt.state[q]) == {"momentum_buffer"}


@pytest.mark.parametrize("name", NAMES)
def test_replacing_numpy_state_array_is_honoured(name):
    """opt.state[p][key] = another array of the right shape is used by the next step (and then
    updated in place), like the reference doing the same."""
    hp = R.RICH[name]
    key = R.state_names(name, R.full_hyperparameters(name, hp))[0]
    rng = np.random.default_rng(4)
    p = Parameter(rng.uniform(-1, 1, 6))
    ref = R.ReferenceOptimizer(name, [([p.data], hp)])
    opt = getattr(genesis.optim, name)([p], **hp)
    for i in range(8):
        if i == 3:
            new = rng.uniform(0, 0.1, 6)
            opt.state[p][key] = new.copy()
            ref.state[0][0][key] = new.copy()
            replaced = opt.state[p][key]
        g = rng.normal(0, 1, 6)
        p.grad = g
        opt.step()
        ref.step([[g]])
        np.testing.assert_allclose(p.data, ref.params[0][0], rtol=1e-12, atol=1e-13)
    assert opt.state[p][key] is replaced
    np.testing.assert_allclose(replaced, ref.state[0][0][key], rtol=1e-12, atol=1e-13)


def test_replacing_state_with_a_wrong_shape_is_refused_before_updating():
    p = Parameter(np.ones(4))
    opt = genesis.optim.Adam([p], lr=0.1)
    p.grad = np.ones(4)
    opt.step()
    opt.state[p]["exp_avg"] = np.zeros(5)
    before = p.data.copy()
    with pytest.raises(ValueError, match="parameter 0 of param group 0"):
        opt.step()
    np.testing.assert_array_equal(p.data, before)


@pytest.mark.parametrize("name", NAMES)
def test_editing_lr_between_steps_numpy(name):
    hp = R.RICH[name]
    rng = np.random.default_rng(8)
    p = Parameter(rng.uniform(-1, 1, 5))
    ref = R.ReferenceOptimizer(name, [([p.data], hp)])
    opt = getattr(genesis.optim, name)([p], **hp)
    for lr in [hp["lr"]] * 3 + [0.003] * 3 + [0.0] * 2 + [0.02] * 3:
        opt.param_groups[0]["lr"] = lr
        ref.groups[0][1]["lr"] = lr
        g = rng.normal(0, 1, 5)
        p.grad = g
        opt.step()
        ref.step([[g]])
        np.testing.assert_allclose(p.data, ref.params[0][0], rtol=1e-12, atol=1e-13)


def _halved(value):
    """A hyperparameter edited to another valid value: floats halved, a pair's first entry
    halved (betas stay below 1), anything else kept."""
    if isinstance(value, float):
        return value / 2
    if isinstance(value, tuple) and value and isinstance(value[0], float):
        return (value[0] / 2,) + value[1:]
    return value


@pytest.mark.parametrize("name", NAMES)
def test_every_hyperparameter_edited_between_steps_applies(name):
    """A step builds the core's options once and shares them between its layout check and its
    update (Optimizer.step's _options_memo); an edit made after a step, or after a step that
    raised, applies to the next one."""
    hp = R.RICH[name]
    rng = np.random.default_rng(10)
    p = Parameter(rng.uniform(-1, 1, 5))
    ref = R.ReferenceOptimizer(name, [([p.data], hp)])
    opt = getattr(genesis.optim, name)([p], **hp)
    for k in range(8):
        if k in (3, 6):
            if k == 6:  # a failed step first: nothing changes, and the edit still applies
                p.grad = np.zeros(4)
                with pytest.raises(ValueError, match="shape"):
                    opt.step()
            for key, value in list(opt.param_groups[0].items()):
                if key != "params" and _halved(value) is not value:
                    opt.param_groups[0][key] = _halved(value)
                    ref.groups[0][1][key] = _halved(ref.groups[0][1][key])
        g = rng.normal(0, 1, 5)
        p.grad = g
        opt.step()
        ref.step([[g]])
        np.testing.assert_allclose(p.data, ref.params[0][0], rtol=1e-12, atol=1e-13)


def test_hyperparameters_edited_in_place_or_set_back_apply():
    """A group's core options are kept across steps while it holds the same immutable objects
    as its hyperparameters (RuleOptimizer._kept_options): a betas list edited in place, a 0-dim
    array lr filled in place, a value set back to an earlier one and a zero's sign (-0.0 equals
    0.0) all apply to the next step."""
    rng = np.random.default_rng(12)
    p = Parameter(rng.uniform(-1, 1, 6))
    p.data[0] = -0.0
    lr = np.array(0.01)
    betas = [0.9, 0.99]
    opt = genesis.optim.AdamW([p], lr=lr, betas=betas, weight_decay=0.5)
    ref = R.ReferenceOptimizer("AdamW", [([p.data], dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.5))])
    edits = {
        2: lambda: betas.__setitem__(0, 0.5),  # in place: the group holds the same list
        3: lambda: lr.fill(0.002),  # in place: the same array
        4: lambda: opt.param_groups[0].__setitem__("weight_decay", 0.1),
        5: lambda: opt.param_groups[0].__setitem__("weight_decay", 0.5),  # back to the first value
        6: lambda: opt.param_groups[0].__setitem__("lr", 0.0),
        7: lambda: opt.param_groups[0].__setitem__("lr", -0.0),
    }
    ref_edits = {2: ("betas", (0.5, 0.99)), 3: ("lr", 0.002), 4: ("weight_decay", 0.1), 5: ("weight_decay", 0.5)}
    ref_edits.update({6: ("lr", 0.0), 7: ("lr", -0.0)})
    for k in range(9):
        if k in edits:
            edits[k]()
            key, value = ref_edits[k]
            ref.groups[0][1][key] = value
        g = rng.normal(0, 1, 6)
        g[0] = 0.0
        p.grad = g
        opt.step()
        ref.step([[g]])
        np.testing.assert_allclose(p.data, ref.params[0][0], rtol=1e-12, atol=1e-13)
        assert np.signbit(p.data[0]) == np.signbit(ref.params[0][0][0]), k


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_then_step_numpy(name):
    hp = R.RICH[name]
    rng = np.random.default_rng(9)
    p, q = Parameter(rng.uniform(-1, 1, 5)), Parameter(rng.uniform(-1, 1, (2, 2)))
    opt = getattr(genesis.optim, name)([p], **hp)
    ref = R.ReferenceOptimizer(name, [([p.data], hp), ([q.data], dict(hp, lr=0.004))])
    for i in range(6):
        if i == 2:
            opt.add_param_group({"params": [q], "lr": 0.004})
            assert opt.param_groups[1]["lr"] == 0.004
            for key, value in opt.defaults.items():
                if key != "lr":
                    assert opt.param_groups[1][key] == value
        gp, gq = rng.normal(0, 1, 5), rng.normal(0, 1, (2, 2))
        p.grad, q.grad = gp, gq
        opt.step()
        ref.step([[gp], [gq if i >= 2 else None]])
        np.testing.assert_allclose(p.data, ref.params[0][0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(q.data, ref.params[1][0], rtol=1e-12, atol=1e-13)


# ================================================================================ state_dict
def _trained(name, n_steps=3, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    hp = R.RICH[name]
    params = [Parameter(rng.uniform(-1, 1, s).astype(dtype)) for s in [(3,), (2, 2), (4,)]]
    opt = getattr(genesis.optim, name)([{"params": params[:2]}, {"params": params[2:], "lr": 0.02}], **hp)
    for _ in range(n_steps):
        for p in params:
            p.grad = rng.normal(0, 1, p.data.shape).astype(dtype)
        opt.step()
    return opt, params, rng


def _fresh_like(name, params, **hp):
    clones = [Parameter(p.data.copy()) for p in params]
    hp = dict(R.RICH[name], **hp)
    opt = getattr(genesis.optim, name)([{"params": clones[:2]}, {"params": clones[2:]}], **hp)
    return opt, clones


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_roundtrip_numpy_is_exact(name):
    opt, params, rng = _trained(name)
    sd = opt.state_dict()
    # live arrays, step a float, parameter indices across groups
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.02
    for i, p in enumerate(params):
        for key, value in sd["state"][i].items():
            if key == "step":
                assert type(value) is float and value == 3.0
            else:
                assert value is opt.state[p][key]
    opt2, clones = _fresh_like(name, params, lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[1]["lr"] == 0.02  # hyperparameters come from the loaded groups
    assert opt2.param_groups[0]["params"] == clones[:2]
    for p, c in zip(params, clones):
        for key, value in opt2.state[c].items():
            assert not np.shares_memory(value, opt.state[p][key])  # copies
            if key == "step":
                assert value.dtype == np.float32 and value.shape == () and float(value) == 3.0
    for _ in range(4):
        for p, c in zip(params, clones):
            c.grad = p.grad = rng.normal(0, 1, p.data.shape)
        opt.step()
        opt2.step()
        for p, c in zip(params, clones):
            np.testing.assert_array_equal(c.data, p.data)


def test_load_state_dict_casts_to_the_parameter_dtype():
    opt, params, _ = _trained("Adam", dtype=np.float64)
    opt32 = genesis.optim.Adam(
        [
            {"params": [Parameter(p.data.astype(np.float32)) for p in params[:2]]},
            {"params": [Parameter(params[2].data.astype(np.float32))]},
        ]
    )
    opt32.load_state_dict(opt.state_dict())
    for g in opt32.param_groups:
        for p in g["params"]:
            assert opt32.state[p]["exp_avg"].dtype == np.float32
            assert opt32.state[p]["step"].dtype == np.float32
            p.grad = np.ones(p.data.shape, np.float32)
    opt32.step()
    assert float(opt32.state[opt32.param_groups[0]["params"][0]]["step"]) == 4.0


def test_load_state_dict_wrong_group_count():
    opt, params, _ = _trained("Adam")
    sd = opt.state_dict()
    other = genesis.optim.Adam([Parameter(p.data.copy()) for p in params])
    with pytest.raises(ValueError, match="^loaded state dict has a different number of parameter groups$"):
        other.load_state_dict(sd)


def test_load_state_dict_wrong_group_size():
    opt, params, _ = _trained("Adam")
    sd = opt.state_dict()
    clones = [Parameter(p.data.copy()) for p in params]
    other = genesis.optim.Adam([{"params": clones[:1]}, {"params": clones[1:]}])
    msg = "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
    with pytest.raises(ValueError, match=re.escape(msg)):
        other.load_state_dict(sd)


def _break_shape(sd):
    sd["state"][2]["exp_avg"] = np.zeros(7)


def _break_lr(sd):
    sd["param_groups"][1]["lr"] = -1.0


def _break_step(sd):
    sd["state"][1]["step"] = -3.0


def _break_step_shape(sd):
    sd["state"][1]["step"] = np.zeros(2)  # a count must be one number


def _break_step_type(sd):
    sd["state"][1]["step"] = "3"


def _break_array_type(sd):
    sd["state"][2]["exp_avg"] = [0.0] * 7  # a state array must be an array


def _break_array_bool(sd):
    sd["state"][0]["exp_avg_sq"] = True


# Each found by drawing corrupted state_dicts (a step of 2 elements raised RuntimeError from
# .item(); a list, dict or object as a state array raised AttributeError; a bool was loaded and
# refused by the next step): now clear errors from load_state_dict, before anything changes.
BREAKERS = {
    "state-shape": (_break_shape, ValueError),
    "negative-lr": (_break_lr, ValueError),
    "negative-step": (_break_step, ValueError),
    "step-of-two-elements": (_break_step_shape, ValueError),
    "step-not-a-number": (_break_step_type, TypeError),
    "state-array-a-list": (_break_array_type, TypeError),
    "state-array-a-bool": (_break_array_bool, TypeError),
}


@pytest.mark.parametrize("breaker, error", list(BREAKERS.values()), ids=list(BREAKERS))
def test_failed_load_state_dict_changes_nothing(breaker, error):
    opt, params, rng = _trained("Adam")
    twin, clones = _fresh_like("Adam", params)
    twin.load_state_dict(opt.state_dict())
    bad = copy.deepcopy(opt.state_dict())
    for entry in bad["state"].values():  # different values, so a partial load would show
        for key in ("exp_avg", "exp_avg_sq"):
            entry[key] = entry[key] * 3 + 1
    bad["param_groups"][0]["lr"] = 0.5
    breaker(bad)
    groups = opt.param_groups
    group_objects = list(groups)
    state = opt.state
    entries = {p: dict(s) for p, s in state.items()}
    values = _snapshot_state(opt)
    with pytest.raises(error, match="state|learning rate"):
        opt.load_state_dict(bad)
    assert opt.param_groups is groups and all(a is b for a, b in zip(opt.param_groups, group_objects))
    assert opt.param_groups[0]["lr"] == R.RICH["Adam"]["lr"]
    assert opt.state is state
    assert {p: dict(s) for p, s in opt.state.items()} == entries
    for key, entry in _snapshot_state(opt).items():
        for k, v in entry.items():
            np.testing.assert_array_equal(v, values[key][k])
    # and it steps exactly like an optimizer that never saw the bad state_dict
    for _ in range(2):
        for p, c in zip(params, clones):
            c.grad = p.grad = rng.normal(0, 1, p.data.shape)
        opt.step()
        twin.step()
    for p, c in zip(params, clones):
        np.testing.assert_array_equal(c.data, p.data)


@pytest.mark.parametrize(
    "name, entry, value, error",
    [
        ("NAdam", "mu_product", np.ones(2, np.float32), ValueError),
        ("ASGD", "eta", "0.01", TypeError),
        ("ASGD", "mu", [1.0], TypeError),
    ],
)
def test_a_malformed_per_tensor_scalar_is_refused_by_the_load(name, entry, value, error):
    """NAdam's mu_product and ASGD's eta and mu are one number each: anything else is named
    by load_state_dict before the optimizer changes (a 2-element array raised RuntimeError)."""
    opt, _, _ = _trained(name)
    before = _snapshot_state(opt)
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][0][entry] = value
    with pytest.raises(error, match=f"state '{entry}' of parameter 0"):
        opt.load_state_dict(bad)
    for key, entries in _snapshot_state(opt).items():
        for k, v in entries.items():
            np.testing.assert_array_equal(v, before[key][k])


def test_state_dict_of_untrained_optimizer_loads():
    opt, params, _ = _trained("RMSprop", n_steps=0)
    sd = opt.state_dict()
    assert sd["state"] == {}
    other, _ = _fresh_like("RMSprop", params)
    other.load_state_dict(sd)
    assert len(other.state) == 0


# ================================================================================ repr
@needs_torch
@pytest.mark.parametrize("name", NAMES)
def test_repr_like_torch(name):
    R.skip_without_torch_twin(name)
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    hp = R.RICH[name]
    groups = lambda: [{"params": [a]}, {"params": [b], "lr": 0.5}]  # noqa: E731
    assert repr(getattr(genesis.optim, name)(groups(), **hp)) == repr(R.torch_class(name)(groups(), **hp))


# ================================================================================ copying
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", NAMES)
def test_optimizer_can_be_copied_after_steps(name, how):
    """Like torch.optim (which defines __getstate__/__setstate__), an optimizer that has
    stepped can be deep-copied or pickled; the copy owns copies of the parameters and state and
    continues exactly like the original."""
    import pickle

    opt, params, rng = _trained(name)
    clone = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    cparams = [p for g in clone.param_groups for p in g["params"]]
    assert all(c is not p for c, p in zip(cparams, params))
    for _ in range(2):
        for p, c in zip(params, cparams):
            p.grad = rng.normal(0, 1, p.data.shape)
            c.grad = p.grad.copy()
        opt.step()
        clone.step()
    for p, c in zip(params, cparams):
        np.testing.assert_array_equal(c.data, p.data)
        assert not np.shares_memory(c.data, p.data)


def test_assigning_a_fresh_state_resets_it():
    """opt.state = defaultdict(dict) (a common way to reset an optimizer) starts over."""
    import collections

    opt, params, rng = _trained("Adam")
    fresh, clones = _fresh_like("Adam", params, lr=0.01)
    opt.state = collections.defaultdict(dict)
    assert len(opt.state) == 0
    for p, c in zip(params, clones):
        c.grad = p.grad = rng.normal(0, 1, p.data.shape)
    opt.param_groups[1]["lr"] = fresh.param_groups[1]["lr"]
    opt.step()
    fresh.step()
    for p, c in zip(params, clones):
        assert float(opt.state[p]["step"]) == 1.0
        np.testing.assert_array_equal(c.data, p.data)


@needs_torch
def test_adamw_loading_an_adam_state_dict_keeps_decoupled_weight_decay():
    """torch's AdamW does (its __setstate__ forces decoupled_weight_decay); switching to L2
    decay silently would change training."""
    results = {}
    for module in (genesis.optim, torch.optim):
        p = torch.nn.Parameter(torch.ones(4))
        adam = module.Adam([p], weight_decay=0.1)
        p.grad = torch.ones(4)
        adam.step()
        q = torch.nn.Parameter(torch.ones(4))
        adamw = module.AdamW([q], weight_decay=0.1)
        adamw.load_state_dict(adam.state_dict())
        assert adamw.param_groups[0]["decoupled_weight_decay"] is True
        q.grad = torch.ones(4)
        adamw.step()
        results[module] = q.detach()
    assert torch.allclose(results[genesis.optim], results[torch.optim], rtol=1e-6)
