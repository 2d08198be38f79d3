"""Run a function on N spawned processes joined in a gloo process group, and collect what each
returns. Every process is joined with a deadline and terminated if it overruns, so a failing or
hanging test never leaves processes behind."""

import os
import pickle
import socket
import traceback

import torch.multiprocessing as mp

# Per-collective deadline inside the workers (init_process_group's timeout); tests that expect
# a failure use a shorter one.
PG_TIMEOUT_S = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, fn, args, out_dir, timeout_s):
    import datetime

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    result = None
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        try:
            result = ("ok", fn(rank, world_size, *args))
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    except BaseException:  # reported to the parent, which fails the test
        result = ("error", traceback.format_exc())
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)


def run(fn, world_size, *args, out_dir, deadline_s=120, pg_timeout_s=PG_TIMEOUT_S):
    """fn(rank, world_size, *args) on every rank; returns the per-rank results, raising
    AssertionError with the worker's traceback if any rank failed."""
    results = run_raw(fn, world_size, *args, out_dir=out_dir, deadline_s=deadline_s, pg_timeout_s=pg_timeout_s)
    for rank, (kind, value) in enumerate(results):
        if kind != "ok":
            raise AssertionError(f"rank {rank} failed:\n{value}")
    return [value for _, value in results]


def run_raw(fn, world_size, *args, out_dir, deadline_s=120, pg_timeout_s=PG_TIMEOUT_S):
    """Like run(), but returns ("ok", value) / ("error", traceback) / ("missing", exitcode)
    per rank instead of raising."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=_entry, args=(r, world_size, port, fn, args, str(out_dir), pg_timeout_s))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    import time

    end = time.monotonic() + deadline_s
    try:
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    results = []
    for r, p in enumerate(procs):
        path = os.path.join(str(out_dir), f"rank{r}.pkl")
        if os.path.exists(path):
            with open(path, "rb") as f:
                results.append(pickle.load(f))
            os.remove(path)
        else:
            results.append(("missing", p.exitcode))
    return results
