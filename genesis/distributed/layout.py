"""Where each parameter lives in a flat buffer, how the buffer splits into buckets, and which
piece of each bucket a rank owns. Pure arithmetic, shared by the buffers, the sharded optimizer
and the checkpoints.

Two coordinate systems are used:
- *buffer* positions index the padded flat buffer (what the tensors are views of);
- *logical* positions index the parameters' elements only, concatenated in order. They do not
  depend on the world size or the bucket size, so a checkpoint records its shards in logical
  positions and can be loaded under any other layout (resharding).
"""

from dataclasses import dataclass

# Each rank's piece of a bucket is a multiple of this many elements, so every shard view starts
# 64-byte aligned in float32 (vector loads in the core, NCCL's preferred alignment).
ALIGN = 16


def round_up(n, multiple):
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Bucket:
    start: int  # first buffer position
    logical_start: int  # first logical position
    numel: int  # parameter elements it holds
    padded: int  # numel rounded up to a multiple of world_size * ALIGN
    params: tuple  # indices of its parameters (consecutive)

    def piece(self, rank, world_size):
        """Rank `rank`'s piece: (buffer_lo, buffer_hi, logical_lo, logical_hi). The logical
        range is shorter than the buffer range where the piece covers the bucket's padding."""
        size = self.padded // world_size
        lo = rank * size
        return (
            self.start + lo,
            self.start + lo + size,
            self.logical_start + min(lo, self.numel),
            self.logical_start + min(lo + size, self.numel),
        )


@dataclass(frozen=True)
class Layout:
    numels: tuple  # each parameter's element count
    offsets: tuple  # each parameter's first buffer position
    buckets: tuple
    total: int  # padded buffer size
    logical_total: int

    def pieces(self, rank, world_size):
        return [b.piece(rank, world_size) for b in self.buckets]


def plan(numels, world_size=1, bucket_numel=None):
    """Lay out parameters of `numels` elements in order, in buckets of at least `bucket_numel`
    elements (None: one bucket). A parameter is never split between buckets, so which
    parameters share a bucket depends only on `bucket_numel`, never on the world size."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if bucket_numel is not None and bucket_numel < 1:
        raise ValueError(f"bucket_numel must be positive, got {bucket_numel}")
    buckets, offsets = [], []
    start = logical = 0
    current = []

    def close():
        nonlocal start, logical, current
        numel = sum(numels[i] for i in current)
        padded = round_up(max(numel, 1), world_size * ALIGN)
        buckets.append(Bucket(start, logical, numel, padded, tuple(current)))
        start += padded
        logical += numel
        current = []

    position = 0
    for i, n in enumerate(numels):
        offsets.append(start + position)
        current.append(i)
        position += n
        if bucket_numel is not None and position >= bucket_numel:
            close()
            position = 0
    if current:
        close()
    return Layout(tuple(numels), tuple(offsets), tuple(buckets), start, logical)


def owners(numels, world_size):
    """The rank that keeps each parameter whole, for rules that reduce over whole tensors
    (docs/distributed.md, "whole tensors per rank"): a contiguous split of the parameters in
    order, parameter i going to the rank whose equal share of the elements holds i's midpoint.
    Rank r's elements then differ from total / world_size by at most the largest parameter (its
    first and last parameters each reach at most half their size outside its share, and the
    share's uncovered ends are at most half a neighbour each). Depends only on the numels."""
    total = sum(numels)
    out, start = [], 0
    for n in numels:
        out.append(min(world_size - 1, (2 * start + n) * world_size // (2 * total)) if total else 0)
        start += n
    return tuple(out)


def owned_ranges(layout, owner, world_size):
    """Per bucket, per rank: the (buffer_lo, buffer_hi) range of the bucket's parameters that
    rank owns under `owner` (contiguous because owners() is monotonic; lo == hi when none)."""
    result = []
    for bucket in layout.buckets:
        ranges = []
        for r in range(world_size):
            mine = [i for i in bucket.params if owner[i] == r]
            if mine:
                ranges.append((layout.offsets[mine[0]], layout.offsets[mine[-1]] + layout.numels[mine[-1]]))
            else:
                ranges.append((bucket.start, bucket.start))
        result.append(tuple(ranges))
    return tuple(result)
