"""Steps one optimizer on the GPU inside a profiler range, for Nsight Compute (.ci/gpu-check
with PROFILE=1 runs it under `ncu --profile-from-start off`): the kernels that are short of the
memory's pace on an H200 (bench/RESULTS.md, "CUDA: NVIDIA H200"), one at a time.

  python bench/profile_cuda.py --op adamw-int8 --steps 2

Warm-up steps run first (state allocated, plans built), then --steps steps between
cudaProfilerStart and cudaProfilerStop, so a profiler that starts collecting at the range sees
the steady-state kernels only. Prints the median device time of the profiled steps.
"""

import argparse
import statistics

import torch

import genesis

OPS = {
    "adamw": (lambda ps: genesis.optim.AdamW(ps, lr=1e-3), False),
    "adamw-int8": (lambda ps: genesis.optim.AdamW(ps, lr=1e-3, state_dtype="int8"), False),
    "lamb": (lambda ps: genesis.optim.LAMB(ps, lr=1e-3, weight_decay=1e-2), False),
    "adafactor": (lambda ps: genesis.optim.Adafactor(ps, lr=1e-2, weight_decay=1e-2), True),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--op", choices=sorted(OPS), required=True)
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--numel", type=int, default=10_000_000)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    make, matrices = OPS[args.op]
    # Adafactor factors matrices: 10M elements as 2500 x 4000.
    shape = (2500, args.numel // 2500) if matrices and args.numel % 2500 == 0 else (args.numel,)
    params = [torch.nn.Parameter(torch.randn(shape, device="cuda")) for _ in range(args.tensors)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = make(params)
    for _ in range(args.warmup):
        opt.step()
    torch.cuda.synchronize()
    times = []
    torch.cuda.cudart().cudaProfilerStart()
    for _ in range(args.steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        opt.step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    torch.cuda.cudart().cudaProfilerStop()
    n = args.tensors * args.numel
    print(
        f"{args.op}: {n:,} parameters in {args.tensors} tensors of shape {shape}, "
        f"median {statistics.median(times):.3f} ms per step over {args.steps} (profiled)"
    )


if __name__ == "__main__":
    main()
