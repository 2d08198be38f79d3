"""Memory layouts: the AdamW step on the weights of a convolutional network kept in
channels_last (as vision training does) against the same weights contiguous, genesis against
torch's fused and foreach AdamW in the same run (docs/semantics.md#parameters).

36 Conv2d layers (64 to 512 channels, 3x3) = 72 tensors, 21.9M float32 parameters; the median
of 15 steps after one warm-up step, each implementation timed in two alternating rounds.

Usage:
  python bench/bench_layouts.py [--markdown] [--threads N]
"""

import argparse
import statistics
import time

import torch

import genesis

IMPLEMENTATIONS = {
    "torch AdamW (fused)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
    "torch AdamW (foreach)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
    "genesis AdamW": lambda ps: genesis.optim.AdamW(ps, lr=1e-3),
}


def _params(layout):
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(c, c, 3) for c in [64] * 10 + [128] * 10 + [256] * 10 + [512] * 6]
    params = list(torch.nn.Sequential(*convs).to(memory_format=layout).parameters())
    for p in params:
        p.grad = torch.randn_like(p)  # autograd's gradients have their parameter's strides
    return params


def _time(make, layout, steps):
    params = _params(layout)
    opt = make(params)
    opt.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        genesis.set_num_threads(args.threads)
    layouts = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    results = {}
    for _ in range(2):
        for lname, layout in layouts.items():
            for name, make in IMPLEMENTATIONS.items():
                results.setdefault((lname, name), []).append(_time(make, layout, args.steps))
    rows = []
    for lname in layouts:
        ours = results[(lname, "genesis AdamW")]
        for name in IMPLEMENTATIONS:
            ms = results[(lname, name)]
            ratio = "" if name.startswith("genesis") else " / ".join(f"{t / o:.2f}x" for t, o in zip(ms, ours))
            rows.append([lname, name, " / ".join(f"{m:.2f}" for m in ms), ratio])
    header = ["layout", "implementation", "step ms (round 1 / round 2)", "genesis speed-up"]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("| --- | --- | ---: | ---: |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        for row in [header] + rows:
            print("  ".join(f"{c:28s}" for c in row))


if __name__ == "__main__":
    main()
