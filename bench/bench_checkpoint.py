"""Checkpoint throughput: genesis.save / genesis.load against torch.save / torch.load, and the
C++ API's save_file / load_file (bench/checkpoint_io.cpp), on the same size of state.

The state is an optimizer-like dict of 16 float32 tensors ({"state": {i: {"exp_avg": t}}})
totalling --megabytes. Each operation is timed best-of --runs with time.perf_counter. Saves to a
path go through genesis's atomic replace (temporary file, fsync, rename); torch.save is timed
with an fsync after it, so both pay for durability. Loads read the file just written (page
cache). The default folder is /dev/shm (tmpfs) where it exists, so the disk is out of the
measurement; pass --folder to measure a real disk.

Usage:
  python bench/bench_checkpoint.py                       # 1024 MB, Python + torch
  python bench/bench_checkpoint.py --cpp build/cpp/tests/cpp/checkpoint_bench
  python bench/bench_checkpoint.py --megabytes 64 --runs 1   # smoke run
"""

import argparse
import os
import subprocess
import tempfile
import time

import torch

import genesis


def state_of(megabytes):
    count = megabytes * 2**20 // 4 // 16
    return {"state": {i: {"exp_avg": torch.full((count,), float(i))} for i in range(16)}}


def best_of(runs, fn):
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def torch_save_durable(obj, path):
    torch.save(obj, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--megabytes", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--folder", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    ap.add_argument("--cpp", help="path of the checkpoint_bench executable built by ctest's tree")
    args = ap.parse_args()

    state = state_of(args.megabytes)
    path = os.path.join(args.folder, "genesis_bench_checkpoint")
    rows = []
    try:
        rows.append(("genesis.save", best_of(args.runs, lambda: genesis.save(state, path))))
        rows.append(("genesis.load", best_of(args.runs, lambda: genesis.load(path))))
        rows.append(("torch.save (+ fsync)", best_of(args.runs, lambda: torch_save_durable(state, path))))
        rows.append(("torch.load (weights_only)", best_of(args.runs, lambda: torch.load(path, weights_only=True))))
    finally:
        if os.path.exists(path):
            os.remove(path)
    print(
        f"{args.megabytes} MB of float32 state in 16 tensors, folder {args.folder}, best of {args.runs}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("| operation | seconds | MB/s |\n| --- | --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {args.megabytes / seconds:.0f} |")
    times = dict(rows)
    print(
        f"\ngenesis/torch speed: save {times['torch.save (+ fsync)'] / times['genesis.save']:.2f}x, "
        f"load {times['torch.load (weights_only)'] / times['genesis.load']:.2f}x"
    )
    state = None  # frees the state before the C++ run (not `del`: the lambdas above name it)
    if args.cpp:
        print()
        subprocess.run([args.cpp, str(args.megabytes), args.folder, str(args.runs)], check=True)


if __name__ == "__main__":
    main()
