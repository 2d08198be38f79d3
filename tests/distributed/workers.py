"""What each rank runs in the distributed tests (spawned processes import this module).

Every case trains the same tiny MLP for 30 steps on a fixed global batch per step, split evenly
over the ranks, and compares with the unsharded genesis optimizer trained on the whole batch in
the same process (the gradient of the mean loss over the global batch is the average of the
ranks' gradients, which is what DDP computes). Each worker returns plain numbers; the tests
assert on them."""

import os

import torch
import torch.distributed as dist

import genesis
from genesis.distributed import ZeroOptimizer, load_checkpoint, save_checkpoint

STEPS = 30
GLOBAL_BATCH = 8
BUCKET = 100  # elements: several buckets for the MLP below, each split over the ranks


def make_model(dtype=torch.float64, bias=True):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16, bias=bias),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 16, bias=bias),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 3, bias=bias),
    ).to(dtype)


def batch(step, dtype):
    g = torch.Generator().manual_seed(1000 + step)
    if dtype.is_complex:  # complex normal inputs and targets (real and imaginary parts drawn)
        return torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=dtype), torch.randn(
            GLOBAL_BATCH, 3, generator=g, dtype=dtype
        )
    return torch.randn(GLOBAL_BATCH, 6, generator=g).to(dtype), torch.randn(GLOBAL_BATCH, 3, generator=g).to(dtype)


def local_rows(rank, world_size, x):
    n = GLOBAL_BATCH // world_size
    return x[rank * n : (rank + 1) * n]


def loss_of(model, x, y):
    residual = model(x) - y
    if residual.is_complex():  # |r|^2, a real loss
        return torch.view_as_real(residual).pow(2).sum(-1).mean()
    return residual.pow(2).mean()


def groups_of(model, two_groups):
    params = list(model.parameters())
    if not two_groups:
        return params
    return [{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}]


CASES = {
    # name: (optimizer class, options, stage, dtype, extras)
    "adamw-1": (genesis.optim.AdamW, dict(lr=1e-2, weight_decay=0.1), 1, torch.float64, {}),
    "adamw-2": (genesis.optim.AdamW, dict(lr=1e-2, weight_decay=0.1), 2, torch.float64, {}),
    "sgd-1": (genesis.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), 1, torch.float64, {}),
    "sgd-2": (genesis.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3), 2, torch.float64, {}),
    "adamw-2-f32": (genesis.optim.AdamW, dict(lr=1e-2), 2, torch.float32, {}),
    "adamw-1-f32": (genesis.optim.AdamW, dict(lr=1e-2), 1, torch.float32, {}),
    # param groups + genesis scheduler + gradient accumulation + clipping + closure
    "adam-2-extras": (
        genesis.optim.Adam,
        dict(lr=1e-2, amsgrad=True),
        2,
        torch.float64,
        dict(two_groups=True, scheduler="genesis", accumulate=2, clip=0.5, closure=True),
    ),
    # rules that reduce over whole tensors: each tensor kept whole on one rank
    "lamb-1": (genesis.optim.LAMB, dict(lr=1e-2, weight_decay=0.1), 1, torch.float64, {}),
    "lamb-2": (genesis.optim.LAMB, dict(lr=1e-2, weight_decay=0.1), 2, torch.float64, {}),
    "adafactor-1": (genesis.optim.Adafactor, dict(lr=1e-2, weight_decay=0.1), 1, torch.float64, {}),
    "adafactor-2": (genesis.optim.Adafactor, dict(lr=1e-2, weight_decay=0.1), 2, torch.float64, {}),
    "lamb-2-f32": (genesis.optim.LAMB, dict(lr=1e-2), 2, torch.float32, {}),
    # ZeRO-2 with sharded gradient memory (shard_grads=True)
    "adamw-2-sg": (genesis.optim.AdamW, dict(lr=1e-2, weight_decay=0.1), 2, torch.float64, dict(shard_grads=True)),
    "lamb-2-sg": (genesis.optim.LAMB, dict(lr=1e-2, weight_decay=0.1), 2, torch.float64, dict(shard_grads=True)),
    "adam-2-extras-sg": (
        genesis.optim.Adam,
        dict(lr=1e-2, amsgrad=True),
        2,
        torch.float64,
        dict(two_groups=True, scheduler="genesis", accumulate=2, clip=0.5, closure=True, shard_grads=True),
    ),
    # Muon orthogonalizes whole matrices (and takes matrices only: no biases)
    "muon-2": (genesis.optim.Muon, dict(lr=1e-2), 2, torch.float64, dict(bias=False)),
    "lamb-2-extras": (
        genesis.optim.LAMB,
        dict(lr=1e-2, weight_decay=0.01),
        2,
        torch.float64,
        dict(two_groups=True, scheduler="torch", accumulate=2, clip=0.5, closure=True),
    ),
    "adafactor-1-extras": (
        genesis.optim.Adafactor,
        dict(lr=1e-2),
        1,
        torch.float64,
        dict(two_groups=True, scheduler="genesis", accumulate=2, clip=0.1),
    ),
    # complex parameters (torch's ZeroRedundancyOptimizer takes them): the flat buffers, pieces,
    # collectives, checkpoints and clipping work on the complex values as torch's unsharded run
    "adamw-2-c128": (genesis.optim.AdamW, dict(lr=1e-2, weight_decay=0.1), 2, torch.complex128, {}),
    "adamw-1-c64": (genesis.optim.AdamW, dict(lr=1e-2), 1, torch.complex64, {}),
    "lamb-2-c128": (genesis.optim.LAMB, dict(lr=1e-2, weight_decay=0.1), 2, torch.complex128, {}),
    "adam-2-extras-c128-sg": (
        genesis.optim.Adam,
        dict(lr=1e-2, amsgrad=True),
        2,
        torch.complex128,
        dict(two_groups=True, scheduler="genesis", accumulate=2, clip=0.5, closure=True, shard_grads=True),
    ),
    "rmsprop-1-extras": (
        genesis.optim.RMSprop,
        dict(lr=1e-3, momentum=0.5),
        1,
        torch.float64,
        dict(two_groups=True, scheduler="torch", accumulate=2, clip=0.1),
    ),
}


def _scheduler(kind, opt):
    if kind == "genesis":
        return genesis.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    if kind == "torch":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    return None


def train(model, opt, rank, world_size, dtype, extras, steps, start=0, sharded=True):
    """`steps` steps from step `start`. The reference (sharded=False) sees the global batch."""
    sched = _scheduler(extras.get("scheduler") if sharded else ("genesis" if extras.get("scheduler") else None), opt)
    for _ in range(start):
        if sched is not None:
            sched.step()
    accumulate = extras.get("accumulate", 1)
    for step in range(start, start + steps):
        x, y = batch(step, dtype)
        if sharded:
            x, y = local_rows(rank, world_size, x), local_rows(rank, world_size, y)
        micro = x.shape[0] // accumulate

        def closure(x=x, y=y, micro=micro):
            for k in range(accumulate):
                xs, ys = x[k * micro : (k + 1) * micro], y[k * micro : (k + 1) * micro]
                last = k == accumulate - 1
                if sharded and not last:
                    with opt.no_sync():
                        (loss_of(model, xs, ys) / accumulate).backward()
                else:
                    (loss_of(model, xs, ys) / accumulate).backward()
            if extras.get("clip"):
                if sharded:
                    opt.clip_grad_norm_(extras["clip"])
                else:
                    genesis.nn.utils.clip_grad_norm_(model.parameters(), extras["clip"])
            return 0.0

        if extras.get("closure"):
            opt.step(closure)
        else:
            closure()
            opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()


def reference(case, steps=STEPS):
    cls, options, _, dtype, extras = CASES[case]
    model = make_model(dtype, extras.get("bias", True))
    opt = cls(groups_of(model, extras.get("two_groups")), **options)
    train(model, opt, 0, 1, dtype, extras, steps, sharded=False)
    return model, opt


def max_diff(a_params, b_params):
    return max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(a_params, b_params))


def state_bytes(opt, param=None):
    """Bytes of `opt`'s state tensors (of parameter `param` only, if given)."""
    states = opt.state.values() if param is None else [opt.state[param]]
    return sum(
        v.numel() * v.element_size()
        for s in states
        for k, v in s.items()
        if isinstance(v, torch.Tensor) and k != "step"
    )


def equivalence(rank, world_size, cases):
    """Per case: max |sharded - reference| over the parameters, this rank's state bytes, the
    reference's state bytes, and the max difference of the consolidated state."""
    out = {}
    for case in cases:
        cls, options, stage, dtype, extras = CASES[case]
        model = make_model(dtype, extras.get("bias", True))
        shard_grads = extras.get("shard_grads", False)
        opt = ZeroOptimizer(
            groups_of(model, extras.get("two_groups")),
            cls,
            stage=stage,
            bucket_numel=BUCKET,
            shard_grads=shard_grads,
            **options,
        )
        train(model, opt, rank, world_size, dtype, extras, STEPS)
        # after a backward, the gradient memory this rank keeps (and, with shard_grads, none
        # left on the parameters); the reduction is discarded by zero_grad
        x, y = batch(STEPS, dtype)
        loss_of(model, local_rows(rank, world_size, x), local_rows(rank, world_size, y)).backward()
        opt._finish_reduction()
        grads_left = sum(p.grad is not None for p in model.parameters())
        grad_bytes = opt.local_gradient_bytes()
        opt.zero_grad()
        ref_model, ref_opt = reference(case)
        consolidated = opt.state_dict()
        ref_state = ref_opt.state_dict()["state"]
        state_diff = max(
            float((torch.as_tensor(consolidated["state"][i][k]) - torch.as_tensor(v)).abs().max())
            for i, entries in ref_state.items()
            for k, v in entries.items()
        )
        out[case] = dict(
            params=max_diff(list(model.parameters()), list(ref_model.parameters())),
            local_bytes=opt.local_state_bytes(),
            full_bytes=state_bytes(ref_opt),
            state=state_diff,
            numel=sum(p.numel() for p in model.parameters()),
            params_count=len(list(model.parameters())),
            whole_tensors=opt.whole_tensors,
            shard_grads=shard_grads,
            grads_left=grads_left,
            grad_bytes=grad_bytes,
            max_tensor_bytes=max(state_bytes(ref_opt, p) for p in ref_model.parameters()),
            lrs=[g["lr"] for g in opt.param_groups],
            ref_lrs=[g["lr"] for g in ref_opt.param_groups],
            # bucket-sized temporaries kept for reuse (gloo's reduce-scatter, shard_grads' staging)
            pooled=len(opt._comm_pool),
            stage=stage,
        )
    return out


def consolidated_loads(rank, world_size, case="adamw-2", targets=(genesis.optim.AdamW, torch.optim.AdamW)):
    """The consolidated state_dict of a ZeroOptimizer loads into each of `targets` (unsharded
    optimizers of the same kind: genesis's, torch's), and each then takes the same next step
    as the reference; the dict also loads back into a fresh ZeroOptimizer."""
    cls, options, stage, dtype, _ = CASES[case]
    model = make_model(dtype)
    opt = ZeroOptimizer(model.parameters(), cls, stage=stage, bucket_numel=BUCKET, **options)
    train(model, opt, rank, world_size, dtype, {}, 5)
    sd = opt.state_dict()
    ref_model, ref_opt = reference(case, steps=6)
    results = {}
    # ... and back into a ZeroOptimizer (another bucket size)
    again = make_model(dtype)
    with torch.no_grad():
        for a, b in zip(again.parameters(), model.parameters()):
            a.copy_(b)
    o = ZeroOptimizer(again.parameters(), cls, stage=stage, bucket_numel=BUCKET * 3, **options)
    o.load_state_dict(sd)
    train(again, o, rank, world_size, dtype, {}, 1, start=5)
    results["zero"] = max_diff(list(again.parameters()), list(ref_model.parameters()))
    if case != "adamw-2":
        results.update(_load_into(sd, model, targets, options, ref_model, dtype))
        return results
    # construction gives every rank rank 0's parameters
    moved = make_model()
    with torch.no_grad():
        moved[0].weight.add_(rank)
    ZeroOptimizer(moved.parameters(), cls, **options)
    results["broadcast"] = max_diff(list(moved.parameters()), list(make_model().parameters()))
    # a bad hyperparameter raises before the parameters move into flat buffers
    fresh = make_model()
    try:
        ZeroOptimizer(fresh.parameters(), cls, lr=-1.0)
        results["bad_lr"] = "accepted"
    except ValueError:
        results["bad_lr"] = "untouched" if fresh[0].weight.grad is None else "moved"
    results.update(_load_into(sd, model, targets, options, ref_model))
    return results


def _load_into(sd, model, targets, options, ref_model, dtype=torch.float64):
    """{"genesis"/"torch": difference to the reference after loading `sd` into that unsharded
    optimizer over a copy of `model` and taking step 5}."""
    results = {}
    for cls in targets:
        m = make_model(dtype)
        with torch.no_grad():
            for a, b in zip(m.parameters(), model.parameters()):
                a.copy_(b)
        o = cls(m.parameters(), **options)
        o.load_state_dict(sd)
        train(m, o, 0, 1, dtype, {}, 1, start=5, sharded=False)
        results[cls.__module__.split(".")[0]] = max_diff(list(m.parameters()), list(ref_model.parameters()))
    return results


def resharding(rank, world_size, save_dir, load_dir, case="adamw-2"):
    """Train 15 steps and save a checkpoint into `save_dir` (if given); load the checkpoint in
    `load_dir` (if given, written at another world size after 15 steps), train the remaining
    15 steps, and return the difference to the uninterrupted reference."""
    cls, options, stage, dtype, extras = CASES[case]
    save_dir = save_dir and os.path.join(save_dir, case)
    load_dir = load_dir and os.path.join(load_dir, case)
    out = {}
    if save_dir:
        model = make_model(dtype)
        opt = ZeroOptimizer(model.parameters(), cls, stage=stage, bucket_numel=BUCKET, **options)
        train(model, opt, rank, world_size, dtype, extras, STEPS // 2)
        save_checkpoint(opt, save_dir)
        if rank == 0:
            genesis.save(
                {str(i): p.detach() for i, p in enumerate(model.parameters())}, os.path.join(save_dir, "model.gen")
            )
        dist.barrier()
    if load_dir:
        model = make_model(dtype)
        # a different bucket size too: the checkpoint does not depend on the layout
        opt = ZeroOptimizer(model.parameters(), cls, stage=stage, bucket_numel=BUCKET * 3, **options)
        saved = genesis.load(os.path.join(load_dir, "model.gen"))
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.copy_(saved[str(i)])
        load_checkpoint(opt, load_dir)
        train(model, opt, rank, world_size, dtype, extras, STEPS - STEPS // 2, start=STEPS // 2)
        ref_model, _ = reference(case)
        out["resumed"] = max_diff(list(model.parameters()), list(ref_model.parameters()))
    return out


def interrupted_checkpoint(rank, world_size, directory):
    """A save that fails while writing the shards leaves the previous checkpoint loadable."""
    from genesis.distributed import checkpoint

    model = make_model()
    opt = ZeroOptimizer(model.parameters(), genesis.optim.AdamW, stage=1, bucket_numel=BUCKET)
    train(model, opt, rank, world_size, torch.float64, {}, 3)
    save_checkpoint(opt, directory)
    before = opt.state_dict()
    train(model, opt, rank, world_size, torch.float64, {}, 2, start=3)
    real_save = checkpoint.serialization.save

    def dying_save(obj, path):  # writes half a file, then "the process dies"
        with open(path, "wb") as f:
            f.write(b"\x93GENESIS partial")
        raise KeyboardInterrupt("simulated crash mid-write")

    checkpoint.serialization.save = dying_save
    try:
        save_checkpoint(opt, directory)
        crashed = False
    except KeyboardInterrupt:
        crashed = True
    finally:
        checkpoint.serialization.save = real_save
    dist.barrier()
    load_checkpoint(opt, directory)
    after = opt.state_dict()
    diff = max(
        float((torch.as_tensor(after["state"][i][k]) - torch.as_tensor(v)).abs().max())
        for i, entries in before["state"].items()
        for k, v in entries.items()
    )
    leftovers = sorted(f for f in os.listdir(directory) if ".tmp" in f)
    return dict(crashed=crashed, diff=diff, leftovers=leftovers)


def checkpoint_of_another_kind(rank, world_size, directory):
    """A checkpoint of an element-wise rule (pieces) does not load into a rule that keeps whole
    tensors per rank: a ValueError on every rank, the optimizer's state untouched."""
    model = make_model()
    opt = ZeroOptimizer(model.parameters(), genesis.optim.AdamW, bucket_numel=BUCKET)
    train(model, opt, rank, world_size, torch.float64, {}, 1)
    save_checkpoint(opt, directory)
    lamb = ZeroOptimizer(model.parameters(), genesis.optim.LAMB, bucket_numel=BUCKET)
    try:
        load_checkpoint(lamb, directory)
        return "loaded"
    except ValueError as error:
        return str(error) if not lamb.optimizer.state else "state changed"


def torch_zero_redundancy(rank, world_size):
    """torch's ZeroRedundancyOptimizer with genesis's AdamW, LAMB and Adafactor as the local
    optimizer, against the unsharded genesis optimizer (the model is wrapped in DDP, as
    ZeroRedundancyOptimizer expects). It keeps whole parameters per rank, so the per-tensor
    reductions of LAMB and Adafactor see whole tensors (ZeroOptimizer refuses them)."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    out = {}
    for cls, options in (
        (genesis.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
        (genesis.optim.LAMB, dict(lr=1e-2, weight_decay=0.1)),
        (genesis.optim.Adafactor, dict(lr=1e-2, weight_decay=0.1)),
    ):
        model = make_model()
        ddp = DistributedDataParallel(model)
        opt = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=cls, **options)
        for step in range(10):
            x, y = batch(step, torch.float64)
            loss_of(ddp, local_rows(rank, world_size, x), local_rows(rank, world_size, y)).backward()
            opt.step()
            opt.zero_grad()
        ref_model = make_model()
        train(ref_model, cls(ref_model.parameters(), **options), 0, 1, torch.float64, {}, 10, sharded=False)
        out[cls.__name__] = max_diff(list(model.parameters()), list(ref_model.parameters()))
    return out


def versions(rank, world_size):
    """A step between a forward pass and its backward is torch's in-place error with
    ZeroOptimizer too: the parameter all-gather rewrites every parameter, and the step advances
    their version counters (NOTE: [version counters] in csrc/python/bindings.cpp). Per case:
    (counter advanced, backward raised torch's error)."""
    out = {}
    for name, options in (
        ("stage1", dict(stage=1)),
        ("stage2", dict(stage=2)),
        ("shard_grads", dict(stage=2, shard_grads=True)),
        ("overlap", dict(stage=2, overlap_param_gather=True)),
    ):
        model = make_model()
        if options.get("overlap_param_gather"):
            options = dict(options, overlap_param_gather=model)
        opt = ZeroOptimizer(model.parameters(), genesis.optim.AdamW, lr=1e-2, **options)
        x, y = batch(0, torch.float64)
        loss_of(model, local_rows(rank, world_size, x), local_rows(rank, world_size, y)).backward()
        loss = loss_of(model, x, y)  # its graph saved the weights
        before = [p._version for p in model.parameters()]
        opt.step()
        opt.wait_param_gather()
        advanced = all(p._version > v for p, v in zip(model.parameters(), before))
        try:
            loss.backward()
            raised = ""
        except RuntimeError as e:
            raised = str(e)
        out[name] = (advanced, "modified by an inplace operation" in raised)
    return out


def rank_dies(rank, world_size):
    """Rank 1 exits in the middle of training; rank 0's next step must raise, not hang."""
    import time

    model = make_model()
    opt = ZeroOptimizer(model.parameters(), genesis.optim.AdamW, stage=2, bucket_numel=BUCKET)
    train(model, opt, rank, world_size, torch.float64, {}, 2)
    if rank == 1:
        os._exit(3)
    start = time.monotonic()
    try:
        train(model, opt, rank, world_size, torch.float64, {}, 1, start=2)
    except RuntimeError as error:
        return dict(error=type(error).__name__, message=str(error), seconds=time.monotonic() - start)
    return dict(error=None, seconds=time.monotonic() - start)


def mixed_precision(rank, world_size, cls=genesis.optim.AdamW):
    """bfloat16 parameters with float32 master weights (genesis's master_weights=True): each
    rank holds its 1/N of the moments and of the master weights, every rank ends with the same
    parameters, and each parameter is its master weight rounded to bfloat16."""
    model = make_model(torch.bfloat16)
    opt = ZeroOptimizer(model.parameters(), cls, stage=2, bucket_numel=BUCKET, lr=1e-2, master_weights=True)
    start = [p.detach().clone() for p in model.parameters()]
    train(model, opt, rank, world_size, torch.bfloat16, {}, 5)
    consolidated = opt.state_dict()
    rounding = max(
        float((consolidated["state"][i]["master_param"].to(torch.bfloat16) - p.detach()).abs().max())
        for i, p in enumerate(model.parameters())
    )
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    everyone = comm_all_gather(flat)
    return dict(
        local_bytes=opt.local_state_bytes(),
        numel=sum(p.numel() for p in model.parameters()),
        max_numel=max(p.numel() for p in model.parameters()),
        master_dtypes=sorted({str(s["master_param"].dtype) for s in opt.optimizer.state.values()}),
        rounding=rounding,
        moved=max_diff(start, list(model.parameters())),
        same_on_all=all(torch.equal(flat, other) for other in everyone),
    )


def comm_all_gather(tensor):
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor)
    return out
