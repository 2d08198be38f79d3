"""The few torch.distributed collectives the sharded optimizer uses, with one error message.

A collective whose peer died (or that outlives the process group's timeout) raises inside
torch.distributed with a backend-specific message; it is re-raised here as a RuntimeError that
says which collective failed and what that usually means, chained to torch's error."""

import torch
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
    CollectiveError, then runs ``then`` (the local work that completes the collective, if any).
    ``buffers``: temporaries the collective reads or writes, held until it is finished."""

    __slots__ = ("name", "group", "work", "then", "buffers")

    def __init__(self, name, group, work, then=None):
        self.name, self.group, self.work, self.then, self.buffers = name, group, work, then, ()

    def wait(self):
        work, self.work = self.work, None
        if work is not None:
            try:
                work.wait()
            except RuntimeError as error:
                _fail(self.name, self.group, error)
        then, self.then = self.then, None
        if then is not None:
            then()
        buffers, self.buffers = self.buffers, ()
        for buffer, pool in buffers:
            if pool is not None:
                pool.give_back(buffer)


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


# NOTE: [gloo reduce-scatter and all-gather]
# gloo's reduce_scatter_tensor sends as much as an all-reduce and took 2.5x its time (40 MB
# float32 on 2 ranks: 98-101 ms against 40 ms), and its all_gather_into_tensor took 55-85 ms.
# The same results through gloo's all_to_all_single took 32-43 ms and 27 ms, sending the
# minimum (N-1)/N of the buffer (docs/distributed.md#speed): a reduce-scatter is an
# all-to-all of the N pieces plus a local sum of the N pieces each rank receives; an
# all-gather is an all-to-all of N copies of this rank's piece. Both need a temporary of the
# input's (resp. output's) size per call in flight. Other backends (NCCL) keep their own.
def _through_all_to_all(tensor, group):
    return tensor.device.type == "cpu" and dist.get_backend(group) == "gloo"


def uses_temporaries(tensor, group):
    """Whether reduce_scatter and all_gather of `tensor` take a temporary of its size (the
    all-to-all path) until they are waited for."""
    return _through_all_to_all(tensor, group)


class BufferPool:
    """Bucket-sized temporaries (the all-to-all path's, ZeroOptimizer's shard_grads staging),
    kept for the next use of the same size, dtype and device instead of freed: a fresh tensor
    of a bucket's size is fresh memory from the system (page faults on first touch) every
    iteration, which cost ZeRO-2 on gloo about as much as the all-to-all saved
    (docs/distributed.md#speed). A buffer returns to the pool when its user is done with it
    (a collective when it is waited for) and is kept if the pool holds fewer than `limit`
    buffers (buckets differ in size, so a bound on what is in use at once does not bound the
    sizes seen over a step); it is freed with its owner (one per ZeroOptimizer)."""

    def __init__(self, limit):
        self._free = {}
        self._count = 0
        self._limit = limit

    def take(self, numel, dtype, device):
        """A 1-D tensor of `numel` elements, its contents undefined."""
        free = self._free.get((numel, dtype, device))
        if not free:
            return torch.empty(numel, dtype=dtype, device=device)
        self._count -= 1
        return free.pop()

    def give_back(self, buffer):
        if self._count < self._limit:
            self._free.setdefault((buffer.numel(), buffer.dtype, buffer.device), []).append(buffer)
            self._count += 1

    def __len__(self):
        return self._count


def _temporary(like, pool):
    """A contiguous tensor of `like`'s shape, dtype and device (from `pool` if given), and the
    pool it goes back to."""
    if pool is None:
        return torch.empty(like.shape, dtype=like.dtype, device=like.device), None
    return pool.take(like.numel(), like.dtype, like.device).view(like.shape), pool


def reduce_scatter(output, input, group, async_op=False, pool=None):
    """output = this rank's piece of the sum of every rank's `input` (N equal pieces). `output`
    may be a view of `input`. `pool`: a BufferPool for the gloo path's temporary."""
    if not _through_all_to_all(input, group):
        return _call("reduce_scatter", group, _reduce_scatter, output, input, async_op=async_op)
    received, pool = _temporary(input, pool)  # piece r = rank r's copy of this rank's piece
    pending = _call("reduce_scatter", group, dist.all_to_all_single, received, input, async_op=True)
    size = dist.get_world_size(group)
    pending.then = lambda: torch.sum(received.view(size, -1), dim=0, out=output)
    pending.buffers = ((received, pool),)
    if not async_op:
        pending.wait()
    return pending


def all_gather(output, input, group, async_op=False, pool=None):
    """output = every rank's `input`, in rank order. `input` may be a view of `output`.
    `pool`: a BufferPool for the gloo path's temporary; without one the backend's own
    all-gather runs (no temporary: for callers with many gathers in flight at once)."""
    if pool is None or not _through_all_to_all(input, group):
        return _call("all_gather", group, _all_gather, output, input, async_op=async_op)
    copies, pool = _temporary(output, pool)
    copies.view(dist.get_world_size(group), -1).copy_(input.reshape(1, -1))
    pending = _call("all_gather", group, dist.all_to_all_single, output, copies, async_op=True)
    pending.buffers = ((copies, pool),)
    if not async_op:
        pending.wait()
    return pending


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
