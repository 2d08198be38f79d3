"""Sparse gradients: the step of an nn.Embedding(sparse=True) table, genesis against torch in
the same run (docs/semantics.md#sparse-gradients). SGD (no momentum) and Adagrad update the
gradient's rows only, as torch does; SGD with momentum densifies (its update moves every row).

A 1,000,000 x 64 float32 table (256 MB), 4096 looked-up rows per step; the median step time of
each implementation, timed in two alternating rounds, and the ratio of torch's time to
genesis's (above 1: genesis is faster).

Usage:
  python bench/bench_sparse.py [--rows N] [--dim D] [--batch B] [--threads N] [--markdown]
"""

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genesis  # noqa: E402

import _common as common  # noqa: E402

CASES = {
    "SGD": (lambda p: torch.optim.SGD(p, lr=0.1), lambda p: genesis.optim.SGD(p, lr=0.1)),
    "Adagrad": (lambda p: torch.optim.Adagrad(p, lr=0.1), lambda p: genesis.optim.Adagrad(p, lr=0.1)),
    "SGD momentum=0.9 (densified)": (
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: genesis.optim.SGD(p, lr=0.1, momentum=0.9),
    ),
    "SparseAdam": (lambda p: torch.optim.SparseAdam(p), lambda p: genesis.optim.SparseAdam(p)),
}


def _time(make, args):
    torch.manual_seed(0)
    table = torch.nn.Embedding(args.rows, args.dim, sparse=True)
    opt = make(table.parameters())
    gen = torch.Generator().manual_seed(1)
    times = []
    for k in range(args.steps + 2):
        opt.zero_grad()
        table(torch.randint(0, args.rows, (args.batch,), generator=gen)).sum().backward()
        start = time.perf_counter()
        opt.step()
        if k >= 2:  # the first steps create state
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _check(name, torch_make, genesis_make):
    """genesis against torch on a small table before timing (a fast but wrong step fails here)."""
    tables = []
    for make in (torch_make, genesis_make):
        torch.manual_seed(0)
        table = torch.nn.Embedding(300, 8, sparse=True)
        opt = make(table.parameters())
        gen = torch.Generator().manual_seed(2)
        for _ in range(5):
            opt.zero_grad()
            table(torch.randint(0, 300, (64,), generator=gen)).pow(2).sum().backward()
            opt.step()
        tables.append(table.weight.detach())
    try:
        torch.testing.assert_close(tables[1], tables[0])
    except AssertionError as e:
        raise SystemExit(f"{name}: genesis differs from torch, not timed\n{e}") from None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    genesis.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")  # torch's Adagrad
    print(
        f"{'#### ' if args.markdown else ''}Sparse embedding step: {args.rows:,} x {args.dim} float32, "
        f"{args.batch} rows per step, {args.threads} threads, CPU {common.cpu_model()}, "
        f"torch {torch.__version__}, genesis {genesis.__version__}\n"
    )
    for name, (torch_make, genesis_make) in CASES.items():
        _check(name, torch_make, genesis_make)
    results = {}
    for _ in range(2):
        for name, (torch_make, genesis_make) in CASES.items():
            results.setdefault((name, "torch"), []).append(_time(torch_make, args))
            results.setdefault((name, "genesis"), []).append(_time(genesis_make, args))
    rows = []
    for name in CASES:
        t, g = results[(name, "torch")], results[(name, "genesis")]
        rows.append(
            [
                name,
                " / ".join(f"{x:.3f}" for x in t),
                " / ".join(f"{x:.3f}" for x in g),
                " / ".join(f"{a / b:.2f}x" for a, b in zip(t, g)),
            ]
        )
    headers = ["optimizer", "torch ms (round 1 / 2)", "genesis ms (round 1 / 2)", "torch / genesis"]
    print(common.format_table(headers, rows, args.markdown, align="lrrr"))


if __name__ == "__main__":
    main()
