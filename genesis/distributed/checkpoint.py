"""Sharded checkpoints: each rank saves its own state with genesis.save, rank 0 a small index.

Layout of a checkpoint directory::

    index.gen                   which shard files make up the checkpoint, the world size,
                                the param groups' hyperparameters
    shard-<tag>-<r>-of-<N>.gen  rank r's state, in logical positions (state.py)

A save writes new shard files under a fresh tag, each to a temporary name renamed into place,
then (after every rank has finished) replaces the index the same way, and only then deletes the
previous checkpoint's shards. The index is the commit point: a save interrupted at any moment
leaves the previous index and every file it names untouched. Loading reads the index and the
shards, and cuts each rank's pieces for the current layout, so N ranks can load what M wrote.
"""

import os
import time

import torch.distributed as dist

from .. import serialization
from . import comm
from . import state as _state

INDEX = "index.gen"


def _write_atomic(obj, path):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        serialization.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _shard_name(tag, rank, world_size):
    return f"shard-{tag}-{rank}-of-{world_size}.gen"


def save_checkpoint(zero, directory):
    """Save `zero`'s state into `directory` (a collective: call it on every rank)."""
    zero.wait_param_gather()
    group = zero.process_group
    if zero.rank == 0:
        os.makedirs(directory, exist_ok=True)
    src = dist.get_global_rank(group, 0) if group is not None else 0
    tag = comm.broadcast_object(f"{time.time_ns():x}" if zero.rank == 0 else None, src, group)
    name = _shard_name(tag, zero.rank, zero.world_size)
    comm.barrier(group)  # the directory exists
    _write_atomic({"entries": _state.local_entries(zero)}, os.path.join(directory, name))
    comm.barrier(group)  # every shard is in place
    if zero.rank == 0:
        files = [_shard_name(tag, r, zero.world_size) for r in range(zero.world_size)]
        index = {
            "world_size": zero.world_size,
            "files": files,
            "stage": zero.stage,
            "param_groups": _state._groups_without_params(zero),
        }
        _write_atomic(index, os.path.join(directory, INDEX))
        for old in os.listdir(directory):
            if old.startswith("shard-") and old not in files:
                os.remove(os.path.join(directory, old))
    comm.barrier(group)


def load_checkpoint(zero, directory):
    """Load a checkpoint saved by save_checkpoint at any world size (a collective)."""
    zero.wait_param_gather()
    index = serialization.load(os.path.join(directory, INDEX))
    entries_of_ranks = [serialization.load(os.path.join(directory, f))["entries"] for f in index["files"]]
    if any(len(e) != len(zero._shards) for e in entries_of_ranks):
        raise ValueError(
            f"the checkpoint in {directory} has a different number of flat buffers "
            "(param groups, dtypes or devices differ)"
        )
    fulls = _state.assemble(zero, entries_of_ranks)
    groups = [dict(g) for g in index["param_groups"]]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    _state.load_full(zero, fulls, groups)
    comm.barrier(zero.process_group)
