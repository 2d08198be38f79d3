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
    """Asynchronous collectives (or none): ``wait()`` finishes them, re-raising failures as
    CollectiveError, then runs ``then`` (the local work that completes the collective, if any).
    ``buffers``: temporaries the collective reads or writes, held until it is finished."""

    __slots__ = ("name", "group", "works", "then", "buffers")

    def __init__(self, name, group, works=(), then=None):
        self.name, self.group, self.works, self.then, self.buffers = name, group, works, then, ()

    def wait(self):
        works, self.works = self.works, ()
        for work in works:
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
    return Pending(name, group, (work,) if async_op else ())


# torch 2.13 renamed the tensor collectives (the old names warn); older versions lack the new.
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def all_reduce(tensor, group, op=dist.ReduceOp.SUM, async_op=False):
    return _call("all_reduce", group, dist.all_reduce, tensor, op=op, async_op=async_op)


def broadcast(tensor, src, group, async_op=False):
    return _call("broadcast", group, dist.broadcast, tensor, src, async_op=async_op)


# NOTE: [gloo reduce-scatter and all-gather]
# gloo's own reduce_scatter_tensor sends as much as an all-reduce and took 2.5x its time (40 MB
# float32 on 2 ranks: 98-101 ms against 40 ms), its all_gather_into_tensor took 55-85 ms and its
# reduce 38 ms (against 21 ms for one send and an add). The three are built here from
# point-to-point sends and receives instead, which move the minimum, (N-1)/N of the buffer,
# straight between the tensors: an all-gather receives each rank's piece directly into its
# place in the output (no temporary); a reduce-scatter sends each rank its piece of the input,
# receives the N-1 others' copies of this rank's piece into one temporary and sums the N
# pieces in rank order; a reduce does the same towards one rank. On 2 ranks and 40 MB (median
# of 7, one run): all-gather 12 ms against 27 ms through all_to_all_single (this module's
# previous path, which needed a copy of the output per call) and 57 ms for gloo's;
# reduce-scatter 21 ms against 30 ms through all_to_all_single; gloo's all-reduce of the same
# buffer 31 ms (docs/distributed.md#speed).
# The sends and receives of one collective are matched by order on one tag, which holds
# because every rank issues the collectives of a group in the same order (as gloo's own
# collectives require). Other backends (NCCL) keep their own collectives.
_P2P_TAG = 0x67656E  # "gen": apart from tag 0, the default of a user's own sends


def _point_to_point(tensor, group):
    """Whether `tensor`'s collectives in `group` run on gloo: a CPU tensor in a group whose
    backend is "gloo", or gloo for the CPU in a per-device one ("cpu:gloo,cuda:nccl")."""
    if tensor.device.type != "cpu":
        return False
    backend = str(dist.get_backend(group))
    if ":" in backend:
        backend = dict(part.split(":", 1) for part in backend.split(",")).get("cpu")
    return backend == "gloo"


def uses_temporaries(tensor, group):
    """Whether reduce_scatter (reduce) of `tensor` takes a temporary of (N-1)/N (N-1 times, on
    the destination rank) of its size until it is waited for (the point-to-point path)."""
    return _point_to_point(tensor, group)


class BufferPool:
    """Bucket-sized temporaries (the point-to-point reduce-scatter's receive buffers,
    ZeroOptimizer's shard_grads staging), kept for the next use of the same size, dtype and
    device instead of freed: a fresh tensor of a bucket's size is fresh memory from the system
    (page faults on first touch) every iteration, which cost ZeRO-2 on gloo about as much as
    sending less saved (docs/distributed.md#speed). A buffer returns to the pool when its user
    is done with it (a collective when it is waited for) and is kept if the pool holds fewer
    than `limit` buffers (buckets differ in size, so a bound on what is in use at once does not
    bound the sizes seen over a step); it is freed with its owner (one per ZeroOptimizer)."""

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


def _named(group):
    """The group object (None stands for the default group)."""
    return group if group is not None else dist.group.WORLD


def _exchange(name, group, receives, sends):
    """Start the point-to-point receives, then the sends, of one collective: lists of
    (group rank of the peer, contiguous tensor). Returns its Pending."""
    world = _named(group)
    works = []
    try:
        for peer, tensor in receives:
            works.append(dist.irecv(tensor, src=dist.get_global_rank(world, peer), group=group, tag=_P2P_TAG))
        for peer, tensor in sends:
            works.append(dist.isend(tensor, dst=dist.get_global_rank(world, peer), group=group, tag=_P2P_TAG))
    except RuntimeError as error:
        for work in works:  # what was posted is finished (or failed) before the error leaves
            try:
                work.wait()
            except RuntimeError:
                pass
        _fail(name, group, error)
    return Pending(name, group, tuple(works))


def _peers(group):
    """(this rank, the other ranks of `group` starting after it): each rank sends to its
    successors first, so that the ranks' first sends go to different peers."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    return rank, [(rank + k) % size for k in range(1, size)]


def _receive_buffer(numel, like, pool):
    """A 1-D temporary of `numel` elements of `like`'s dtype and device (from `pool` if one is
    given), and the pool it goes back to."""
    if pool is None:
        return torch.empty(numel, dtype=like.dtype, device=like.device), None
    return pool.take(numel, like.dtype, like.device), pool


def _sum_in_rank_order(pieces, own, output):
    """output = ((pieces[0] + pieces[1]) + pieces[2]) + ...: one fixed order, so that a run
    is reproducible whatever order the pieces arrived in. pieces[own] is the input's, which
    `output` may be (element-wise in place); the others are received copies, free to
    overwrite. The running sum is kept in one of the first two received copies, so that
    nothing is overwritten before it is read."""
    if len(pieces) == 1:
        if pieces[0].data_ptr() != output.data_ptr():
            output.copy_(pieces[0])
        return
    if len(pieces) == 2:
        torch.add(pieces[0], pieces[1], out=output)
        return
    running = torch.add(pieces[0], pieces[1], out=pieces[1 if own == 0 else 0])
    for piece in pieces[2:-1]:
        running.add_(piece)
    torch.add(running, pieces[-1], out=output)


def _receive_and_sum(name, group, rank, peers, own, output, sends, pool):
    """Start one collective's exchange: receive every peer's copy of the piece `own` is this
    rank's copy of (into one receive buffer, from `pool` if given) while `sends` go out; its
    wait() then sets output = the N copies summed in rank order (output may be `own`)."""
    n = own.numel()
    received, pool = _receive_buffer(len(peers) * n, own, pool)
    copies = {peer: received[i * n : (i + 1) * n] for i, peer in enumerate(peers)}
    pending = _exchange(name, group, list(copies.items()), sends)
    pieces = [own if r == rank else copies[r] for r in range(len(peers) + 1)]
    pending.then = lambda: _sum_in_rank_order(pieces, rank, output)
    pending.buffers = ((received, pool),)
    return pending


def reduce_scatter(output, input, group, async_op=False, pool=None):
    """output = this rank's piece of the sum of every rank's `input` (N equal pieces, summed in
    rank order on the gloo path). `output` may be a view of `input`. `pool`: a BufferPool for
    the gloo path's receive buffer."""
    if not _point_to_point(input, group):
        return _call("reduce_scatter", group, _reduce_scatter, output, input, async_op=async_op)
    rank, peers = _peers(group)
    mine = input.view(len(peers) + 1, -1)
    n = mine.shape[1]
    if n == 0 or not peers:
        _sum_in_rank_order([mine[rank]], 0, output)
        return Pending("reduce_scatter", group)
    sends = [(peer, mine[peer]) for peer in peers]
    pending = _receive_and_sum("reduce_scatter", group, rank, peers, mine[rank], output, sends, pool)
    if not async_op:
        pending.wait()
    return pending


def reduce(tensor, dst, group, async_op=False, pool=None):
    """Sum `tensor` (contiguous) over the ranks into rank `dst`'s (a global rank; summed in
    rank order on the gloo path); the others' copies are left undefined, as
    torch.distributed.reduce documents. `pool`: a BufferPool for the gloo path's receive
    buffer, which only `dst` takes."""
    if not _point_to_point(tensor, group):
        return _call("reduce", group, dist.reduce, tensor, dst, async_op=async_op)
    rank, peers = _peers(group)
    root = dist.get_group_rank(_named(group), dst)
    if tensor.numel() == 0 or not peers:
        return Pending("reduce", group)
    if rank != root:
        pending = _exchange("reduce", group, [], [(root, tensor)])
    else:
        flat = tensor.view(-1)
        pending = _receive_and_sum("reduce", group, rank, peers, flat, flat, [], pool)
    if not async_op:
        pending.wait()
    return pending


def all_gather(output, input, group, async_op=False):
    """output = every rank's `input`, in rank order. `input` may be a view of `output`. No path
    takes a temporary (the gloo path receives each piece in its place)."""
    if not _point_to_point(input, group):
        return _call("all_gather", group, _all_gather, output, input, async_op=async_op)
    rank, peers = _peers(group)
    places = output.view(len(peers) + 1, -1)
    if places[rank].data_ptr() != input.data_ptr() or places[rank].numel() != input.numel():
        places[rank].copy_(input.reshape(-1))
    if places.shape[1] == 0 or not peers:
        return Pending("all_gather", group)
    pending = _exchange(
        "all_gather", group, [(peer, places[peer]) for peer in peers], [(peer, places[rank]) for peer in peers]
    )
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
