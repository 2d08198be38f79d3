"""The few torch.distributed collectives the sharded optimizer uses, with one error message.

A collective whose peer died (or that outlives the process group's timeout) raises inside
torch.distributed with a backend-specific message; it is re-raised here as a RuntimeError that
says which collective failed and what that usually means, chained to torch's error."""

import torch.distributed as dist


class CollectiveError(RuntimeError):
    """A collective failed: usually another rank died or did not reach it within the process
    group's timeout (``init_process_group(timeout=...)``)."""


def _fail(name, group, error):
    rank = dist.get_rank(group)
    size = dist.get_world_size(group)
    raise CollectiveError(
        f"genesis.distributed: {name} failed on rank {rank} of {size}: another rank probably "
        f"died or did not reach this collective within the process group's timeout "
        f"({type(error).__name__}: {error})"
    ) from error


class Pending:
    """An asynchronous collective (or none): ``wait()`` finishes it, re-raising failures as
    CollectiveError."""

    __slots__ = ("name", "group", "work")

    def __init__(self, name, group, work):
        self.name, self.group, self.work = name, group, work

    def wait(self):
        if self.work is None:
            return
        work, self.work = self.work, None
        try:
            work.wait()
        except RuntimeError as error:
            _fail(self.name, self.group, error)


def _call(name, group, fn, *args, async_op=False, **kwargs):
    try:
        work = fn(*args, group=group, async_op=async_op, **kwargs)
    except RuntimeError as error:
        _fail(name, group, error)
    return Pending(name, group, work if async_op else None)


# torch 2.13 renamed the tensor collectives (the old names warn); older versions lack the new.
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def all_reduce(tensor, group, op=dist.ReduceOp.SUM, async_op=False):
    return _call("all_reduce", group, dist.all_reduce, tensor, op=op, async_op=async_op)


def broadcast(tensor, src, group, async_op=False):
    return _call("broadcast", group, dist.broadcast, tensor, src, async_op=async_op)


def reduce(tensor, dst, group, async_op=False):
    """Sum `tensor` over the ranks into rank `dst`'s (a global rank); the others' copies are
    left undefined, as torch.distributed.reduce documents."""
    return _call("reduce", group, dist.reduce, tensor, dst, async_op=async_op)


def reduce_scatter(output, input, group, async_op=False):
    return _call("reduce_scatter", group, _reduce_scatter, output, input, async_op=async_op)


def all_gather(output, input, group, async_op=False):
    return _call("all_gather", group, _all_gather, output, input, async_op=async_op)


def all_gather_object(obj, group):
    out = [None] * dist.get_world_size(group)
    try:
        dist.all_gather_object(out, obj, group=group)
    except RuntimeError as error:
        _fail("all_gather_object", group, error)
    return out


def broadcast_object(obj, src, group):
    box = [obj]
    try:
        dist.broadcast_object_list(box, src=src, group=group)
    except RuntimeError as error:
        _fail("broadcast_object_list", group, error)
    return box[0]


def barrier(group):
    try:
        dist.barrier(group=group)
    except RuntimeError as error:
        _fail("barrier", group, error)
