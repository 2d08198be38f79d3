"""Moving a ZeroOptimizer's sharded state between its pieces and layout-free forms.

The common form is, per flat buffer, one tensor per state name over the buffer's *logical*
elements (layout.py: the parameters' elements without padding) plus the step count. Pieces are
cut from it and written back into it; it is independent of world size and bucket size, which
is what lets a checkpoint written by N ranks load on M (resharding).

Buffers whose tensors are kept whole (``shard.owned`` set: rules that reduce over whole
tensors) use a simpler common form: each parameter's own state dict (any shapes, e.g.
Adafactor's row and column moments), keyed by the parameter's index in the buffer. It too is
independent of world size and bucket size."""

import torch

from . import comm


def local_entries(zero):
    """This rank's state, one entry per flat buffer: its logical pieces, each with its state
    arrays cut to the piece's logical length (padding left out), on the CPU."""
    entries = []
    for k, shard in enumerate(zero._shards):
        total = shard.buffer.layout.logical_total
        if shard.owned is not None:
            tensors = {}
            for i, view in zip(shard.indices, shard.pieces):
                state = zero.optimizer.state.get(view)
                if state:
                    tensors[i] = _cpu_copy(state)
            entries.append({"buffer": k, "logical_total": total, "tensors": tensors})
            continue
        pieces = []
        for piece, (_lo, _hi, llo, lhi) in zip(shard.pieces, shard.ranges):
            state = zero.optimizer.state.get(piece)
            if not state:
                continue
            arrays = {
                name: value.detach()[: lhi - llo].cpu().clone()
                for name, value in state.items()
                if isinstance(value, torch.Tensor) and name != "step"
            }
            step = state.get("step")
            arrays["step"] = torch.as_tensor(float(step), dtype=torch.float32) if step is not None else None
            pieces.append({"lo": llo, "hi": lhi, "state": arrays})
        entries.append({"buffer": k, "logical_total": total, "pieces": pieces})
    return entries


def _cpu_copy(state):
    return {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def assemble(zero, entries_of_ranks):
    """Per flat buffer, from every rank's entries: ({name: full logical tensor}, step or None),
    or for a buffer of whole tensors {parameter index in the buffer: its state}."""
    result = []
    for k, shard in enumerate(zero._shards):
        total = shard.buffer.layout.logical_total
        full, step, tensors = {}, None, {}
        for entries in entries_of_ranks:
            entry = entries[k]
            if entry["logical_total"] != total:
                raise ValueError(
                    f"state of flat buffer {k} covers {entry['logical_total']} "
                    f"elements, but this optimizer's buffer has {total}: the "
                    "parameters differ"
                )
            if ("tensors" in entry) != (shard.owned is not None):
                raise ValueError(f"state of flat buffer {k} was saved by an optimizer of another kind")
            tensors.update(entry.get("tensors", {}))
            for piece in entry.get("pieces", ()):
                lo, hi = piece["lo"], piece["hi"]
                for name, value in piece["state"].items():
                    if name == "step":
                        step = value if value is not None else step
                        continue
                    if name not in full:
                        full[name] = torch.zeros(total, dtype=value.dtype)
                    full[name][lo:hi] = value.reshape(-1)
        result.append(tensors if shard.owned is not None else (full, step))
    return result


def _param_index(zero):
    return {id(p): i for i, p in enumerate(zero._user_params)}


def _groups_without_params(zero):
    return [{k: v for k, v in g.items() if k != "params"} for g in zero.optimizer.param_groups]


def consolidate(zero):
    """The unsharded optimizer's state_dict over the original parameters (torch's layout)."""
    entries_of_ranks = comm.all_gather_object(local_entries(zero), zero.process_group)
    index_of = _param_index(zero)
    state = {}
    for shard, assembled in zip(zero._shards, assemble(zero, entries_of_ranks)):
        if shard.owned is not None:
            for i, entry in sorted(assembled.items()):
                state[index_of[id(shard.buffer.params[i])]] = entry
            continue
        full, step = assembled
        if not full and step is None:
            continue
        logical = 0
        for p in shard.buffer.params:
            n = p.numel()
            entry = {"step": step.clone()} if step is not None else {}
            for name, value in full.items():
                entry[name] = value[logical : logical + n].view(p.shape).clone()
            state[index_of[id(p)]] = entry
            logical += n
    groups = _groups_without_params(zero)
    for group in groups:
        group["params"] = []
    for shard in zero._shards:
        groups[shard.group_index]["params"].extend(index_of[id(p)] for p in shard.buffer.params)
    for group in groups:
        group["params"].sort()
    return {"state": state, "param_groups": groups}


def load_full(zero, fulls, param_groups):
    """Give each of this rank's pieces its part of the per-buffer logical state `fulls` (as
    assemble() returns), with the groups' hyperparameters `param_groups` (dicts without params),
    through the wrapped optimizer's load_state_dict (which validates everything first)."""
    if len(param_groups) != len(zero.optimizer.param_groups):
        raise ValueError(
            f"the state has {len(param_groups)} param groups, this optimizer {len(zero.optimizer.param_groups)}"
        )
    piece_index = {}
    for group in zero.optimizer.param_groups:
        for p in group["params"]:
            piece_index[id(p)] = len(piece_index)
    state = {}
    for shard, assembled in zip(zero._shards, fulls):
        if shard.owned is not None:
            for i, view in zip(shard.indices, shard.pieces):
                if i in assembled:
                    state[piece_index[id(view)]] = _cpu_copy(assembled[i])
            continue
        full, step = assembled
        for piece, (lo, hi, llo, lhi) in zip(shard.pieces, shard.ranges):
            entry = {}
            if step is not None:
                entry["step"] = step.clone()
            for name, value in full.items():
                cut = torch.zeros(hi - lo, dtype=value.dtype)
                cut[: lhi - llo] = value[llo:lhi]
                entry[name] = cut
            if entry:
                state[piece_index[id(piece)]] = entry
    groups = []
    for saved, group in zip(param_groups, zero.optimizer.param_groups):
        groups.append({**saved, "params": [piece_index[id(p)] for p in group["params"]]})
    zero.optimizer.load_state_dict({"state": state, "param_groups": groups})


def load_consolidated(zero, state_dict):
    """Load an unsharded optimizer's state_dict (torch's layout) over the original parameters."""
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
    saved_groups = state_dict["param_groups"]
    order = [i for g in saved_groups for i in g["params"]]
    if len(order) != len(zero._user_params):
        raise ValueError(f"the state dict has {len(order)} parameters, this optimizer {len(zero._user_params)}")
    key_of = {id(p): key for p, key in zip(zero._user_params, order)}
    fulls = []
    for shard in zero._shards:
        if shard.owned is not None:
            saved = state_dict["state"]
            fulls.append({i: saved[key_of[id(p)]] for i, p in enumerate(shard.buffer.params) if key_of[id(p)] in saved})
            continue
        total = shard.buffer.layout.logical_total
        full, step, logical = {}, None, 0
        for p in shard.buffer.params:
            n = p.numel()
            entry = state_dict["state"].get(key_of[id(p)], {})
            for name, value in entry.items():
                if name == "step":
                    step = torch.as_tensor(float(value), dtype=torch.float32)
                    continue
                if not isinstance(value, torch.Tensor):
                    continue
                if value.numel() != n:
                    raise ValueError(
                        f"state '{name}' of parameter {key_of[id(p)]} has {value.numel()} elements, the parameter {n}"
                    )
                if name not in full:
                    full[name] = torch.zeros(total, dtype=value.dtype)
                full[name][logical : logical + n] = value.detach().reshape(-1).cpu()
            logical += n
        fulls.append((full, step))
    load_full(zero, fulls, [{k: v for k, v in g.items() if k != "params"} for g in saved_groups])
