"""What each rank runs in tests/distributed/test_overlap.py: ZeroOptimizer with
overlap_param_gather=model against the same run without it (bit for bit).

Two modes. "async": the gathers really run in the background (gloo's threads), as in use; on
this tiny model they usually finish before anyone looks, so this mode mostly checks that
nothing breaks. "lazy": the gathers step() starts do not run at all until someone waits for
them (comm's async all-gather and broadcast are replaced by ones that run when waited for). A
parameter read before its wait then still holds the value of the step before on every other
rank's piece, so any missing wait changes the results deterministically; the run also checks
that reading without a wait does see stale values (the fake is in effect)."""

import contextlib
import os

import torch

from genesis.distributed import ZeroOptimizer, comm, load_checkpoint, save_checkpoint

from workers import BUCKET, CASES, STEPS, make_model, train

OVERLAP_CASES = (
    "adamw-2",
    "adamw-2-f32",
    "lamb-2",
    "lamb-2-f32",
    "adamw-1",
    "adamw-2-sg",
    "adam-2-extras",
    "adamw-2-c128",
)


class _Lazy:
    """A collective that runs (synchronously) when waited for."""

    def __init__(self, fn, args, kwargs):
        self.call = (fn, args, kwargs)

    def wait(self):
        if self.call is not None:
            fn, args, kwargs = self.call
            self.call = None
            fn(*args, **kwargs)


@contextlib.contextmanager
def lazy_gathers():
    real = comm.all_gather, comm.broadcast

    def deferred(fn):
        def call(*args, async_op=False, **kwargs):
            if not async_op:
                return fn(*args, **kwargs)
            return _Lazy(fn, args, kwargs)

        return call

    comm.all_gather, comm.broadcast = deferred(real[0]), deferred(real[1])
    try:
        yield
    finally:
        comm.all_gather, comm.broadcast = real


def _build(case, overlap):
    cls, options, stage, dtype, extras = CASES[case]
    model = make_model(dtype, extras.get("bias", True))
    params = list(model.parameters())
    groups = params if not extras.get("two_groups") else [{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}]
    opt = ZeroOptimizer(
        groups,
        cls,
        stage=stage,
        bucket_numel=BUCKET,
        shard_grads=extras.get("shard_grads", False),
        overlap_param_gather=model if overlap else None,
        **options,
    )
    return model, opt


def _run(case, rank, world_size, overlap, checkpoint_dir=None):
    """30 steps; with `checkpoint_dir`, a checkpoint and the model's state_dict taken right
    after step 15 (while the gathers may be pending) are returned too. Then one more step()
    without a forward in between. Returns the model, the optimizer, and what was checked."""
    _, _, _, dtype, extras = CASES[case]
    model, opt = _build(case, overlap)
    half = STEPS // 2
    train(model, opt, rank, world_size, dtype, extras, half)
    saved = None
    if checkpoint_dir is not None:
        stale = [p.detach().clone() for p in model.parameters()]  # no wait: may be stale
        saved = {k: v.clone() for k, v in model.state_dict().items()}  # waits
        save_checkpoint(opt, checkpoint_dir)
        saved_stale = any(not torch.equal(a, b) for a, b in zip(stale, saved.values()))
    train(model, opt, rank, world_size, dtype, extras, STEPS - half, start=half)
    opt.step()  # a second step() with no forward in between: waits for the last gathers
    opt.wait_param_gather()
    return model, opt, saved, (saved_stale if checkpoint_dir is not None else None)


def _bitwise(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _states_equal(a, b):
    if a["state"].keys() != b["state"].keys():
        return False
    return all(
        _bitwise(
            [torch.as_tensor(v) for v in a["state"][i].values()], [torch.as_tensor(v) for v in b["state"][i].values()]
        )
        and a["state"][i].keys() == b["state"][i].keys()
        for i in a["state"]
    )


def overlap_equivalence(rank, world_size, directory):
    """Per case and mode: the overlapped run's parameters and consolidated state equal the
    plain run's bit for bit; a checkpoint and model.state_dict() taken right after a step
    resume (in a fresh overlapped optimizer) to the same bits; in lazy mode, whether reading
    without waiting saw stale values."""
    out = {}
    for case in OVERLAP_CASES:
        _, _, _, dtype, extras = CASES[case]
        ref_model, ref_opt, _, _ = _run(case, rank, world_size, overlap=False)
        ref_params = [p.detach().clone() for p in ref_model.parameters()]
        ref_state = ref_opt.state_dict()
        for mode in ("async", "lazy"):
            ckpt = os.path.join(directory, f"{case}-{mode}")
            with lazy_gathers() if mode == "lazy" else contextlib.nullcontext():
                model, opt, saved, saved_stale = _run(case, rank, world_size, True, ckpt)
                params = _bitwise([p.detach() for p in model.parameters()], ref_params)
                state = _states_equal(opt.state_dict(), ref_state)
                # resume from what was saved right after step 15 (not with a scheduler: a new one
                # would start from the saved, already decayed lr)
                if extras.get("scheduler"):
                    out[(case, mode)] = dict(params=params, state=state, resumed=None, saved_stale=saved_stale)
                    continue
                again, again_opt = _build(case, overlap=True)
                again.load_state_dict(saved)
                load_checkpoint(again_opt, ckpt)
                train(again, again_opt, rank, world_size, dtype, extras, STEPS - STEPS // 2, start=STEPS // 2)
                again_opt.step()
                again_opt.wait_param_gather()
                resumed = _bitwise([p.detach() for p in again.parameters()], ref_params)
            out[(case, mode)] = dict(params=params, state=state, resumed=resumed, saved_stale=saved_stale)
    return out


def bad_models(rank, world_size):
    """overlap_param_gather must be a module holding some of the parameters; the error comes
    before the parameters move into flat buffers."""
    out = {}
    for name, model_of in (("not a module", lambda m: [m]), ("other model", lambda m: make_model())):
        model = make_model()
        try:
            ZeroOptimizer(model.parameters(), CASES["adamw-2"][0], overlap_param_gather=model_of(model))
            out[name] = "accepted"
        except (TypeError, ValueError) as error:
            moved = model[0].weight.grad is not None
            out[name] = (type(error).__name__, str(error), moved)
    return out
