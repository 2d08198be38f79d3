"""Overlapping ZeroOptimizer's parameter all-gather with the next forward pass
(``ZeroOptimizer(..., overlap_param_gather=model)``; docs/distributed.md, "Overlapping the
parameter all-gather").

Without it, step() all-gathers every bucket's updated pieces and waits for all of them before
returning, so the whole gather sits on the critical path. With it, step() only launches the
gathers (asynchronously, one per bucket, in bucket order, which is the parameter order and so
usually the order forward uses them) and returns; a forward pre-hook on every module that owns
parameters waits only for the buckets holding that module's own parameters, right before the
module first runs. The gathers of later buckets thus proceed while earlier layers compute, as in
Megatron-LM's distributed optimizer.

Everything else that reads or writes the parameters outside a module's forward must first wait
for all pending gathers (``ParamGather.wait_all``, public as ``ZeroOptimizer.wait_param_gather``):
the optimizer's own step(), load_state_dict(), state_dict() and the checkpoint functions do,
and so do ``model.state_dict()`` and ``model.load_state_dict()`` through hooks registered here.
zero_grad() and clip_grad_norm_() do not (they touch only gradients), so that the usual
``step(); zero_grad(); model(x)`` loop keeps the overlap.

The gathered values are the same bytes either way; only when they arrive changes, so an
overlapped run equals a non-overlapped one bit for bit (tests/distributed)."""


class _Slot:
    """One bucket's pending gather: the collectives that fill it (one all-gather, or one
    broadcast per owner's range for whole-tensor rules)."""

    __slots__ = ("pending",)

    def __init__(self):
        self.pending = []

    def wait(self):
        pending, self.pending = self.pending, []
        for p in pending:
            p.wait()


class ParamGather:
    """The parameter gathers of `zero` (a ZeroOptimizer) for `model` (checked by the caller:
    a torch.nn.Module holding some of its parameters), waited for per module."""

    def __init__(self, zero, model):
        self.slots = {}  # (shard index, bucket index) -> _Slot
        slot_of_param = {}
        for k, shard in enumerate(zero._shards):
            for b, bucket in enumerate(shard.buffer.layout.buckets):
                slot = self.slots[(k, b)] = _Slot()
                for i in bucket.params:
                    slot_of_param[id(shard.buffer.params[i])] = slot
        modules = list(model.modules())
        per_module, covered = [], set()
        for module in modules:
            slots = []
            for p in module.parameters(recurse=False):
                slot = slot_of_param.get(id(p))
                if slot is not None and all(slot is not s for s in slots):
                    slots.append(slot)
                covered.add(id(p))
            per_module.append(slots)
        # Parameters the optimizer has but no module of the model owns: nothing announces their
        # use, so their buckets are waited for when the model's own forward starts.
        outside = [s for pid, s in slot_of_param.items() if pid not in covered]
        per_module[0] = list({id(s): s for s in per_module[0] + outside}.values())
        self.pending = False
        self.handles = []
        for module, slots in zip(modules, per_module):
            if slots:
                self.handles.append(module.register_forward_pre_hook(self._pre_forward(slots)))
        # model.state_dict() / load_state_dict() (of the model or any submodule) read or write
        # the parameters outside a forward.
        for module in modules:
            self.handles.append(module.register_state_dict_pre_hook(self._wait_all_hook))
            self.handles.append(module.register_load_state_dict_pre_hook(self._wait_all_hook))

    def _pre_forward(self, slots):
        def hook(module, args):
            if self.pending:
                for slot in slots:
                    slot.wait()

        return hook

    def _wait_all_hook(self, *args):
        self.wait_all()

    def launch(self, launch_bucket):
        """Start every bucket's gather (``launch_bucket(shard_index, bucket_index)`` returns its
        pending collectives) without waiting for any."""
        self.wait_all()
        for (k, b), slot in self.slots.items():
            slot.pending = launch_bucket(k, b)
        self.pending = True

    def wait_all(self):
        if not self.pending:
            return
        # Cleared first: a failed wait (a dead peer) raises once, not from every later hook.
        self.pending = False
        for slot in self.slots.values():
            slot.wait()
