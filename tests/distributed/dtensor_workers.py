"""What each rank runs for test_dtensor.py: genesis optimizers on DTensor parameters (FSDP2's
fully_shard over a CPU device mesh, and DTensors made by hand), against torch's optimizers on
an identical model fed the same data (NOTE: [DTensor parameters] in genesis/_interop.py)."""

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import genesis

# Every element-wise rule torch also has, with options that exercise its flags.
RULES = [
    ("Adam", dict(lr=1e-2, weight_decay=0.01, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.05, lr_decay=1e-3, initial_accumulator_value=0.1)),
    ("Adadelta", dict(lr=0.5, weight_decay=0.01)),
    ("Adamax", dict(lr=1e-2)),
    ("NAdam", dict(lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=1e-2, weight_decay=0.01)),
    ("ASGD", dict(lr=1e-2, t0=5)),
    ("Rprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-3, momentum=0.5, centered=True)),
]
STEPS = 25
LIBRARIES = {"genesis": genesis.optim, "torch": torch.optim}


def _model(dtype, world_size, frozen=True):
    """A small MLP sharded by FSDP2 over all ranks. Its row counts (7 and 3) do not divide by 2 or
    4, so shards are uneven and on 4 ranks one shard of the last layer is empty; the last bias is
    frozen (no gradient, no state)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(dtype)
    if frozen:
        model[2].bias.requires_grad_(False)
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _groups(model):
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": biases, "lr": 2e-3}]


def _batch(rank, step, dtype):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(6, 5, generator=g, dtype=dtype), torch.randn(6, 3, generator=g, dtype=dtype)


def _backward(model, rank, step, dtype):
    x, y = _batch(rank, step, dtype)
    torch.nn.functional.mse_loss(model(x), y).backward()


def _local(x):
    return x.to_local().detach().clone() if isinstance(x, DTensor) else x.detach().clone()


def _state_check(gopt, topt, gmodel, tmodel):
    """genesis's state has torch's keys; each array (not the 0-dim counters) a DTensor laid out
    as its parameter, of torch's state's shard shape."""
    ok = True
    for p, q in zip(gmodel.parameters(), tmodel.parameters()):
        gs, ts = gopt.state.get(p, {}), topt.state.get(q, {})
        ok &= set(gs) == set(ts)
        for name, value in gs.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                ok &= isinstance(value, DTensor) and value.placements == p.placements
                ok &= value.device_mesh == p.device_mesh and value.to_local().shape == _local(ts[name]).shape
    return bool(ok)


class _OnShards:
    """torch's optimizer over the shards as plain tensors, for a rule whose torch implementation
    DTensor cannot run (Rprop: its for-loop indexes in place, its foreach copy has no sharding
    strategy). An element-wise rule on each shard is the rule on the whole tensor."""

    def __init__(self, name, options, model, library=torch.optim):
        with torch.no_grad():  # to_local() is then a leaf alias of the shard
            self.pairs = [(p, p.to_local()) for p in model.parameters()]
        local = {id(p): shard for p, shard in self.pairs}
        groups = [{**g, "params": [local[id(p)] for p in g["params"]]} for g in _groups(model)]
        self.opt = getattr(library, name)(groups, **options)
        self.state = {p: self.opt.state[local] for p, local in self.pairs}

    def step(self):
        for p, local in self.pairs:
            local.grad = None if p.grad is None else p.grad.to_local()
        self.opt.step()
        self.state = {p: self.opt.state[local] for p, local in self.pairs}

    def zero_grad(self):
        for p, local in self.pairs:
            p.grad = local.grad = None


def _reference(name, options, model):
    if name == "Rprop":
        return _OnShards(name, options, model)
    return getattr(torch.optim, name)(_groups(model), **options)


def rule_parity(rank, world_size, dtype_name):
    """Every element-wise rule on FSDP2 parameters, 25 steps, against torch's same optimizer on
    an identical model: the shards of the parameters and of every state array."""
    dtype = getattr(torch, dtype_name)
    out = []
    for name, options in RULES:
        models = [_model(dtype, world_size) for _ in range(2)]
        gopt = getattr(genesis.optim, name)(_groups(models[0]), **options)
        topt = _reference(name, options, models[1])
        for step in range(STEPS):
            for model, opt in zip(models, (gopt, topt)):
                _backward(model, rank, step, dtype)
                opt.step()
                opt.zero_grad()
        params = [(_local(a), _local(b)) for a, b in zip(models[0].parameters(), models[1].parameters())]
        states = []
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            for key, value in gopt.state.get(a, {}).items():
                if isinstance(value, torch.Tensor):
                    states.append((key, _local(value), _local(topt.state[b][key])))
        out.append(
            {
                "rule": name,
                "params": params,
                "states": states,
                "layout": _state_check(gopt, topt, *models),
                "shard_sizes": [p.to_local().numel() for p in models[0].parameters()],
            }
        )
    return out


def _continue(model, opt, rank, first, steps, dtype=torch.float32):
    for step in range(first, first + steps):
        _backward(model, rank, step, dtype)
        opt.step()
        opt.zero_grad()
    return [_local(p) for p in model.parameters()]


def checkpoint_round_trips(rank, world_size):
    """torch.distributed.checkpoint's state-dict functions with a genesis optimizer: its full
    state dict loads into torch's AdamW and continues as genesis continues, and torch's loads
    into genesis's; the sharded (DTensor) state dict loads into another genesis optimizer."""
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    to_all = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    out = {}
    for src_lib, dst_lib in (("genesis", "torch"), ("torch", "genesis")):
        src_model = _model(torch.float32, world_size, frozen=False)
        src = LIBRARIES[src_lib].AdamW(src_model.parameters(), lr=1e-2, weight_decay=0.1)
        _continue(src_model, src, rank, 0, 5)
        model_sd = get_model_state_dict(src_model, options=full)
        optim_sd = get_optimizer_state_dict(src_model, src, options=full)
        dst_model = _model(torch.float32, world_size, frozen=False)
        dst = LIBRARIES[dst_lib].AdamW(dst_model.parameters(), lr=1e-2, weight_decay=0.1)
        set_model_state_dict(dst_model, model_sd, options=to_all)
        set_optimizer_state_dict(dst_model, dst, optim_sd, options=to_all)
        want = _continue(src_model, src, rank, 5, 5)
        got = _continue(dst_model, dst, rank, 5, 5)
        out[f"{src_lib}->{dst_lib}"] = list(zip(got, want))
        if src_lib == "genesis":
            out["full_state_is_plain"] = rank != 0 or all(
                not isinstance(v, DTensor) for s in optim_sd["state"].values() for v in s.values()
            )
            sharded = get_optimizer_state_dict(src_model, src)
            again_model = _model(torch.float32, world_size, frozen=False)
            again = genesis.optim.AdamW(again_model.parameters(), lr=1e-2, weight_decay=0.1)
            set_model_state_dict(again_model, get_model_state_dict(src_model))
            set_optimizer_state_dict(again_model, again, sharded)
            out["sharded_state_is_dtensor"] = all(
                isinstance(v, DTensor) for s in sharded["state"].values() for k, v in s.items() if k != "step"
            )
            out["sharded genesis->genesis"] = list(
                zip(_continue(again_model, again, rank, 10, 3), _continue(src_model, src, rank, 10, 3))
            )
    return out


def _errors_of(fn):
    try:
        fn()
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def refusals(rank, world_size):
    """What genesis refuses for DTensors, each before anything changes."""
    mesh = init_device_mesh("cpu", (world_size,))
    torch.manual_seed(0)
    sharded = torch.nn.Parameter(distribute_tensor(torch.randn(8, 4), mesh, [Shard(0)]))
    out = {
        "lamb_sharded": _errors_of(lambda: genesis.optim.LAMB([sharded])),
        "muon": _errors_of(lambda: genesis.optim.Muon([sharded])),
        "lbfgs": _errors_of(lambda: genesis.optim.LBFGS([sharded])),
        "sparse_adam": _errors_of(lambda: genesis.optim.SparseAdam([sharded])),
        "int8": _errors_of(lambda: genesis.optim.AdamW([sharded], state_dtype="int8", min_8bit_size=1)),
    }
    # int8 asked for after construction: refused when the state would be created
    opt = genesis.optim.AdamW([sharded])
    opt.param_groups[0]["state_dtype"] = "int8"
    opt.param_groups[0]["min_8bit_size"] = 1
    sharded.grad = distribute_tensor(torch.ones(8, 4), mesh, [Shard(0)])
    before = sharded.to_local().clone()
    out["int8_at_step"] = _errors_of(opt.step)
    # a plain gradient for a DTensor parameter
    opt = genesis.optim.AdamW([sharded])
    sharded.grad = torch.ones(8, 4)
    out["plain_grad"] = _errors_of(opt.step)
    out["unchanged"] = torch.equal(sharded.to_local(), before) and not opt.state
    # the same after a first step (the shards planned): checked before any group is updated
    plain = torch.nn.Parameter(torch.ones(3))
    opt = genesis.optim.AdamW([{"params": [plain]}, {"params": [sharded]}])
    plain.grad = torch.ones(3)
    sharded.grad = distribute_tensor(torch.ones(8, 4), mesh, [Shard(0)])
    opt.step()
    before = (plain.detach().clone(), sharded.to_local().clone())
    sharded.grad = torch.ones(8, 4)
    out["plain_grad_later"] = _errors_of(opt.step)
    out["unchanged_later"] = torch.equal(plain.detach(), before[0]) and torch.equal(sharded.to_local(), before[1])
    # a gradient with other placements is redistributed (a replicated one, here)
    replicated_grad = distribute_tensor(torch.full((8, 4), 0.5), mesh, [Replicate()])
    a = torch.nn.Parameter(distribute_tensor(torch.ones(8, 4), mesh, [Shard(0)]))
    b = torch.nn.Parameter(distribute_tensor(torch.ones(8, 4), mesh, [Shard(0)]))
    a.grad = replicated_grad
    b.grad = replicated_grad.redistribute(mesh, [Shard(0)])
    genesis.optim.SGD([a], lr=0.1).step()
    torch.optim.SGD([b], lr=0.1).step()
    out["redistributed"] = torch.equal(a.to_local(), b.to_local())
    return out


def replicated_reduction_rules(rank, world_size):
    """Replicated DTensors hold the whole tensor on every rank, so LAMB's and Adafactor's
    per-tensor norms are exact: the same bits as on plain tensors."""
    mesh = init_device_mesh("cpu", (world_size,))
    out = {}
    for name in ("LAMB", "Adafactor"):
        torch.manual_seed(0)
        values = [torch.randn(6, 5), torch.randn(5)]
        plain = [torch.nn.Parameter(v.clone()) for v in values]
        dist_params = [torch.nn.Parameter(distribute_tensor(v.clone(), mesh, [Replicate()])) for v in values]
        popt = getattr(genesis.optim, name)(plain, lr=1e-2)
        dopt = getattr(genesis.optim, name)(dist_params, lr=1e-2)
        for step in range(10):
            g = torch.Generator().manual_seed(step)
            grads = [torch.randn(v.shape, generator=g) for v in values]
            for p, d, gr in zip(plain, dist_params, grads):
                p.grad = gr.clone()
                d.grad = distribute_tensor(gr.clone(), mesh, [Replicate()])
            popt.step()
            dopt.step()
        out[name] = all(torch.equal(p.detach(), d.to_local()) for p, d in zip(plain, dist_params))
    return out


def versions(rank, world_size):
    """A step between a forward pass and its backward on DTensor parameters (sharded: AdamW;
    replicated: LAMB) is torch's in-place error, as with torch's optimizers: genesis advances
    the DTensors' version counters, not only their shards' (NOTE: [version counters] in
    csrc/python/bindings.cpp)."""
    mesh = init_device_mesh("cpu", (world_size,))
    out = {}
    for name, placement in (("AdamW", Shard(0)), ("LAMB", Replicate())):
        for lib in ("genesis", "torch"):
            if not hasattr(LIBRARIES[lib], name):
                continue
            p = torch.nn.Parameter(distribute_tensor(torch.linspace(-1.0, 1.0, 12).reshape(4, 3), mesh, [placement]))
            frozen = torch.nn.Parameter(distribute_tensor(torch.ones(4, 3), mesh, [placement]))
            opt = getattr(LIBRARIES[lib], name)([p, frozen], lr=0.1)
            loss = (p * p).sum() + (frozen * frozen).sum()
            p.grad = torch.ones_like(p)
            before = (p._version, frozen._version)
            opt.step()
            try:
                loss.backward()
                raised = ""
            except RuntimeError as e:
                raised = str(e)
            out[f"{name}/{lib}"] = (p._version > before[0], frozen._version == before[1], raised)
    return out


def clipping_and_scaling(rank, world_size):
    """genesis.nn.utils.clip_grad_norm_ and the deferred optimizer.clip_grad_norm_ on FSDP2
    gradients against torch.nn.utils.clip_grad_norm_, and genesis.amp.GradScaler: an inf in one
    rank's shard only makes every rank skip that step."""
    out = {}
    # the eager clip: the same gradients, clipped by genesis and by torch
    models = [_model(torch.float32, world_size) for _ in range(2)]
    for model in models:
        _backward(model, rank, 0, torch.float32)
    got = genesis.nn.utils.clip_grad_norm_(models[0].parameters(), 0.05)
    want = torch.nn.utils.clip_grad_norm_(models[1].parameters(), 0.05)
    out["eager_total"] = (_local(got.full_tensor()), _local(want.full_tensor()))
    out["eager_grads"] = [
        (_local(a.grad), _local(b.grad))
        for a, b in zip(models[0].parameters(), models[1].parameters())
        if a.grad is not None
    ]
    genesis.nn.utils.clip_grad_value_(models[0].parameters(), 1e-3)
    torch.nn.utils.clip_grad_value_(models[1].parameters(), 1e-3)
    out["value_grads"] = [
        (_local(a.grad), _local(b.grad))
        for a, b in zip(models[0].parameters(), models[1].parameters())
        if a.grad is not None
    ]
    # the deferred clip inside genesis's step, 10 steps
    models = [_model(torch.float32, world_size) for _ in range(2)]
    gopt = genesis.optim.AdamW(models[0].parameters(), lr=1e-2)
    topt = torch.optim.AdamW(models[1].parameters(), lr=1e-2)
    totals = []
    for step in range(10):
        for model in models:
            _backward(model, rank, step, torch.float32)
        a = gopt.clip_grad_norm_(0.05)
        b = torch.nn.utils.clip_grad_norm_(models[1].parameters(), 0.05)
        totals.append((_local(a.full_tensor()), _local(b.full_tensor())))
        gopt.step()
        topt.step()
        gopt.zero_grad()
        topt.zero_grad()
    out["deferred_totals"] = totals
    out["deferred_params"] = [(_local(a), _local(b)) for a, b in zip(models[0].parameters(), models[1].parameters())]
    # GradScaler: the inf is in rank 1's shard only
    model = _model(torch.float32, world_size)
    opt = genesis.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = genesis.amp.GradScaler(init_scale=1024.0)
    skipped = []
    for step in range(4):
        x, y = _batch(rank, step, torch.float32)
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        if step == 2 and rank == 1:
            next(model.parameters()).grad.to_local().view(-1)[0] = float("inf")
        before = [_local(p) for p in model.parameters()]
        if step % 2:
            scaler.unscale_(opt)  # eager for DTensors: the inf check happens here
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        skipped.append(all(torch.equal(b, _local(p)) for b, p in zip(before, model.parameters())))
    out["skipped"] = skipped
    out["scale"] = scaler.get_scale()
    return out


def storage_less_subclass(rank, world_size):
    """A tensor subclass that wraps others (no memory of its own, data_ptr() 0) and is not a
    DTensor: refused with a TypeError as a parameter and as a gradient, never dereferenced."""
    from torch.testing._internal.two_tensor import TwoTensor

    wrapped = TwoTensor(torch.ones(4), torch.ones(4))
    out = {"data_ptr": wrapped.data_ptr()}
    out["param"] = _errors_of(lambda: genesis.optim.SGD([torch.nn.Parameter(wrapped)], lr=0.1))
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = TwoTensor(torch.ones(4), torch.ones(4))
    opt = genesis.optim.SGD([p], lr=0.1)
    out["grad"] = _errors_of(opt.step)
    out["clip"] = _errors_of(lambda: genesis.nn.utils.clip_grad_norm_([p], 1.0))
    out["unchanged"] = torch.equal(p.detach(), torch.ones(4))
    dist.barrier()
    return out


def elsewhere(rank, world_size, path):
    """genesis.save and the flat buffers refuse DTensors with a message saying what to do."""
    from genesis.distributed import FlatBuffer

    mesh = init_device_mesh("cpu", (world_size,))
    p = torch.nn.Parameter(distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)]))
    out = {"flat": _errors_of(lambda: FlatBuffer([p]))}
    out["save"] = _errors_of(lambda: genesis.save({"w": p.detach()}, f"{path}/rank{rank}.gen"))
    return out


def replaced_state(rank, world_size):
    """The shard plan never trusts a state array the user could have replaced: a state DTensor
    swapped in between steps is used from the next step on (as torch uses it), and one laid out
    otherwise than its parameter is refused before anything changes."""
    mesh = init_device_mesh("cpu", (world_size,))
    torch.manual_seed(0)
    values = [torch.randn(6, 3), torch.randn(4)]
    params = {
        lib: [torch.nn.Parameter(distribute_tensor(v.clone(), mesh, [Shard(0)])) for v in values] for lib in LIBRARIES
    }
    opts = {lib: LIBRARIES[lib].AdamW(params[lib], lr=1e-2) for lib in LIBRARIES}

    def steps(first, count):
        for step in range(first, first + count):
            g = torch.Generator().manual_seed(step)
            grads = [torch.randn(v.shape, generator=g) for v in values]
            for lib in LIBRARIES:
                for p, grad in zip(params[lib], grads):
                    p.grad = distribute_tensor(grad.clone(), mesh, [Shard(0)])
                opts[lib].step()

    steps(0, 3)
    for lib in LIBRARIES:
        p = params[lib][0]
        opts[lib].state[p]["exp_avg"] = distribute_tensor(torch.full((6, 3), 0.5), mesh, [Shard(0)])
    steps(3, 3)
    out = {
        "same": [
            torch.equal(a.to_local(), b.to_local()) or (a.to_local() - b.to_local()).abs().max().item() < 1e-6
            for a, b in zip(params["genesis"], params["torch"])
        ]
    }
    p = params["genesis"][0]
    before = p.to_local().clone()
    opts["genesis"].state[p]["exp_avg"] = distribute_tensor(torch.zeros(6, 3), mesh, [Replicate()])
    p.grad = distribute_tensor(torch.ones(6, 3), mesh, [Shard(0)])
    out["misplaced"] = _errors_of(opts["genesis"].step)
    out["unchanged"] = torch.equal(p.to_local(), before)
    return out


def bf16_master_weights(rank, world_size):
    """bfloat16 FSDP2 parameters with float32 master weights (and stochastic rounding): the
    update on the DTensors gives the bits of the same genesis update on their shards as plain
    tensors, and the master weights are DTensors laid out as the parameters."""
    options = dict(lr=1e-2, weight_decay=0.1, master_weights=True, stochastic_rounding=True, seed=7)
    models = [_model(torch.bfloat16, world_size) for _ in range(2)]
    on_dtensors = genesis.optim.AdamW(_groups(models[0]), **options)
    on_shards = _OnShards("AdamW", options, models[1], library=genesis.optim)
    for step in range(10):
        for model, opt in zip(models, (on_dtensors, on_shards)):
            _backward(model, rank, step, torch.bfloat16)
            opt.step()
            opt.zero_grad()
    same = all(torch.equal(_local(a), _local(b)) for a, b in zip(models[0].parameters(), models[1].parameters()))
    masters = [on_dtensors.state[p]["master_param"] for p in models[0].parameters() if p in on_dtensors.state]
    laid_out = all(isinstance(m, DTensor) and m.dtype == torch.float32 for m in masters)
    same_master = all(
        torch.equal(_local(on_dtensors.state[a]["master_param"]), on_shards.state[b]["master_param"])
        for a, b in zip(models[0].parameters(), models[1].parameters())
        if a in on_dtensors.state
    )
    return {"same": same, "masters": len(masters), "laid_out": laid_out, "same_master": same_master}
