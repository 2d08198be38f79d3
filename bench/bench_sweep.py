"""AdamW step time as the model grows: genesis vs torch's for-loop, foreach and fused CPU
implementations, over a range of parameter counts and of tensor counts (bench/plot.py draws it).

Two sweeps, each point measured by bench_cpu.py's own code (correctness check first, median
of timed steps, same thread count for everyone):
  params   10 tensors, 100 .. 1,000,000 elements each (1e3 .. 1e7 parameters)
  tensors  1000 elements each, 10 .. 3000 tensors (per-tensor overhead)

Usage:
  python bench/bench_sweep.py --json bench/results/sweep_cpu.json   # ~2 minutes on 2 cores
"""

import argparse
import json
import os

import torch

import genesis

try:  # run as a script (python bench/bench_sweep.py) or as a module
    import _common as common
    import bench_cpu
except ImportError:
    from bench import _common as common
    from bench import bench_cpu

PARAM_SWEEP = [(10, n) for n in (100, 1000, 10_000, 100_000, 1_000_000)]
TENSOR_SWEEP = [(n, 1000) for n in (10, 100, 300, 1000, 3000)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH", required=True, help="where to write the results")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=0.5, help="timed seconds per implementation and point")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    genesis.set_num_threads(args.threads)
    timing = dict(warmup=3, seconds=args.seconds, min_steps=5, max_steps=500)

    rmw = common.rmw_bandwidth(
        torch, max(256 << 20, 4 * (common.last_level_cache_bytes() or 0)), reps=5, genesis_scale=bench_cpu.genesis_scale
    )
    rmw_gbs = max(rmw.values())
    records = []
    for sweep, points in (("params", PARAM_SWEEP), ("tensors", TENSOR_SWEEP)):
        for n_tensors, numel in points:
            for record in bench_cpu.bench_workload(sweep, n_tensors, numel, ["AdamW"], timing, rmw_gbs, markdown=False):
                records.append(dict(record, sweep=sweep))
    machine = dict(
        cpu=common.cpu_model(),
        logical_cpus=os.cpu_count(),
        threads=args.threads,
        torch=torch.__version__,
        genesis=genesis.__version__,
    )
    with open(args.json, "w") as f:
        json.dump(dict(benchmark="bench_sweep", machine=machine, rmw_gbs=rmw_gbs, results=records), f, indent=1)


if __name__ == "__main__":
    main()
