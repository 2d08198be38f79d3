"""What each rank runs for test_comm.py: genesis.distributed.comm's reduce-scatter, all-gather
and reduce (on gloo through point-to-point sends and receives, NOTE: [gloo reduce-scatter and
all-gather] in genesis/distributed/comm.py) against torch.distributed's own collectives on the
same data."""

import torch
import torch.distributed as dist

import genesis
from genesis.distributed import ZeroOptimizer, comm

DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _data(rank, numel, dtype, salt):
    # Small integers: every order of summing them gives the same bits, so the comparison with
    # gloo's own reduce-scatter (another order) can be exact.
    g = torch.Generator().manual_seed(1000 * salt + rank)
    return torch.randint(-8, 9, (numel,), generator=g).to(dtype)


def collectives(rank, world_size):
    out = []
    cases = [(d, p) for d in DTYPES for p in (0, 1, 37, 4096)]
    for salt, (dtype, piece) in enumerate(cases):
        numel = piece * world_size
        x = _data(rank, numel, dtype, salt)
        expected = torch.empty(piece, dtype=dtype)
        dist.reduce_scatter_tensor(expected, x.clone())
        # in place and asynchronous (as ZeroOptimizer calls it): this rank's piece of x
        inplace = x.clone()
        mine = inplace[rank * piece : (rank + 1) * piece]
        pending = comm.reduce_scatter(mine, inplace, None, async_op=True)
        pending.wait()
        pending.wait()  # idempotent
        synchronous = torch.empty(piece, dtype=dtype)
        comm.reduce_scatter(synchronous, x, None)
        gathered = torch.empty(numel, dtype=dtype)
        dist.all_gather_into_tensor(gathered, _data(rank, piece, dtype, salt))
        buffer = torch.zeros(numel, dtype=dtype)
        buffer[rank * piece : (rank + 1) * piece] = _data(rank, piece, dtype, salt)
        comm.all_gather(buffer, buffer[rank * piece : (rank + 1) * piece], None, async_op=True).wait()
        # with a pool (as ZeroOptimizer calls them): the same results, the reduce-scatter's
        # temporary of the first call reused by the second, the all-gather taking none
        pool = comm.BufferPool(limit=1)
        pooled, temporaries = [], []
        for _ in range(2):
            reduced = torch.empty(piece, dtype=dtype)
            pending = comm.reduce_scatter(reduced, x, None, async_op=True, pool=pool)
            temporaries += [buffer.data_ptr() for buffer, _ in pending.buffers]  # none if empty
            pending.wait()
            pooled.append(torch.equal(reduced, expected))
        gathered_pooled = torch.zeros(numel, dtype=dtype)
        gathered_pooled[rank * piece : (rank + 1) * piece] = _data(rank, piece, dtype, salt)
        own = gathered_pooled[rank * piece : (rank + 1) * piece]
        pending = comm.all_gather(gathered_pooled, own, None, async_op=True)
        gather_temporaries = len(pending.buffers)  # received straight into place: none
        pending.wait()
        pooled.append(torch.equal(gathered_pooled, gathered))
        # reduce to each rank in turn, in place, against torch's reduce on the same data
        reduced_to = []
        for root in range(world_size):
            expected_sum = x.clone()
            dist.reduce(expected_sum, root)
            ours = x.clone()
            comm.reduce(ours, root, None, async_op=True, pool=pool).wait()
            reduced_to.append(rank != root or torch.equal(ours, expected_sum))
        out.append(
            dict(
                case=(str(dtype), piece),
                reduce=all(reduced_to),
                reduce_scatter=torch.equal(mine, expected),
                reduce_scatter_sync=torch.equal(synchronous, expected),
                others_untouched=torch.equal(
                    torch.cat([inplace[: rank * piece], inplace[(rank + 1) * piece :]]),
                    torch.cat([x[: rank * piece], x[(rank + 1) * piece :]]),
                ),
                all_gather=torch.equal(buffer, gathered),
                pooled=all(pooled),
                reused=numel == 0 or len(set(temporaries)) == 1,
                gather_temporaries=gather_temporaries,
            )
        )
    return out


def subgroup_collectives(rank, world_size):
    """The same collectives within subgroups (ranks {0, 2} and {1, 3} of 4): the point-to-point
    path addresses peers (and reduce's destination) by their global ranks
    (torch.distributed.isend's `dst`), not by their ranks within the group."""
    groups = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    group = groups[rank % 2]
    out = []
    for salt, (dtype, piece) in enumerate((d, p) for d in DTYPES for p in (1, 37)):
        x = _data(rank, 2 * piece, dtype, salt)
        expected = torch.empty(piece, dtype=dtype)
        dist.reduce_scatter_tensor(expected, x.clone(), group=group)
        reduced = torch.empty(piece, dtype=dtype)
        comm.reduce_scatter(reduced, x, group, async_op=True).wait()
        gathered = torch.empty(2 * piece, dtype=dtype)
        dist.all_gather_into_tensor(gathered, x[:piece].clone(), group=group)
        ours = torch.empty(2 * piece, dtype=dtype)
        comm.all_gather(ours, x[:piece], group)
        root = 2 + rank % 2  # the group's second member, by its global rank
        expected_sum = x.clone()
        dist.reduce(expected_sum, root, group=group)
        summed = x.clone()
        comm.reduce(summed, root, group)
        out.append(
            dict(
                reduce_scatter=torch.equal(reduced, expected),
                all_gather=torch.equal(ours, gathered),
                reduce=rank != root or torch.equal(summed, expected_sum),
            )
        )
    return out


def per_device_backend(rank, world_size):
    """A group created with a backend per device ("cpu:gloo", as "cpu:gloo,cuda:nccl" spells
    it for CPU tensors) takes the point-to-point path too, with the same results."""
    group = dist.new_group(list(range(world_size)), backend="cpu:gloo")
    x = _data(rank, 37 * world_size, torch.float32, 0)
    expected = torch.empty(37)
    dist.reduce_scatter_tensor(expected, x.clone(), group=group)
    reduced = torch.empty(37)
    comm.reduce_scatter(reduced, x, group)
    return dict(point_to_point=comm.uses_temporaries(x, group), equal=torch.equal(reduced, expected))


def pooled_temporaries(rank, world_size, shard_grads):
    """ZeroOptimizer at stage 2 on a model cut into many small buckets: how many bucket-sized
    temporaries its pool keeps after a few steps, and how many buckets there are."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(10)]).to(torch.float64)
    opt = ZeroOptimizer(
        model.parameters(), genesis.optim.SGD, stage=2, bucket_numel=8, shard_grads=shard_grads, lr=0.1, momentum=0.9
    )
    for step in range(3):
        x = torch.randn(8, 8, generator=torch.Generator().manual_seed(10 * step + rank), dtype=torch.float64)
        model(x).square().sum().backward()
        opt.step()
        opt.zero_grad()
    return dict(
        pooled=len(opt._comm_pool),
        buckets=sum(len(s.buffer.layout.buckets) for s in opt._shards),
    )
