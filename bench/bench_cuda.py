"""CUDA benchmark: genesis vs torch for-loop / foreach / fused on one GPU, in the same run.

(a) large: ~1B float32 parameters in 100 tensors (or --numel), device time per step (CUDA
events, median), achieved GB/s with the bytes per parameter stated, ratio to torch fused and to
the device-to-device copy bandwidth measured in the same run;
(b) small: 200 tensors of 4096 parameters, host time per step (what the Python and launch
overhead costs when the GPU is not the bottleneck);
(c) clip_grad_norm_ against torch's foreach version;
(d) bfloat16 parameters: genesis AdamW with float32 master weights against torch fused AdamW on
the same bfloat16 parameters (torch keeps no master copy: it moves fewer bytes, and rounds
every update to bfloat16);
(e) every other rule at the size of (a) (bench_cpu.py's table of options and bytes): torch
foreach, torch fused where torch's CUDA build has it (torch has no Lion or LAMB: bench_cpu.py's
torch-op versions stand in), genesis; then AdamW with 8-bit state (state_dtype="int8": read p 4,
g 4, m 1, v 1; write p 4, m 1, v 1; 16 B/param and a float32 scale per 256) against torch fused
AdamW with float32 state, with the state's bytes per parameter counted (--skip-rules leaves (e) out).
Prints the GPU model and a markdown section for bench/RESULTS.md (--markdown). Bytes per
parameter: AdamW 28, SGD momentum 20, RMSprop 20, clip 12 (read twice, written once), AdamW
bf16 with master weights 28 (read g 2, master 4, m 4, v 4; write p 2, master 4, m 4, v 4),
torch fused AdamW bf16 14.
"""

import argparse
import statistics
import time

import torch

import genesis

try:  # run as a script (python bench/bench_cuda.py) or as a module (python -m bench.bench_cuda)
    import bench_cpu
except ImportError:
    from bench import bench_cpu

OPS = {
    "AdamW": (lambda ps, impl: _opt(torch.optim.AdamW, genesis.optim.AdamW, ps, impl, lr=1e-3), 28),
    "SGD": (lambda ps, impl: _opt(torch.optim.SGD, genesis.optim.SGD, ps, impl, lr=1e-3, momentum=0.9), 20),
    "RMSprop": (lambda ps, impl: _opt(torch.optim.RMSprop, genesis.optim.RMSprop, ps, impl, lr=1e-3), 20),
}


def _opt(torch_cls, genesis_cls, params, impl, **kw):
    if impl == "genesis":
        return genesis_cls(params, **kw).step
    extra = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
    return torch_cls(params, **kw, **extra).step


def device_time(step, reps):
    for _ in range(3):
        step()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def host_time(step, reps):
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
    return statistics.median(times)


def make_params(n_tensors, numel, dtype=torch.float32, shape=None):
    """n_tensors random parameters of numel elements (of `shape` if given), gradients attached."""
    shape = (numel,) if shape is None else shape
    params = [torch.nn.Parameter(torch.randn(shape, device="cuda", dtype=dtype)) for _ in range(n_tensors)]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def copy_bandwidth(nbytes):
    x = torch.empty(nbytes // 4, device="cuda")
    y = torch.empty_like(x)
    sec = device_time(lambda: y.copy_(x), 20)
    return 2 * x.numel() * 4 / sec / 1e9  # read + write


def row(label, sec, nbytes, n, d2d, base):
    """One table row: time, achieved GB/s at `nbytes` per parameter, its share of the copy
    bandwidth, and the speed ratio to `base` seconds."""
    gbs = nbytes * n / sec / 1e9
    return [label, f"{sec * 1e3:.3f} ms", f"{gbs:.0f}", f"{100 * gbs / d2d:.1f}%", f"{base / sec:.2f}x"]


def table(rows, markdown):
    headers = ["implementation", "time/step", "GB/s", "% of D2D copy", "vs torch fused"]
    lines = [headers] + rows
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in lines) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines)


def clip_times(n_tensors, numel, reps):
    """{implementation: seconds} of one clip_grad_norm_, the gradient restore subtracted."""
    params = make_params(n_tensors, numel)
    grads = [p.grad.clone() for p in params]

    def restore():
        for p, g in zip(params, grads):
            p.grad.copy_(g)

    clip = {}
    for impl, fn in [
        ("torch foreach", lambda: torch.nn.utils.clip_grad_norm_(params, 1e-3, foreach=True)),
        ("genesis", lambda: genesis.nn.utils.clip_grad_norm_(params, 1e-3)),
    ]:
        clip[impl] = device_time(lambda fn=fn: (restore(), fn()), reps) - device_time(restore, reps)
    return clip


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--numel", type=int, default=10_000_000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--skip-rules", action="store_true", help="leave out (e), every other rule and 8-bit AdamW")
    ap.add_argument("--only-int8", action="store_true", help="8-bit AdamW's rows of (e) only")
    args = ap.parse_args()
    gpu = torch.cuda.get_device_name()
    d2d = copy_bandwidth(1 << 30)
    n = args.tensors * args.numel
    heading = "### " if args.markdown else ""
    print(f"{heading}CUDA: {gpu}, {time.strftime('%Y-%m-%d')}\n")
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}); genesis {genesis.__version__}; "
        f"device-to-device copy (read + write): {d2d:.0f} GB/s; median of {args.reps} steps after 3 warm-ups\n"
    )
    if args.only_int8:
        return every_rule(args, d2d)
    for name, (make, nbytes) in OPS.items():
        impls = ["for-loop", "foreach"] + (["fused"] if name != "RMSprop" else []) + ["genesis"]
        results = {}
        for impl in impls:
            params = make_params(args.tensors, args.numel)
            results[impl] = device_time(make(params, impl), args.reps)
            del params
            torch.cuda.empty_cache()
        base = results.get("fused", results["foreach"])
        rows = [row(impl, sec, nbytes, n, d2d, base) for impl, sec in results.items()]
        print(f"{'#### ' if args.markdown else ''}{name}, {args.tensors} x {args.numel:,} params, {nbytes} B/param\n")
        print(table(rows, args.markdown) + "\n")
        small = {}
        for impl in impls:
            params = make_params(200, 4096)
            small[impl] = host_time(make(params, impl), args.reps * 5)
        print(
            f"{name}, 200 tensors x 4096, host time per step: "
            + ", ".join(f"{impl} {sec * 1e6:.1f} us" for impl, sec in small.items())
            + "\n"
        )
    clip = clip_times(args.tensors, args.numel, args.reps)  # its tensors are freed on return
    print(
        "clip_grad_norm_ (12 B/param): "
        + ", ".join(f"{impl} {sec * 1e3:.3f} ms ({12 * n / sec / 1e9:.0f} GB/s)" for impl, sec in clip.items())
        + "\n"
    )
    torch.cuda.empty_cache()
    bf16 = {}
    for impl, make, nbytes in [
        ("torch fused (bf16 state, no master)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True).step, 14),
        ("genesis (master weights)", lambda ps: genesis.optim.AdamW(ps, lr=1e-3, master_weights=True).step, 28),
    ]:
        params = make_params(args.tensors, args.numel, torch.bfloat16)
        sec = device_time(make(params), args.reps)
        bf16[impl] = sec
        print(
            f"AdamW bf16 {impl}: {sec * 1e3:.3f} ms ({nbytes * n / sec / 1e9:.0f} GB/s at {nbytes} B/param, "
            f"{100 * nbytes * n / sec / 1e9 / d2d:.1f}% of D2D copy)"
        )
        del params
        torch.cuda.empty_cache()
    if not args.skip_rules:
        every_rule(args, d2d)


def state_bytes_per_param(opt, n):
    """Bytes of every tensor in the optimizer's per-parameter state, over the parameter count."""
    return sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if torch.is_tensor(v)) / n


def every_rule(args, d2d):
    """(e): the rules (a) does not cover, then 8-bit AdamW; one table, ratios to torch's fastest."""
    n = args.tensors * args.numel
    rows = []
    for name, spec in bench_cpu.OPTIMIZERS.items():
        if name in OPS or args.only_int8:
            continue
        tcls, gcls, kw, nbytes = spec["torch_cls"], spec["genesis_cls"], spec["kwargs"], spec["bytes"]
        shape = bench_cpu.matrix_shape(args.numel) if spec.get("matrix") else (args.numel,)
        impls = [("torch foreach", tcls, {"foreach": True})]
        if bench_cpu.torch_has_fused(tcls, device="cuda"):
            impls.append(("torch fused", tcls, {"fused": True}))
        impls.append(("genesis", gcls, {}))
        results = {}
        for impl, cls, extra in impls:
            params = make_params(args.tensors, args.numel, shape=shape)
            results[impl] = device_time(cls(params, **kw, **extra).step, args.reps)
            del params
            torch.cuda.empty_cache()
        best = min(sec for impl, sec in results.items() if impl != "genesis")
        rows += [row(f"{name} {impl}", sec, nbytes, n, d2d, best) for impl, sec in results.items()]
    int8 = {}
    for impl, make, nbytes in [
        ("torch fused (fp32 state)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True), 28),
        ("genesis (fp32 state)", lambda ps: genesis.optim.AdamW(ps, lr=1e-3), 28),
        ("genesis (int8 state)", lambda ps: genesis.optim.AdamW(ps, lr=1e-3, state_dtype="int8"), 16),
    ]:
        params = make_params(args.tensors, args.numel)
        opt = make(params)
        int8[impl] = (device_time(opt.step, args.reps), nbytes, state_bytes_per_param(opt, n))
        del params, opt
        torch.cuda.empty_cache()
    base = int8["torch fused (fp32 state)"][0]
    rows += [
        row(f"AdamW {impl}, state {state:.2f} B/param", sec, nbytes, n, d2d, base)
        for impl, (sec, nbytes, state) in int8.items()
    ]
    print(
        f"{'#### ' if args.markdown else ''}Every other rule and 8-bit AdamW, {args.tensors} x {args.numel:,} "
        "params (bytes per parameter: bench_cpu.py's table; ratio: to torch's fastest, AdamW rows to torch fused)\n"
    )
    print(table(rows, args.markdown) + "\n")


if __name__ == "__main__":
    main()
