"""8-bit optimizer state on the CPU (docs/low-bit-state.md): AdamW with state_dtype="int8"
against torch's fused AdamW with float32 state, genesis with float32 state, and torchao's
AdamW8bit where torchao is installed (row skipped otherwise; it is not a genesis dependency).

    python bench/bench_low_bit.py --params 50e6 --json bench/results/low_bit_cpu.json

Reported per implementation: median ms per step, the ratio to torch fused AdamW measured in the
same run, optimizer state bytes per parameter (measured from the state arrays), the bytes per
parameter a fused step must move (params r/w + grads r + state r/w) and the bandwidth that
implies, next to the machine's read-modify-write bandwidth: a kernel near it is memory-bound.
"""

import argparse
import gc
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import genesis  # noqa: E402

import _common as common  # noqa: E402

# Bytes a perfect fused AdamW step moves per parameter: param r/w 8, grad r 4, state r/w.
TRAFFIC = {"fp32": 12 + 2 * 8, "int8": 12 + 2 * 2 + 4 * 8 / 256}


def impls():
    out = [
        ("torch fused AdamW (fp32 state)", "fp32", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)),
        ("genesis AdamW (fp32 state)", "fp32", lambda ps: genesis.optim.AdamW(ps, lr=1e-3)),
        ("genesis AdamW (int8 state)", "int8", lambda ps: genesis.optim.AdamW(ps, lr=1e-3, state_dtype="int8")),
    ]
    try:
        from torchao.optim import AdamW8bit

        out.append(("torchao AdamW8bit", "int8", lambda ps: AdamW8bit(ps, lr=1e-3)))
    except ImportError:
        print("torchao is not installed: its row is skipped")
    return out


def state_bytes(opt, params):
    total = 0
    for p in params:
        for v in opt.state[p].values():
            if hasattr(v, "codes"):  # torchao's OptimState8bit tensor subclass (its qmap is shared)
                total += v.codes.numel() * v.codes.element_size() + v.scale.numel() * v.scale.element_size()
            elif isinstance(v, torch.Tensor) and v.dim() > 0:
                total += v.numel() * v.element_size()
    return total / sum(p.numel() for p in params)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=float, default=50e6)
    ap.add_argument("--tensors", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    # A multiple of the 256-element block: torchao's AdamW8bit keeps float32 state for any
    # tensor whose size is not one (it would silently be timed as a float32 optimizer).
    numel = int(args.params) // args.tensors // 256 * 256
    gen = torch.Generator().manual_seed(0)
    master = [torch.randn(numel, generator=gen) for _ in range(args.tensors)]
    grads = [torch.randn(numel, generator=gen) * 1e-2 for _ in range(args.tensors)]
    rmw = common.rmw_bandwidth(torch, 1 << 29, 3)
    rmw_best = max(rmw.values())
    rows = []
    for label, kind, make in impls():
        params = [torch.nn.Parameter(m.clone()) for m in master]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = make(params)
        times = common.time_steps(opt.step, warmup=3, seconds=args.seconds, min_steps=5, max_steps=60)
        state = state_bytes(opt, params)
        if kind == "int8" and state > 4:
            raise SystemExit(f"{label}: its state is not 8-bit for these tensors; the row would time float32 state")
        ms = common.median(times) * 1e3
        traffic = TRAFFIC[kind]
        rows.append(
            dict(
                impl=label,
                ms=ms,
                steps=len(times),
                state_bytes_per_param=state,
                traffic_bytes_per_param=traffic,
                gbs=traffic * args.tensors * numel / (ms * 1e-3) / 1e9,
            )
        )
        del opt, params
        gc.collect()
    base = rows[0]["ms"]
    print(
        f"{args.tensors} x {numel} = {args.tensors * numel / 1e6:.0f}M parameters, {torch.get_num_threads()} threads, "
        f"{common.cpu_model()}; best read-modify-write bandwidth {rmw_best:.1f} GB/s. The machine is "
        "shared with other jobs: compare ratios within this run, not absolute times."
    )
    print(
        f"{'implementation':34s} {'ms/step':>9s} {'vs torch fused':>15s} {'state B/param':>14s} "
        f"{'moved B/param':>14s} {'GB/s':>6s}"
    )
    for r in rows:
        r["speedup_vs_torch_fused"] = base / r["ms"]
        print(
            f"{r['impl']:34s} {r['ms']:9.2f} {r['speedup_vs_torch_fused']:14.2f}x "
            f"{r['state_bytes_per_param']:14.3f} {r['traffic_bytes_per_param']:14.2f} {r['gbs']:6.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(
                    benchmark="low_bit_cpu",
                    params=args.tensors * numel,
                    threads=torch.get_num_threads(),
                    cpu=common.cpu_model(),
                    rmw_gbs=rmw,
                    rows=rows,
                    shared_machine=True,
                ),
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
