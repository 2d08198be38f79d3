"""ZeroOptimizer: any genesis optimizer class, with its state sharded over the ranks of a
torch.distributed process group (ZeRO stage 1 or 2).

Each param group's parameters (per dtype and device) move into a FlatBuffer laid out in buckets
(layout.py); every bucket is split into one equal piece per rank. A rank's pieces are the
parameters of the wrapped optimizer: plain 1-D views of the flat buffer, so one ``step()`` is
one core call per group over this rank's pieces, and the state (and master weights for 16-bit
parameters) exists only for them, 1/N of the whole.

- stage 1: each bucket's gradient is all-reduced (averaged, as DDP does); the rank updates its
  pieces; the new parameters are all-gathered into every rank's buffer.
- stage 2: each bucket's gradient is reduce-scattered instead (each rank receives the averaged
  gradient of its own pieces only): half the traffic of an all-reduce, so a step costs one
  all-reduce's worth in all (reduce-scatter + all-gather) instead of 1.5 (stage 1).
The gradient buffer itself stays full size on every rank (backward accumulates into it), as in
Megatron-LM's distributed optimizer; the sharded part is the optimizer state, master weights
and the reduced gradients (docs/distributed.md has the memory per stage).
Rules that reduce over whole tensors (LAMB, Adafactor, Muon, and classes genesis does not know)
keep every tensor whole on one rank instead of equal pieces: the same stages with per-owner
reduce and broadcast in place of reduce-scatter and all-gather (docs/distributed.md, "whole
tensors per rank"; _Shard).
Both stages start a bucket's collective from the gradient hooks as soon as backward has produced
all of its gradients, so communication overlaps the rest of backward. Buckets are launched in one fixed
order (the reverse of the parameter order, which is how backward usually produces them) so that
every rank issues the same collectives in the same order.
With ``overlap_param_gather=model`` step() only starts the parameter all-gathers and the model's
forward pre-hooks wait for them bucket by bucket (param_gather.py; docs/distributed.md).
"""

import collections
import contextlib

import torch
import torch.distributed as dist

from .. import _interop
from ..nn.utils import clip_grad as _clip
from . import comm
from . import layout as _layout
from . import state as _state
from .flat_buffer import FlatBuffer, _as_groups, split_by_storage
from .param_gather import ParamGather

DEFAULT_BUCKET_NUMEL = 1 << 22  # 4M elements: 16 MiB of float32 gradients per collective
# Buckets whose reduction may be in flight at once when each holds a bucket-sized buffer:
# shard_grads' staging copy of the bucket's gradient (until its reduction is done and added to
# this rank's part), and gloo's point-to-point reduce-scatter its receive buffer
# (NOTE: [gloo reduce-scatter and all-gather] in comm.py). A bound keeps that memory at a few
# buckets instead of a gradient-sized buffer.
MAX_IN_FLIGHT = 2
# Bucket-sized temporaries kept for reuse: what MAX_IN_FLIGHT + 1 reductions hold at once (a
# receive buffer each, and with shard_grads a staging copy).
POOLED_BUFFERS = 2 * (MAX_IN_FLIGHT + 1)


class _Bucket:
    """One bucket of one buffer during a step: how many of its gradients are ready, and its
    collective once launched."""

    __slots__ = ("shard", "index", "needed", "ready", "pending", "staging")

    def __init__(self, shard, index):
        self.shard = shard
        self.index = index
        self.needed = len(shard.buffer.layout.buckets[index].params)
        self.ready = 0
        self.pending = None
        self.staging = None  # shard_grads: the bucket's gradient while its reduction runs


class _Shard:
    """One flat buffer and this rank's part of it: the wrapped optimizer's parameters.

    Element-wise rules (``whole_tensors`` false): one equal piece of every bucket per rank
    (``pieces[i]`` is this rank's 1-D piece of bucket i; ``owned`` is None).
    Rules that reduce over whole tensors: every parameter is kept whole by the rank `owner`
    gives it (layout.owners over all buffers together); ``pieces`` are this rank's parameters
    as views of the buffer in their own shapes, ``indices`` their positions in the buffer, and
    ``owned[i][r]`` the buffer range of bucket i that rank r owns (the collectives then go per
    rank range: see ZeroOptimizer)."""

    def __init__(self, buffer, group_index, rank, world_size, owner=None):
        self.buffer = buffer
        self.group_index = group_index
        self.pieces = []  # data views, each with .grad set
        self.ranges = []  # element-wise: (buffer_lo, buffer_hi, logical_lo, logical_hi) per bucket
        self.owned = None
        self.indices = []
        if owner is not None:
            self.owned = _layout.owned_ranges(buffer.layout, owner, world_size)
            self.indices = [i for i, r in enumerate(owner) if r == rank]
            for i in self.indices:
                lo, hi = buffer.param_slice(i)
                shape = buffer.params[i].shape
                view = buffer.data[lo:hi].view(shape)
                view.grad = _grad_of(buffer, lo, hi).view(shape)
                self.pieces.append(view)
            return
        for bucket in buffer.layout.buckets:
            lo, hi, llo, lhi = bucket.piece(rank, world_size)
            piece = buffer.data[lo:hi]
            # Both stages reduce into the piece's own place in the gradient buffer (stage 2's
            # reduce-scatter in place, as NCCL allows when output = input + rank * size).
            piece.grad = _grad_of(buffer, lo, hi)
            self.pieces.append(piece)
            self.ranges.append((lo, hi, llo, lhi))

    def add_reduced(self, index, staging, rank):
        """shard_grads: add this rank's reduced part of bucket `index`'s `staging` copy to its
        gradients."""
        start = self.buffer.layout.buckets[index].start
        if self.owned is None:
            lo, hi = self.ranges[index][:2]
            self.pieces[index].grad.add_(staging[lo - start : hi - start])
            return
        lo, hi = self.owned[index][rank]
        for i, view in zip(self.indices, self.pieces):
            plo, phi = self.buffer.param_slice(i)
            if lo <= plo and phi <= hi:
                view.grad.add_(staging[plo - start : phi - start].view(view.shape))

    def bucket_grad(self, index):
        b = self.buffer.layout.buckets[index]
        return self.buffer.grad[b.start : b.start + b.padded]

    def bucket_data(self, index):
        b = self.buffer.layout.buckets[index]
        return self.buffer.data[b.start : b.start + b.padded]


def _grad_of(buffer, lo, hi):
    """A part's gradient: a view of the gradient buffer, or (shard_grads: no buffer) its own."""
    if buffer.grad is None:
        return torch.zeros(hi - lo, dtype=buffer.data.dtype, device=buffer.data.device)
    return buffer.grad[lo:hi]


class ZeroOptimizer(torch.optim.Optimizer):
    """Shard `optimizer_class`'s state over the ranks of `process_group` (default: the world).

    ``ZeroOptimizer(model.parameters(), genesis.optim.AdamW, stage=2, lr=1e-3)``: `params` as
    for any optimizer (tensors or param groups); the remaining keyword arguments go to
    `optimizer_class`. Every rank must construct it with the same parameters in the same order;
    construction broadcasts rank 0's parameter values to all ranks (as DDP does).
    The parameters become views of flat buffers, and so do their gradients: gradients are
    therefore never None after construction; ``zero_grad()`` zeros them whatever
    `set_to_none` says (a parameter without a gradient in a step is updated with a zero
    gradient, which matters only for weight decay and momentum).

    Use it like the wrapped optimizer, without DDP: call ``backward()`` on each rank's loss,
    then ``step()`` (which waits for the gradient reduction, updates this rank's shard and
    all-gathers the parameters). Gradient accumulation: run all but the last micro-batch's
    backward under ``with opt.no_sync():``. Clipping: ``opt.clip_grad_norm_(max_norm)`` between
    backward and step. ``param_groups`` are the wrapped optimizer's (their ``params`` are this
    rank's pieces), so genesis's and torch's lr schedulers work on it.

    ``shard_grads=True`` (stage 2 only) also shards the gradient memory: there is no full-size
    gradient buffer; autograd's gradients of a bucket are copied into a staging buffer once the
    bucket is complete and dropped (``param.grad`` is None after backward), the staging buffer
    is reduce-scattered and this rank's part added to its gradients (1/N), and at most
    MAX_IN_FLIGHT staging buffers exist at a time. Under ``no_sync`` the parameters keep
    accumulating their own (full-size) gradients until the next synchronized backward.

    ``overlap_param_gather=model`` (the torch.nn.Module whose parameters these are) hides the
    parameter all-gather behind the next forward pass: step() only starts the gathers, one per
    bucket, and returns; a forward pre-hook on each of the model's modules waits for the
    buckets holding that module's own parameters before it runs (param_gather.py). The results
    are bit for bit those without it. Between step() and the model's next forward the
    parameters of other ranks' pieces may still be arriving: code that reads (or writes) them
    there in any other way than the model's own forward or ``model.state_dict()`` /
    ``model.load_state_dict()`` (which wait by themselves) must call
    ``opt.wait_param_gather()`` first; so must code that calls a submodule's ``forward()``
    directly or uses a parameter in a module other than its owner's (tied weights are fine when
    the owner runs first). step(), state_dict(), load_state_dict() and the checkpoint functions
    wait by themselves; zero_grad() and clip_grad_norm_() do not need to.
    """

    def __init__(
        self,
        params,
        optimizer_class,
        *,
        stage=2,
        process_group=None,
        bucket_numel=DEFAULT_BUCKET_NUMEL,
        shard_grads=False,
        overlap_param_gather=None,
        **defaults,
    ):
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        if shard_grads and stage != 2:
            raise ValueError(f"shard_grads=True needs stage=2 (stage 1 all-reduces full gradients), got stage={stage}")
        if not isinstance(optimizer_class, type):
            raise TypeError(f"optimizer_class must be an optimizer class, got {optimizer_class!r}")
        whole_tensors = not _element_wise(optimizer_class)
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "ZeroOptimizer needs an initialized torch.distributed process group "
                "(torch.distributed.init_process_group)"
            )
        groups = _as_groups(params)
        if overlap_param_gather is not None:
            _check_model(overlap_param_gather, [p for g in groups for p in g["params"]])
        # Hyperparameters are checked by a throwaway optimizer before the parameters move into
        # the flat buffers, so a bad one raises with the model untouched.
        optimizer_class(
            [
                {
                    **{k: v for k, v in g.items() if k != "params"},
                    "params": [torch.zeros([1] * g["params"][0].dim(), dtype=g["params"][0].dtype)],
                }
                for g in groups
            ],
            **defaults,
        )
        self.process_group = process_group
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)
        self.stage = stage
        self.whole_tensors = whole_tensors
        self.shard_grads = bool(shard_grads)
        self._user_params = [p for g in groups for p in g["params"]]
        buffers = [
            (gi, FlatBuffer(params_of_kind, self.world_size, bucket_numel, grads=not shard_grads))
            for gi, group in enumerate(groups)
            for params_of_kind in split_by_storage(group["params"])
        ]
        owners = [None] * len(buffers)
        if whole_tensors:
            # One split of all buffers' tensors together, so that small buffers (a param group
            # of biases) do not all land on the first ranks.
            flat = _layout.owners([n for _, b in buffers for n in b.layout.numels], self.world_size)
            start = 0
            for k, (_, b) in enumerate(buffers):
                owners[k] = flat[start : start + len(b.params)]
                start += len(b.params)
        self._shards = [_Shard(b, gi, self.rank, self.world_size, owner) for (gi, b), owner in zip(buffers, owners)]
        inner_groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": []} for g in groups]
        for shard in self._shards:
            inner_groups[shard.group_index]["params"].extend(shard.pieces)
        # Every rank starts from rank 0's parameters, as DDP does at construction.
        for shard in self._shards:
            comm.broadcast(shard.buffer.data, self._global_rank(0), process_group)
        self.optimizer = optimizer_class(inner_groups, **defaults)
        # torch.optim.Optimizer's bookkeeping (hooks, the attributes torch's lr schedulers
        # read), then the wrapped optimizer's groups and state in place of its own.
        super().__init__(inner_groups, self.optimizer.defaults)
        self.param_groups = self.optimizer.param_groups
        self.defaults = self.optimizer.defaults
        self.state = self.optimizer.state  # keyed by this rank's pieces
        self._sync = True
        self._order = [
            _Bucket(s, i) for s in reversed(self._shards) for i in reversed(range(len(s.buffer.layout.buckets)))
        ]
        self._next = 0
        self._in_flight = collections.deque()  # launched with a bucket-sized buffer, not settled
        # bucket-sized temporaries (gloo's reduce-scatter, shard_grads' staging), reused
        self._comm_pool = comm.BufferPool(POOLED_BUFFERS)
        self._hooks = []
        for record in self._order:
            buffer = record.shard.buffer
            for pi in buffer.layout.buckets[record.index].params:
                p = buffer.params[pi]
                self._hooks.append(p.register_post_accumulate_grad_hook(self._make_hook(record, buffer, pi)))
        self._param_gather = None
        if overlap_param_gather is not None:
            self._param_gather = ParamGather(self, overlap_param_gather)

    # ---------------------------------------------------------------- gradient reduction
    def _make_hook(self, record, buffer, index):
        lo, hi = buffer.param_slice(index)

        def hook(param):
            if buffer.grad is None:  # shard_grads: the gradient stays autograd's until _stage
                if self._sync:
                    self._count(record)
                return
            view = buffer.grad[lo:hi]
            if param.grad.data_ptr() != view.data_ptr():
                # Someone set .grad to None (model.zero_grad()): autograd made a new tensor.
                with torch.no_grad():
                    view.copy_(param.grad.reshape(-1))
                param.grad = view.view(param.shape)
            if self._sync:
                self._count(record)

        return hook

    def _count(self, record):
        """One more gradient of `record`'s bucket is ready; launch every bucket now complete."""
        if record.pending is not None:
            raise RuntimeError(
                "ZeroOptimizer: a second backward reached a gradient bucket "
                "already being reduced; accumulate micro-batches under "
                "`with optimizer.no_sync():` and call step() once"
            )
        record.ready += 1
        self._launch_ready()

    def _launch_ready(self, force=False):
        while self._next < len(self._order):
            record = self._order[self._next]
            if not force and record.ready < record.needed:
                return
            self._launch(record)
            self._next += 1

    def _global_rank(self, rank):
        return dist.get_global_rank(self.process_group, rank) if self.process_group is not None else rank

    def _launch(self, record):
        shard, index = record.shard, record.index
        if shard.buffer.grad is None:
            record.staging = grad = self._stage(shard, index, self._comm_pool)
        else:
            grad = shard.bucket_grad(index)
        start = shard.buffer.layout.buckets[index].start
        grad.div_(self.world_size)  # average = sum of grad/N (exact for powers of two)
        group = self.process_group
        temporary = False  # the reduction holds a bucket-sized temporary (gloo's reduce-scatter)
        if self.stage == 1:
            record.pending = [comm.all_reduce(grad, group, async_op=True)]
        elif shard.owned is None:
            # In place: this rank's piece of the bucket receives its reduced part.
            lo, hi = shard.ranges[index][:2]
            piece = grad[lo - start : hi - start]
            temporary = comm.uses_temporaries(grad, group)
            record.pending = [comm.reduce_scatter(piece, grad, group, async_op=True, pool=self._comm_pool)]
        else:
            # Whole tensors: the ranks' ranges differ in size, which reduce-scatter does not
            # allow; one reduce to each owner moves the same bytes.
            temporary = comm.uses_temporaries(grad, group)
            record.pending = [
                comm.reduce(grad[lo - start : hi - start], self._global_rank(r), group, True, self._comm_pool)
                for r, (lo, hi) in enumerate(shard.owned[index])
                if hi > lo
            ]
        if record.staging is not None or temporary:
            self._in_flight.append(record)
            while len(self._in_flight) > MAX_IN_FLIGHT:
                self._settle(self._in_flight.popleft())

    @staticmethod
    def _stage(shard, index, pool):
        """shard_grads: the bucket's gradients (autograd's, per parameter) copied into one
        staging buffer and dropped from the parameters."""
        buffer = shard.buffer
        bucket = buffer.layout.buckets[index]
        staging = pool.take(bucket.padded, buffer.data.dtype, buffer.data.device).zero_()
        with torch.no_grad():
            for i in bucket.params:
                p = buffer.params[i]
                if p.grad is not None:
                    lo, hi = buffer.param_slice(i)
                    staging[lo - bucket.start : hi - bucket.start].copy_(p.grad.reshape(-1))
                    p.grad = None
        return staging

    def _settle(self, record):
        """Wait for `record`'s reduction; with shard_grads add this rank's part to its
        gradients and return the staging buffer to the pool. Idempotent."""
        for p in record.pending:
            p.wait()
        if record.staging is not None:
            staging, record.staging = record.staging, None
            with torch.no_grad():
                record.shard.add_reduced(record.index, staging, self.rank)
            self._comm_pool.give_back(staging)

    def _gather_bucket(self, k, index):
        """Start gathering bucket `index` of shard `k` into every rank's parameter buffer: one
        all-gather of the ranks' pieces, or (whole tensors) one broadcast per owner's range of
        it. Returns the pending collectives. Neither takes a temporary, so any number of them
        may be in flight (the overlapped gathers all are, until the forward)."""
        shard, group = self._shards[k], self.process_group
        if shard.owned is None:
            data, piece = shard.bucket_data(index), shard.pieces[index]
            return [comm.all_gather(data, piece, group, async_op=True)]
        return [
            comm.broadcast(shard.buffer.data[lo:hi], self._global_rank(r), group, async_op=True)
            for r, (lo, hi) in enumerate(shard.owned[index])
            if hi > lo
        ]

    def _gather(self):
        """Every rank's updated part into every rank's parameter buffer, bucket by bucket; with
        overlap_param_gather only started (the model's forward pre-hooks wait for them)."""
        if self._param_gather is not None:
            self._param_gather.launch(self._gather_bucket)
            return
        pending = [
            self._gather_bucket(k, i)
            for k, shard in enumerate(self._shards)
            for i in range(len(shard.buffer.layout.buckets))
        ]
        for bucket in pending:
            for p in bucket:
                p.wait()

    def wait_param_gather(self):
        """Wait for the parameter all-gathers that step() started (overlap_param_gather only;
        otherwise a no-op). Call it before reading or writing parameters between step() and the
        next forward of the model in any way other than the model's own forward,
        ``model.state_dict()`` or ``model.load_state_dict()`` (which wait by themselves)."""
        if self._param_gather is not None:
            self._param_gather.wait_all()

    def _finish_reduction(self):
        """Launch what backward did not (parameters without a gradient this step, or a
        backward that ran under no_sync), then wait for every bucket. Idempotent in a step."""
        self._launch_ready(force=True)
        for record in self._order:
            self._settle(record)
        self._in_flight.clear()

    def _reset(self):
        for record in self._order:
            record.ready = 0
            for p in record.pending or ():
                p.wait()
            record.pending = None
            record.staging = None
        self._in_flight.clear()
        self._next = 0

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside only accumulate gradients locally (as DDP's no_sync); the
        first backward after it reduces the accumulated sum."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous

    # -------------------------------------------------------------------------- step
    def step(self, closure=None):
        loss = None
        self.wait_param_gather()  # the last step's gathers read the pieces this step updates
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._finish_reduction()
        self.optimizer.step()
        self._gather()
        # The gathers rewrite every parameter, which torch's collectives do not count as an
        # in-place change: advanced here, as a local optimizer's step would (NOTE: [version
        # counters] in csrc/python/bindings.cpp), so a graph that saved a parameter before the
        # step raises in backward instead of using the new values.
        _interop.advance_versions(self._user_params)
        self._reset()
        return loss

    def zero_grad(self, set_to_none=True):
        """Zero the gradient buffers (the gradients stay views of them, see the class)."""
        self._reset()
        for shard in self._shards:
            if shard.buffer.grad is None:  # shard_grads
                for p in shard.buffer.params:
                    p.grad = None
                for piece in shard.pieces:
                    piece.grad.zero_()
                continue
            shard.buffer.reattach()
            shard.buffer.zero_grad()

    def clip_grad_norm_(self, max_norm, norm_type=2.0, error_if_nonfinite=False):
        """Clip the averaged gradients by their global norm: each rank takes the norm of its
        own pieces, the partial results are all-reduced (sum of p-th powers; max for inf), and
        each rank scales its pieces. Call between backward and step(); returns the norm."""
        max_norm, norm_type = float(max_norm), float(norm_type)
        if norm_type <= 0:
            raise ValueError(f"norm_type must be positive, got {norm_type}")
        self._finish_reduction()
        grads = [piece.grad for shard in self._shards for piece in shard.pieces]
        # Complex pieces: the norm over the values' magnitudes, the scaling through real views,
        # as genesis.nn.utils.clip_grad_norm_ (and torch) clip complex gradients.
        norm_grads, grads = _clip._complex_views(grads, norm_type)
        # A rank may own no tensor at all (whole tensors, more ranks than tensors): its part is 0.
        device = self._shards[0].buffer.data.device
        partial = torch.tensor(_local_norm(norm_grads, norm_type) if grads else 0.0, dtype=torch.float64, device=device)
        inf = norm_type == float("inf")
        if not inf:
            partial = partial**norm_type
        comm.all_reduce(partial, self.process_group, op=dist.ReduceOp.MAX if inf else dist.ReduceOp.SUM)
        total = partial if inf else partial ** (1.0 / norm_type)
        if error_if_nonfinite and not torch.isfinite(total):
            raise RuntimeError(
                f"the total norm of order {norm_type} of the gradients is non-finite, so it cannot be clipped"
            )
        coef = max_norm / (float(total) + 1e-6)
        if not coef >= 1.0 and grads:
            _scale(grads, coef)
        return total.to(self._shards[0].buffer.data.real.dtype)

    # -------------------------------------------------------------------------- state
    def state_dict(self):
        """The consolidated (unsharded) state on every rank, in the layout of the wrapped
        optimizer over the original parameters: loads into the unsharded genesis optimizer
        and into torch's optimizer of the same kind. A collective: call it on every rank."""
        self.wait_param_gather()
        return _state.consolidate(self)

    def load_state_dict(self, state_dict):
        """Load a consolidated state dict (from ``state_dict()``, or from the unsharded genesis or
        torch optimizer over the same parameters): each rank keeps its pieces."""
        self.wait_param_gather()
        _state.load_consolidated(self, state_dict)

    def local_gradient_bytes(self):
        """Bytes of gradient memory this optimizer keeps on this rank between backward and
        step: the full gradient buffers, or with shard_grads this rank's parts only."""
        if self.shard_grads:
            return sum(p.grad.numel() * p.grad.element_size() for s in self._shards for p in s.pieces)
        return sum(s.buffer.grad.numel() * s.buffer.grad.element_size() for s in self._shards)

    def local_state_bytes(self):
        """Bytes of optimizer state (including master weights) held by this rank."""
        return sum(
            v.numel() * v.element_size()
            for s in self.optimizer.state.values()
            for k, v in s.items()
            if isinstance(v, torch.Tensor) and k != "step"
        )

    def __repr__(self):
        return f"ZeroOptimizer(stage={self.stage}, world_size={self.world_size}, {self.optimizer!r})"


def _check_model(model, params):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"overlap_param_gather must be the torch.nn.Module whose parameters are optimized, got {type(model).__name__}"
        )
    ids = {id(p) for p in model.parameters()}
    if not any(id(p) in ids for p in params):
        raise ValueError("overlap_param_gather: the model holds none of the optimizer's parameters")


def _element_wise(optimizer_class):
    """True for genesis's element-wise rules, whose update of an element reads only that
    element: they may see any piece of a tensor. Rules that reduce over whole tensors (LAMB's
    trust ratio, Adafactor's factored moments and update clipping, Muon's orthogonalization)
    and classes genesis does not know keep every tensor whole on one rank instead
    (docs/distributed.md, "whole tensors per rank")."""
    from ..optim._rules import OPTIONS

    rule = getattr(optimizer_class, "_rule", None)
    return rule is not None and not OPTIONS[rule].reduction


def _local_norm(grads, norm_type):
    """The norm of this rank's gradient pieces, as one vector: genesis's fused clip code on the
    CPU (float64 accumulation), torch on other devices."""
    if grads[0].device.type == "cpu":
        return _clip._buffers(grads).norm(norm_type)
    return float(
        torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g, norm_type, dtype=torch.float64) for g in grads]), norm_type
        )
    )


def _scale(grads, coef):
    if grads[0].device.type == "cpu":
        _clip._buffers(grads).scale(coef)
    else:
        torch._foreach_mul_(grads, coef)
