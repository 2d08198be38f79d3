"""What each rank runs for test_fsdp1.py: genesis optimizers on FSDP1
(torch.distributed.fsdp.FullyShardedDataParallel) over gloo, against torch's optimizers on an
identical model fed the same data. FSDP1 hands the optimizer plain tensors: its flat
parameters' shards (use_orig_params=False), or views of them shaped as each original
parameter's part of the shard (use_orig_params=True), re-pointed by FSDP between steps."""

import copy

import torch
from dtensor_workers import RULES
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

import genesis

LIBRARIES = {"genesis": genesis.optim, "torch": torch.optim}


def _model(use_orig_params, width=7):
    """Two FSDP units over an MLP whose row counts do not divide by 2 (uneven shards)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))
    cpu = torch.device("cpu")
    model[2] = FSDP(model[2], device_id=cpu, use_orig_params=use_orig_params)
    return FSDP(model, device_id=cpu, use_orig_params=use_orig_params)


def _groups(model, use_orig_params):
    """Two groups (weights, biases) where FSDP1 keeps the original parameters; else its flat ones."""
    if not use_orig_params:
        return model.parameters()
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if n.endswith("weight")]},
        {"params": [p for n, p in named if n.endswith("bias")], "lr": 2e-3},
    ]


def _train(model, opt, rank, first, steps):
    for step in range(first, first + steps):
        g = torch.Generator().manual_seed(100 * step + rank)
        x, y = torch.randn(4, 5, generator=g), torch.randn(4, 3, generator=g)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def rule_parity(rank, world_size, use_orig_params):
    """Every element-wise rule torch also has, 25 steps: the shards and every state array."""
    out = []
    for name, options in RULES:
        models = [_model(use_orig_params) for _ in range(2)]
        opts = [
            getattr(LIBRARIES[lib], name)(_groups(m, use_orig_params), **options) for lib, m in zip(LIBRARIES, models)
        ]
        params = list(zip(*(_train(m, o, rank, 0, 25) for m, o in zip(models, opts))))
        states = [
            (key, value, opts[1].state[b][key])
            for a, b in zip(models[0].parameters(), models[1].parameters())
            for key, value in opts[0].state.get(a, {}).items()
            if isinstance(value, torch.Tensor)
        ]
        out.append({"rule": name, "params": params, "states": states})
    return out


def _full_state_dicts(model, opt):
    """torch.distributed.checkpoint's full (unsharded) model and optimizer state dicts, which
    FSDP1 builds from opt.state_dict(): the original parameters' names and shapes."""
    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))


def _load(model, opt, model_sd, optim_sd):
    set_state_dict(
        model, opt, model_state_dict=model_sd, optim_state_dict=optim_sd, options=StateDictOptions(full_state_dict=True)
    )


def checkpoint_round_trips(rank, world_size, use_orig_params):
    """The full optimizer state dict of a genesis optimizer is torch's, and each library's loads
    into the other and continues as the source continues."""
    out = {"full": [], "continued": {}}
    trained = {}
    for lib in LIBRARIES:
        model = _model(use_orig_params)
        opt = LIBRARIES[lib].AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        _train(model, opt, rank, 0, 5)
        trained[lib] = (model, opt, *copy.deepcopy(_full_state_dicts(model, opt)))
    ours, theirs = trained["genesis"][3], trained["torch"][3]
    out["keys"] = (sorted(ours["state"]), sorted(theirs["state"]))
    for key, state in theirs["state"].items():
        for name, value in state.items():
            # clones: a loaded step tensor is kept, not copied, by torch's load_state_dict, and counts on
            out["full"].append((f"{key}.{name}", ours["state"][key][name].clone(), value.clone()))
    for src, dst in (("genesis", "torch"), ("torch", "genesis")):
        model, opt, model_sd, optim_sd = trained[src]
        dst_model = _model(use_orig_params)
        dst_opt = LIBRARIES[dst].AdamW(dst_model.parameters(), lr=1e-2, weight_decay=0.1)
        _load(dst_model, dst_opt, model_sd, optim_sd)
        out["continued"][f"{src}->{dst}"] = list(
            zip(_train(dst_model, dst_opt, rank, 5, 5), _train(model, opt, rank, 5, 5))
        )
    return out


def eight_bit_state(rank, world_size, use_orig_params):
    """8-bit state on FSDP1's plain tensors. FSDP1 gathers state shaped like the parameters, so
    a state-dict post hook hands it float32_state_dict(sd); the full float32 state loads into a
    fresh 8-bit optimizer (quantized again) and continues as the original does. Without the
    hook the gather fails inside torch (the block scales are not shaped like the parameter)."""
    model = _model(use_orig_params, width=700)  # 3,500-element weight shards: 8-bit with min_8bit_size=0
    options = dict(lr=1e-2, state_dtype="int8", min_8bit_size=0)
    opt = genesis.optim.AdamW(model.parameters(), **options)
    _train(model, opt, rank, 0, 5)
    unhooked = None
    try:
        _full_state_dicts(model, opt)
    except Exception as e:  # torch's own error from its all-gather (the test asserts there is one)
        unhooked = type(e).__name__
    opt.register_state_dict_post_hook(lambda opt, sd: opt.float32_state_dict(sd))
    model_sd, optim_sd = copy.deepcopy(_full_state_dicts(model, opt))
    shapes = {k: {n: (tuple(v.shape), v.dtype) for n, v in s.items()} for k, s in optim_sd["state"].items()}
    again_model = _model(use_orig_params, width=700)
    again = genesis.optim.AdamW(again_model.parameters(), **options)
    _load(again_model, again, model_sd, optim_sd)
    return {
        "unhooked": unhooked,
        "shapes": shapes,
        "coded": [s["exp_avg"].dtype for s in again.state.values()],
        "continued": list(zip(_train(again_model, again, rank, 5, 5), _train(model, opt, rank, 5, 5))),
    }
