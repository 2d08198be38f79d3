"""genesis optimizers inside the torch ecosystem: they are torch.optim.Optimizer instances, so
torch's schedulers, SWALR, torch.amp.GradScaler, the distributed checkpoint helpers,
torch.save(weights_only=True), torch.compile'd models and
torch.optim.swap_in_optimizer_params_and_state work with them and give torch's
numbers; a step inside torch.autocast (where Lightning's manual optimization runs it) is the
step outside it; hooks fire around genesis steps exactly as around torch's; named parameters keep
their names in the state_dict as torch 2.13 stores them."""

import copy
import functools
import inspect
import io

import pytest

torch = pytest.importorskip("torch")

from torch.optim.optimizer import (  # noqa: E402
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import genesis  # noqa: E402

import reference  # noqa: E402


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _batch(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)


def _train(model, opt, steps, scheduler=None, start=0):
    lrs = []
    for k in range(start, start + steps):
        x, y = _batch(k)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    return lrs


def _same_params(a, b, **tol):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), **(tol or dict(rtol=1e-5, atol=1e-6)))


def test_genesis_optimizers_are_torch_optimizers():
    model = _model()
    for name in genesis.optim.__all__:
        cls = getattr(genesis.optim, name)
        if isinstance(cls, type) and issubclass(cls, genesis.optim.Optimizer):
            assert issubclass(cls, torch.optim.Optimizer), name
    assert isinstance(genesis.optim.AdamW(model.parameters()), torch.optim.Optimizer)


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.01, total_steps=20),
    "warmup+cosine": lambda o: torch.optim.lr_scheduler.SequentialLR(
        o,
        [
            torch.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=4),
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=16),
        ],
        milestones=[4],
    ),
    "SWALR": lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.005, anneal_epochs=5),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_torch_schedulers_drive_genesis_as_torch(name):
    runs = {}
    for module in (torch.optim, genesis.optim):
        model = _model()
        opt = module.AdamW(model.parameters(), lr=1e-2)
        runs[module] = (model, _train(model, opt, 20, SCHEDULERS[name](opt)))
    (tm, tlrs), (gm, glrs) = runs[torch.optim], runs[genesis.optim]
    assert glrs == tlrs
    _same_params(gm, tm)


def test_torch_grad_scaler_drives_genesis_as_torch():
    """torch.amp.GradScaler("cpu") with an injected inf step: the same scale trajectory,
    skipped step and parameters as with torch's AdamW."""
    runs = {}
    for module in (torch.optim, genesis.optim):
        model = _model()
        opt = module.AdamW(model.parameters(), lr=1e-2)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        scales = []
        for k in range(12):
            x, y = _batch(k)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            if k == 5:
                loss = loss * float("inf")
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        runs[module] = (model, scales)
    assert runs[genesis.optim][1] == runs[torch.optim][1]
    _same_params(runs[genesis.optim][0], runs[torch.optim][0])


# Every optimizer torch.optim and genesis.optim both have.
SHARED = sorted(
    n
    for n in dir(torch.optim)
    if isinstance(getattr(torch.optim, n), type)
    and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
    and n != "Optimizer"
    and hasattr(genesis.optim, n)
)


def _flag_cases():
    """Each shared optimizer by default, and with fused=False/True where torch takes fused."""
    for name in SHARED:
        yield pytest.param(name, {}, id=name)
        if "fused" in inspect.signature(getattr(torch.optim, name)).parameters:
            yield pytest.param(name, {"fused": False}, id=f"{name}-fused=False")
            yield pytest.param(name, {"fused": True}, id=f"{name}-fused=True")


@pytest.mark.parametrize("name, kwargs", list(_flag_cases()))
def test_the_scaler_protocol_flag_is_torchs(name, kwargs):
    """`_step_supports_amp_scaling` tells torch.amp.GradScaler and frameworks (Lightning reads
    it to decide whether to unscale before clipping, and refuses clipping where it is True)
    that step() unscales by itself: genesis's says what torch's optimizer built with the same
    arguments says."""
    theirs = getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(3, 2))], **kwargs)
    ours = getattr(genesis.optim, name)([torch.nn.Parameter(torch.ones(3, 2))], **kwargs)
    expected = getattr(theirs, "_step_supports_amp_scaling", False)
    assert getattr(ours, "_step_supports_amp_scaling", False) is expected


@pytest.mark.parametrize("fused", [False, True])
def test_a_framework_clips_between_torch_scaler_unscale_and_step_as_with_torch(fused):
    """What Lightning's and Hugging Face's mixed-precision loops do with torch.amp.GradScaler:
    unscale_ unless the optimizer says its step unscales, clip, step, update (an inf step
    skipped). The same scales and parameters as with torch's AdamW built the same way."""
    runs = {}
    for module in (torch.optim, genesis.optim):
        model = _model()
        opt = module.AdamW(model.parameters(), lr=1e-2, fused=fused)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
        scales = []
        for k in range(25):
            x, y = _batch(k)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y) * (float("inf") if k == 7 else 1.0)
            scaler.scale(loss).backward()
            if not getattr(opt, "_step_supports_amp_scaling", False):
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        runs[module] = (model, scales)
    assert runs[genesis.optim][1] == runs[torch.optim][1]
    _same_params(runs[genesis.optim][0], runs[torch.optim][0])


def test_torch_save_weights_only_round_trip():
    model = _model()
    opt = genesis.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, opt, 5)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    twin = copy.deepcopy(model)
    resumed = genesis.optim.AdamW(twin.parameters(), lr=1e-2)
    resumed.load_state_dict(loaded)
    _train(model, opt, 5, start=5)
    _train(twin, resumed, 5, start=5)
    _same_params(twin, model, rtol=0, atol=0)


def test_distributed_checkpoint_state_dict_helpers_round_trip():
    dcp = pytest.importorskip("torch.distributed.checkpoint.state_dict")
    model = _model()
    opt = genesis.optim.AdamW(model.parameters(), lr=1e-2)
    _train(model, opt, 4)
    osd = dcp.get_optimizer_state_dict(model, opt)
    assert set(osd["state"]) == {name for name, _ in model.named_parameters()}
    twin = copy.deepcopy(model)
    resumed = genesis.optim.AdamW(twin.parameters(), lr=1e-2)
    dcp.set_optimizer_state_dict(twin, resumed, copy.deepcopy(osd))
    _train(model, opt, 4, start=4)
    _train(twin, resumed, 4, start=4)
    _same_params(twin, model, rtol=0, atol=0)


def test_torch_compiled_model_trains_with_genesis_as_eager():
    eager, compiled_model = _model(), _model()
    compiled = torch.compile(compiled_model, backend="aot_eager")
    opt_e = genesis.optim.AdamW(eager.parameters(), lr=1e-2)
    opt_c = genesis.optim.AdamW(compiled_model.parameters(), lr=1e-2)
    for k in range(5):
        x, y = _batch(k)
        for m, o in ((eager, opt_e), (compiled, opt_c)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    _same_params(compiled_model, eager)


def test_a_compiled_training_step_breaks_its_graph_once_at_the_genesis_step():
    """optimizer.step() inside a torch.compile'd function runs eagerly behind one graph break
    (genesis/optim/_base.py, _eagerly): Dynamo does not step into genesis and warn about each
    call into the core, the step hooks still run, and the result is the eager one."""
    import warnings

    torch._dynamo.reset()
    eager, compiled_model = _model(), _model()
    opt_e = genesis.optim.AdamW(eager.parameters(), lr=1e-2)
    opt_c = genesis.optim.AdamW(compiled_model.parameters(), lr=1e-2)
    log = []
    opt_c.register_step_post_hook(lambda o, a, k: log.append("post"))

    def train_step(model, opt, x, y):
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()

    compiled = torch.compile(train_step, backend="aot_eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(5):
            x, y = _batch(k)
            train_step(eager, opt_e, x, y)
            compiled(compiled_model, opt_c, x, y)
    dynamo = [str(w.message) for w in caught if "Dynamo" in str(w.message)]
    assert not dynamo, dynamo[0]
    assert log == ["post"] * 5
    _same_params(compiled_model, eager)
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------ hooks
def _record_hooks(opt, log):
    opt.register_step_pre_hook(lambda o, a, k: log.append("pre"))
    opt.register_step_pre_hook(lambda o, a, k: log.append("pre2"))
    opt.register_step_post_hook(lambda o, a, k: log.append("post"))
    opt.register_state_dict_pre_hook(lambda o: log.append("sd_pre"))
    opt.register_state_dict_pre_hook(lambda o: log.append("sd_pre_first"), prepend=True)
    opt.register_state_dict_post_hook(lambda o, sd: log.append("sd_post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: log.append("load_pre"))
    opt.register_load_state_dict_post_hook(lambda o: log.append("load_post"))
    opt.register_load_state_dict_post_hook(lambda o: log.append("load_post_first"), prepend=True)


def test_hooks_fire_as_around_torch_steps():
    logs = {}
    for module in (torch.optim, genesis.optim):
        log = logs[module] = []
        model = _model()
        opt = module.SGD(model.parameters(), lr=0.1)
        _record_hooks(opt, log)
        handles = [
            register_optimizer_step_pre_hook(lambda o, a, k, log=log: log.append("global_pre")),
            register_optimizer_step_post_hook(lambda o, a, k, log=log: log.append("global_post")),
        ]
        try:
            _train(model, opt, 2)
            opt.load_state_dict(opt.state_dict())
        finally:
            for h in handles:
                h.remove()
        _train(model, opt, 1)
    assert logs[genesis.optim] == logs[torch.optim]
    assert logs[genesis.optim][:5] == ["global_pre", "pre", "pre2", "post", "global_post"]


def test_a_pre_hook_may_replace_the_step_arguments():
    model = _model()
    opt = genesis.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        return torch.tensor(3.0)

    opt.register_step_pre_hook(lambda o, args, kwargs: ((), {"closure": closure}))
    assert opt.step().item() == 3.0 and calls == [1]
    opt.register_step_pre_hook(lambda o, args, kwargs: "not a pair")
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step()


def test_a_removed_hook_no_longer_fires():
    model = _model()
    opt = genesis.optim.AdamW(model.parameters())
    log = []
    handle = opt.register_step_post_hook(lambda o, a, k: log.append(1))
    _train(model, opt, 1)
    handle.remove()
    _train(model, opt, 1)
    assert log == [1]


# ----------------------------------------------------------------------- named parameters
def test_named_parameters_state_dict_as_torch():
    sds = {}
    for module in (torch.optim, genesis.optim):
        model = _model()
        named = list(model.named_parameters())
        opt = module.AdamW([{"params": named[:2], "lr": 1e-2}, {"params": named[2:]}])
        _train(model, opt, 2)
        sds[module] = opt.state_dict()
    t, g = sds[torch.optim], sds[genesis.optim]
    assert [grp["param_names"] for grp in g["param_groups"]] == [grp["param_names"] for grp in t["param_groups"]]
    assert [grp["params"] for grp in g["param_groups"]] == [grp["params"] for grp in t["param_groups"]]
    # Each loads into the other library's optimizer.
    torch.optim.AdamW(list(_model().named_parameters())).load_state_dict(copy.deepcopy(_single_group(g)))
    genesis.optim.AdamW(list(_model().named_parameters())).load_state_dict(copy.deepcopy(_single_group(t)))


def _single_group(sd):
    """A two-group state_dict folded into one group (for loading into a one-group optimizer)."""
    groups = sd["param_groups"]
    merged = dict(groups[0])
    merged["params"] = [i for g in groups for i in g["params"]]
    merged["param_names"] = [n for g in groups for n in g["param_names"]]
    return {"state": sd["state"], "param_groups": [merged]}


def test_named_and_unnamed_groups_do_not_mix():
    model = _model()
    named = list(model.named_parameters())
    opt = genesis.optim.SGD(named[:2], lr=0.1)
    with pytest.raises(ValueError, match="cannot add param group without names"):
        opt.add_param_group({"params": [p for _, p in named[2:]]})


def test_numpy_only_install_uses_the_standalone_base_with_the_same_behaviour():
    """Without torch (played by GENESIS_NO_TORCH), the same classes derive from the standalone
    base: hooks register and fire in torch's order, and a step gives the numbers of the
    torch-based class on NumPy parameters."""
    import os
    import subprocess
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from no_torch import NO_TORCH_ENV

    code = (
        "import sys, numpy as np, genesis\n"
        "from genesis.optim import _base\n"
        "assert not _base.HAS_TORCH_BASE and 'torch' not in sys.modules\n"
        "p = genesis.nn.Parameter(np.linspace(-1, 1, 7).astype(np.float32))\n"
        "opt = genesis.optim.AdamW([p], lr=0.1)\n"
        "log = []\n"
        "opt.register_step_pre_hook(lambda o, a, k: log.append('pre'))\n"
        "h = opt.register_step_post_hook(lambda o, a, k: log.append('post'))\n"
        "_base.register_optimizer_step_pre_hook(lambda o, a, k: log.append('global_pre'))\n"
        "opt.register_load_state_dict_post_hook(lambda o: log.append('load_post'))\n"
        "for _ in range(3):\n"
        "    p.grad = np.cos(p.data).astype(np.float32)\n"
        "    opt.step()\n"
        "h.remove()\n"
        "opt.load_state_dict(opt.state_dict())\n"
        "print(' '.join(log)); print(repr(p.data.tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=NO_TORCH_ENV, check=True
    ).stdout.splitlines()
    assert out[0] == " ".join(["global_pre", "pre", "post"] * 3 + ["load_post"])
    import numpy as np

    p = genesis.nn.Parameter(np.linspace(-1, 1, 7).astype(np.float32))
    opt = genesis.optim.AdamW([p], lr=0.1)
    for _ in range(3):
        p.grad = np.cos(p.data).astype(np.float32)
        opt.step()
    assert eval(out[1]) == p.data.tolist()


# ------------------------------------------- torch.optim.swap_in_optimizer_params_and_state
def _swap_model(name, dtype=torch.float32):
    torch.manual_seed(0)
    bias = name != "Muon"  # torch's Muon takes 2-D parameters only
    # 80 x 70 = 5,600 elements: above the 8-bit state's 4,096-element float32 threshold.
    return torch.nn.Sequential(torch.nn.Linear(70, 80, bias=bias), torch.nn.Linear(80, 3, bias=bias)).to(dtype)


def _random_grads(params, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


def _swap_step(module, name, kwargs, dtype=torch.float32):
    """Three steps of a live optimizer, then one step inside swap_in_optimizer_params_and_state
    on copies of its parameters and state_dict, then three more live steps. Returns the live
    model, the swapped-in parameters and the swapped-in state_dict (edited in place)."""
    cls = getattr(module, name) if module is genesis.optim else reference.torch_class(name)
    model = _swap_model(name, dtype)
    opt = cls(model.parameters(), lr=1e-2, **kwargs)
    for k in range(3):
        _random_grads(model.parameters(), k)
        opt.step()
    swapped = {n: p.detach().clone() for n, p in model.named_parameters()}
    _random_grads(swapped.values(), 99)
    swapped_sd = copy.deepcopy(opt.state_dict())
    with torch.optim.swap_in_optimizer_params_and_state(opt, swapped, swapped_sd):
        opt.step()
    for k in range(3, 6):
        _random_grads(model.parameters(), k)
        opt.step()
    return model, swapped, swapped_sd


def _swap_cases():
    # The API needs state to swap: SGD has none without momentum (torch's raises RuntimeError).
    for name in reference.NAMES:
        yield name, {"momentum": 0.9} if name == "SGD" else {}, torch.float32
    for name in reference.ELEMENTWISE_NAMES:
        yield name, {"state_dtype": "int8", **({"momentum": 0.9} if name == "SGD" else {})}, torch.float32
    yield "AdamW", {"state_dtype": "bfloat16"}, torch.float32
    yield "AdamW", {"master_weights": True}, torch.bfloat16
    yield "AdamW", {"master_weights": True, "state_dtype": "int8"}, torch.bfloat16
    yield "Lion", {"master_weights": True}, torch.float16


@pytest.mark.parametrize(
    "name, kwargs, dtype", list(_swap_cases()), ids=lambda v: str(v).replace("torch.", "") if v != {} else "-"
)
def test_swap_in_optimizer_params_and_state_steps_the_swapped_tensors(name, kwargs, dtype):
    """torch 2.13's swap_in_optimizer_params_and_state replaces ``optimizer.state`` and each
    group's params for one context. A genesis step inside it must update the swapped-in
    parameters and the user's state_dict tensors in place exactly as a fresh optimizer loaded
    from that state_dict would, and the live optimizer (its cached plan for the live
    parameters included) must continue as though there had been no swap."""
    model, swapped, swapped_sd = _swap_step(genesis.optim, name, kwargs, dtype)

    # The same step by a fresh optimizer over copies, loaded from the same state_dict.
    twin = {n: p.detach().clone() for n, p in _swap_model(name, dtype).named_parameters()}
    cls = getattr(genesis.optim, name)
    live = _swap_model(name, dtype)
    ref = cls(live.parameters(), lr=1e-2, **kwargs)
    for k in range(3):
        _random_grads(live.parameters(), k)
        ref.step()
    for n, p in live.named_parameters():
        twin[n].copy_(p.detach())
    _random_grads(twin.values(), 99)
    fresh = cls(list(twin.values()), lr=1e-2, **kwargs)
    fresh.load_state_dict(copy.deepcopy(ref.state_dict()))
    fresh.step()
    for n in swapped:
        assert torch.equal(swapped[n], twin[n]), n
    fresh_state = fresh.state_dict()["state"]
    for index, entries in swapped_sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, torch.as_tensor(fresh_state[index][key])), (index, key)

    # The live optimizer: three more steps, as the twin that never swapped.
    for k in range(3, 6):
        _random_grads(live.parameters(), k)
        ref.step()
    for p, q in zip(model.parameters(), live.parameters()):
        assert torch.equal(p, q)

    if (
        "state_dtype" not in kwargs and dtype == torch.float32 and hasattr(torch.optim, name)
    ):  # and the same numbers as torch's own class
        _, torch_swapped, _ = _swap_step(torch.optim, name, kwargs, dtype)
        for n in swapped:
            torch.testing.assert_close(swapped[n], torch_swapped[n], rtol=1e-5, atol=1e-6)


def test_swap_in_lbfgs_and_sparse_adam_step_the_swapped_tensors():
    """The two optimizers outside the rule registry. torch 2.13's own LBFGS steps its live
    parameters inside the swap (it keeps the constructor's parameter list); genesis's follows
    param_groups, as the API documents: the swapped-in parameters move, exactly as under a
    fresh LBFGS loaded from the same state_dict, and the live ones stay."""
    x, y = torch.randn(8, 5, generator=torch.Generator().manual_seed(1)), torch.randn(8, 3)

    def closure_for(params):
        def closure():
            for p in params.values():
                p.grad = None
            loss = torch.nn.functional.mse_loss(torch.nn.functional.linear(x, params["weight"], params["bias"]), y)
            loss.backward()
            return loss

        return closure

    kwargs = dict(lr=0.5, history_size=3, max_iter=4, line_search_fn="strong_wolfe")
    live = dict(torch.nn.Linear(5, 3).named_parameters())
    opt = genesis.optim.LBFGS(live.values(), **kwargs)
    opt.step(closure_for(live))
    before = {n: p.detach().clone() for n, p in live.items()}
    swapped = {n: p.detach().clone().requires_grad_() for n, p in live.items()}
    twin = {n: p.detach().clone().requires_grad_() for n, p in live.items()}
    fresh = genesis.optim.LBFGS(twin.values(), **kwargs)
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    fresh.step(closure_for(twin))
    with torch.optim.swap_in_optimizer_params_and_state(opt, swapped, copy.deepcopy(opt.state_dict())):
        opt.step(closure_for(swapped))
    for n in live:
        assert not torch.equal(swapped[n], before[n])
        assert torch.equal(swapped[n], twin[n])
        assert torch.equal(live[n], before[n])

    emb = torch.nn.Embedding(10, 4, sparse=True)
    sparse = genesis.optim.SparseAdam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    sparse.step()
    before = emb.weight.detach().clone()
    swapped = {"weight": before.clone()}
    swapped["weight"].grad = torch.sparse_coo_tensor([[3, 1]], torch.ones(2, 4), (10, 4), check_invariants=True)
    sd = copy.deepcopy(sparse.state_dict())
    twin = before.clone()
    twin.grad = swapped["weight"].grad.clone()
    fresh = genesis.optim.SparseAdam([twin])
    fresh.load_state_dict(copy.deepcopy(sd))
    fresh.step()
    with torch.optim.swap_in_optimizer_params_and_state(sparse, swapped, sd):
        sparse.step()
    assert torch.equal(swapped["weight"], twin) and not torch.equal(twin, before)
    assert torch.equal(emb.weight, before)
    for key in ("exp_avg", "exp_avg_sq"):  # the user's state_dict tensors, edited in place
        assert torch.equal(sd["state"][0][key], fresh.state_dict()["state"][0][key])


# --------------------------------------------------------------------------- torch.profiler
def _profiled_names(opt, step):
    from torch.profiler import profile

    with profile() as prof:
        step()
        opt.zero_grad()
    return sorted({e.key for e in prof.key_averages() if e.key.startswith("Optimizer.")})


@pytest.mark.parametrize("name", reference.NAMES + ["LBFGS"])
def test_a_profile_names_genesis_steps_as_torchs(name):
    """Under torch.profiler a step and a zero_grad are regions named as torch's base names them
    ("Optimizer.step#AdamW.step"), for torch's class of the same name and genesis's."""
    model = torch.nn.Linear(6, 4, bias=name != "Muon")
    x = torch.randn(3, 6)

    def closure():
        loss = model(x).pow(2).sum()
        loss.backward()
        return loss

    names = {}
    for module in (torch.optim, genesis.optim):
        if not hasattr(module, name):
            continue
        opt = getattr(module, name)(model.parameters(), lr=1e-3)
        closure()
        step = functools.partial(opt.step, closure) if name == "LBFGS" else opt.step
        names[module] = _profiled_names(opt, step)
    assert names[genesis.optim] == [f"Optimizer.step#{name}.step", f"Optimizer.zero_grad#{name}.zero_grad"]
    if torch.optim in names:
        assert names[genesis.optim] == names[torch.optim]


def test_no_profiler_region_is_entered_without_a_profiler(monkeypatch):
    """torch's region costs microseconds a call; genesis enters it only while a profiler runs."""
    from genesis.optim import _base

    entered = []
    real = _base.record_function
    monkeypatch.setattr(_base, "record_function", lambda name: entered.append(name) or real(name))
    model = torch.nn.Linear(6, 4)
    opt = genesis.optim.AdamW(model.parameters())
    model(torch.randn(3, 6)).sum().backward()
    opt.step()
    opt.zero_grad()
    assert entered == []
    model(torch.randn(3, 6)).sum().backward()
    assert _profiled_names(opt, opt.step) == ["Optimizer.step#AdamW.step", "Optimizer.zero_grad#AdamW.zero_grad"]
    assert entered == ["Optimizer.step#AdamW.step", "Optimizer.zero_grad#AdamW.zero_grad"]


def _autocast_cases():
    for name in reference.NAMES:
        yield name, {}, torch.float32
    yield "AdamW", {"state_dtype": "int8"}, torch.float32
    yield "Lion", {"state_dtype": "bfloat16"}, torch.float32
    yield "AdamW", {"master_weights": True}, torch.bfloat16


def _autocast_run(cls, kwargs, dtype, autocast_dtype=None):
    """Eight steps of cls on _swap_model, inside torch.autocast(cpu, autocast_dtype) if given."""
    model = _swap_model(cls.__name__, dtype)
    opt = cls(model.parameters(), lr=1e-2, **kwargs)
    for k in range(8):
        _random_grads(model.parameters(), k)
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "name, kwargs, dtype", list(_autocast_cases()), ids=lambda v: str(v).replace("torch.", "") if v != {} else "-"
)
def test_a_step_inside_torch_autocast_is_the_step_outside(name, kwargs, dtype):
    """Lightning's manual optimization (and any loop that steps inside its forward's
    autocast region) runs step() under torch.autocast. genesis's update runs in the core, which
    autocast does not reach: bit for bit the step outside. Muon's Newton-Schulz products are
    the array library's, as torch's are, so under a float16 region they are float16 products
    like torch's (the same bits as torch's Muon there); under bfloat16 they already are."""
    cls = getattr(genesis.optim, name)
    outside = _autocast_run(cls, kwargs, dtype)
    for p, q in zip(_autocast_run(cls, kwargs, dtype, torch.bfloat16), outside):
        assert torch.equal(p, q)
    if name == "Muon":
        ours = _autocast_run(cls, kwargs, dtype, torch.float16)
        theirs = _autocast_run(torch.optim.Muon, kwargs, dtype, torch.float16)
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q)
    else:
        for p, q in zip(_autocast_run(cls, kwargs, dtype, torch.float16), outside):
            assert torch.equal(p, q)


def test_a_sparse_adam_step_inside_torch_autocast_is_the_step_outside():
    def run(autocast):
        torch.manual_seed(0)
        table = torch.nn.Embedding(100, 8, sparse=True)
        opt = genesis.optim.SparseAdam(table.parameters(), lr=1e-2)
        for _ in range(5):
            opt.zero_grad()
            table(torch.randint(0, 100, (20,))).square().sum().backward()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                opt.step()
        return table.weight.detach()

    assert torch.equal(run(True), run(False))


def test_torch_adafactor_inside_autocast_differs_where_genesis_keeps_its_numbers():
    """The documented difference (docs/migrating-from-torch.md): torch's Adafactor forms its
    second-moment estimate with a matrix product (row_var @ col_var), which torch.autocast turns
    into a bfloat16 product; genesis's step inside the region keeps torch's numbers from outside
    it."""
    theirs_outside = _autocast_run(reference.torch_class("Adafactor"), {}, torch.float32)
    theirs_inside = _autocast_run(reference.torch_class("Adafactor"), {}, torch.float32, torch.bfloat16)
    ours_inside = _autocast_run(genesis.optim.Adafactor, {}, torch.float32, torch.bfloat16)
    assert any(not torch.equal(p, q) for p, q in zip(theirs_inside, theirs_outside))
    for p, q in zip(ours_inside, theirs_outside):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_clipping_inside_torch_autocast_is_the_clipping_outside():
    """genesis.nn.utils.clip_grad_norm_ reduces in the core: the same total norm and gradients
    inside an autocast region."""
    results = []
    for enabled in (False, True):
        model = _swap_model("AdamW")
        _random_grads(model.parameters(), 0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            norm = genesis.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        results.append((norm, [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    for p, q in zip(results[0][1], results[1][1]):
        assert torch.equal(p, q)
