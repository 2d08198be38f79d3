"""FSDP2 benchmark: the optimizer step on DTensor parameters (torch.distributed.fsdp.fully_shard
over a CPU device mesh, gloo, 2 ranks on this machine, one thread each), genesis AdamW against
torch's AdamW (its default for-loop implementation and foreach=True) in the same run
(docs/distributed.md#fsdp2-and-dtensor-parameters).

Only opt.step() is timed (median over the timed steps, the ranks aligned by a barrier before
each), after one forward and backward, for two models:
  many small   100 x Linear(32, 32): 200 parameters, 105,600 elements (per-tensor overhead)
  large        8 x Linear(2048, 2048): 16 parameters, 33.6M elements (16.8M per rank)
Each implementation is measured twice, alternating, so that the machine's drift shows.

Usage:
  python bench/bench_fsdp2.py [--markdown] [--steps N]
"""

import argparse
import os
import pickle
import socket
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

MODELS = {"many small": (100, 32), "large": (8, 2048)}
IMPLEMENTATIONS = ("torch AdamW (for-loop)", "torch AdamW (foreach)", "genesis AdamW")


def _optimizer(name, params):
    import genesis

    if name == "genesis AdamW":
        return genesis.optim.AdamW(params, lr=1e-3)
    return torch.optim.AdamW(params, lr=1e-3, foreach=name.endswith("(foreach)"))


def _time(name, layers, width, steps, mesh):
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = _optimizer(name, model.parameters())
    model(torch.randn(4, width)).sum().backward()
    opt.step()  # state created
    times = []
    for _ in range(steps):
        dist.barrier()
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _worker(rank, world_size, port, steps, out_path):
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    mesh = init_device_mesh("cpu", (world_size,))
    results = {}
    for model, (layers, width) in MODELS.items():
        for _ in range(2):
            for name in IMPLEMENTATIONS:
                results.setdefault((model, name), []).append(_time(name, layers, width, steps, mesh))
    if rank == 0:
        with open(out_path, "wb") as f:
            pickle.dump(results, f)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out_path = os.path.join(tempfile.mkdtemp(), "fsdp2.pkl")
    mp.spawn(_worker, args=(2, port, args.steps, out_path), nprocs=2)
    with open(out_path, "rb") as f:
        results = pickle.load(f)
    sep = " | " if args.markdown else "  "
    header = ["model", "implementation", "step ms (round 1 / round 2)", "genesis speed-up"]
    lines = [sep.join(header)]
    if args.markdown:
        lines = ["| " + lines[0] + " |", "| --- | --- | ---: | ---: |"]
    for model in MODELS:
        ours = results[(model, "genesis AdamW")]
        for name in IMPLEMENTATIONS:
            ms = results[(model, name)]
            ratio = "" if name.startswith("genesis") else " / ".join(f"{a / b:.1f}x" for a, b in zip(ms, ours))
            row = [model, name, " / ".join(f"{m:.2f}" for m in ms), ratio]
            lines.append(("| " + sep.join(row) + " |") if args.markdown else sep.join(row))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
