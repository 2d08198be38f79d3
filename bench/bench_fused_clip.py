"""Fused clip benchmark: optimizer.clip_grad_norm_ (the norm in one read, the coefficient applied
inside the update) and GradScaler's lazy unscale_, each against torch's way of doing the same in
the same run (docs/mixed-precision.md#fused-clipping).

Workload: ~50M parameters in 50 tensors (or --numel/--tensors), median of timed steps, same
thread count for torch and genesis. Prints ms/step, GB/s with the bytes per parameter stated,
and the speed ratio to torch's pipeline. The gradients are fixed across steps (no backward), and
the clip is active in every step.

  clip + AdamW (fp32). genesis: opt.clip_grad_norm_ reads g (4 B), the step applies the
    coefficient as it loads g (28 B): 32 B/param. torch: clip_grad_norm_ reads g (4) and scales
    it in place (8), then fused AdamW (28): 40 B/param.
  GradScaler + clip + AdamW (fp32). genesis: unscale_ is lazy (0 B), the norm pass unscales as it
    reads and finds inf/NaN on the way (4 B), the step (28 B): 32 B/param. torch:
    GradScaler("cpu").unscale_ (check and unscale in place: 8 B), clip_grad_norm_ (4 + 8), fused
    AdamW (28): 48 B/param.
  bf16 parameters + fp32 master weights + GradScaler + clip (AdamW). genesis: norm pass over the
    bf16 gradients (2 B), the master-weight step (28 B): 30 B/param. torch has no master-weight
    optimizer; its best equivalent keeps fp32 master parameters in fused AdamW: cast the bf16
    gradients to fp32 (2+4), unscale_ (8), clip (4+8), step (28), copy into the bf16 model
    (4+2): 60 B/param.
"""

import argparse
import os

import torch

import _common as common
import genesis

MAX_NORM = 1e-3  # below the gradients' norm: every step clips


def timed(step, seconds):
    times = common.time_steps(step, warmup=3, seconds=seconds, min_steps=5, max_steps=200)
    return common.median(times)


def _tensors(n_tensors, numel, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return ([torch.randn(numel, generator=gen) for _ in range(n_tensors)],
            [torch.randn(numel, generator=gen).to(dtype) for _ in range(n_tensors)])


def clip_case(n_tensors, numel, seconds):
    values, grads = _tensors(n_tensors, numel, 0)
    params = [torch.nn.Parameter(v.clone()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    opt = genesis.optim.AdamW(params, lr=1e-3)

    def genesis_step():
        opt.clip_grad_norm_(MAX_NORM)
        opt.step()

    genesis_sec = timed(genesis_step, seconds)
    del opt, params

    tparams = [torch.nn.Parameter(v.clone()) for v in values]
    for p, g in zip(tparams, grads):
        p.grad = g.clone()
    topt = torch.optim.AdamW(tparams, lr=1e-3, fused=True)

    def torch_step():
        torch.nn.utils.clip_grad_norm_(tparams, MAX_NORM, foreach=True)
        topt.step()

    torch_sec = timed(torch_step, seconds)
    return [("torch: clip_grad_norm_ + fused AdamW", torch_sec, 40),
            ("genesis: opt.clip_grad_norm_ + step", genesis_sec, 32)]


def scaler_case(n_tensors, numel, seconds):
    # Scale 1: the same work as any power of two, and repeated in-place unscaling of the fixed
    # gradients cannot drift them into the slow denormal range.
    values, grads = _tensors(n_tensors, numel, 1)
    params = [torch.nn.Parameter(v.clone()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    opt = genesis.optim.AdamW(params, lr=1e-3)
    scaler = genesis.amp.GradScaler(init_scale=1.0, growth_interval=10**9)

    def genesis_step():
        scaler.scale(torch.ones(()))
        scaler.unscale_(opt)
        opt.clip_grad_norm_(MAX_NORM)
        scaler.step(opt)
        scaler.update()

    genesis_sec = timed(genesis_step, seconds)
    del opt, params

    tparams = [torch.nn.Parameter(v.clone()) for v in values]
    for p, g in zip(tparams, grads):
        p.grad = g.clone()
    topt = torch.optim.AdamW(tparams, lr=1e-3, fused=True)
    tscaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=10**9)

    def torch_step():
        tscaler.scale(torch.ones(()))
        tscaler.unscale_(topt)
        torch.nn.utils.clip_grad_norm_(tparams, MAX_NORM, foreach=True)
        tscaler.step(topt)
        tscaler.update()

    torch_sec = timed(torch_step, seconds)
    return [("torch: GradScaler unscale_ + clip_grad_norm_ + fused AdamW", torch_sec, 48),
            ("genesis: lazy unscale_ + opt.clip_grad_norm_ + step", genesis_sec, 32)]


def bf16_master_case(n_tensors, numel, seconds):
    values, grads = _tensors(n_tensors, numel, 2, torch.bfloat16)
    params = [torch.nn.Parameter(v.to(torch.bfloat16)) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    opt = genesis.optim.AdamW(params, lr=1e-3, master_weights=True)
    scaler = genesis.amp.GradScaler(init_scale=1.0, growth_interval=10**9)

    def genesis_step():
        scaler.scale(torch.ones(()))
        scaler.unscale_(opt)
        opt.clip_grad_norm_(MAX_NORM)
        scaler.step(opt)
        scaler.update()

    genesis_sec = timed(genesis_step, seconds)
    del opt, params

    model = [v.to(torch.bfloat16) for v in values]
    masters = [torch.nn.Parameter(v.clone()) for v in values]
    topt = torch.optim.AdamW(masters, lr=1e-3, fused=True)
    tscaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=10**9)

    def torch_step():
        for p, g in zip(masters, grads):
            p.grad = g.float()
        tscaler.scale(torch.ones(()))
        tscaler.unscale_(topt)
        torch.nn.utils.clip_grad_norm_(masters, MAX_NORM, foreach=True)
        tscaler.step(topt)
        tscaler.update()
        torch._foreach_copy_(model, masters)

    torch_sec = timed(torch_step, seconds)
    return [("torch: fp32 master fused AdamW, cast + unscale_ + clip + copy", torch_sec, 60),
            ("genesis: bf16 params, master_weights, lazy unscale_ + clip", genesis_sec, 30)]


CASES = [("clip_grad_norm_ + AdamW, fp32 parameters", clip_case),
         ("GradScaler + clip_grad_norm_ + AdamW, fp32 parameters", scaler_case),
         ("bf16 parameters + fp32 master weights + GradScaler + clip_grad_norm_, AdamW",
          bf16_master_case)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensors", type=int, default=50)
    ap.add_argument("--numel", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    genesis.set_num_threads(args.threads)
    n_params = args.tensors * args.numel
    print(f"{'#### ' if args.markdown else ''}Fused clip, {args.tensors} x {args.numel:,} = "
          f"{n_params:,} params, {args.threads} threads, CPU {common.cpu_model()}, "
          f"torch {torch.__version__}, genesis {genesis.__version__}\n")
    for title, case in CASES:
        rows = case(args.tensors, args.numel, args.seconds)
        base = rows[0][1]
        table = [[label, f"{sec * 1e3:.3f}", str(b), f"{b * n_params / sec / 1e9:.2f}",
                  f"{base / sec:.2f}x"] for label, sec, b in rows]
        print(("#### " if args.markdown else "") + title + "\n")
        print(common.format_table(["implementation", "ms/step", "B/param", "GB/s", "vs torch"],
                                  table, args.markdown))
        print()


if __name__ == "__main__":
    main()
