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

import torch

import genesis

import _common as common

MAX_NORM = 1e-3  # below the gradients' norm: every step clips


def timed(step, seconds):
    times = common.time_steps(step, warmup=3, seconds=seconds, min_steps=5, max_steps=200)
    return common.median(times)


def _tensors(n_tensors, numel, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (
        [torch.randn(numel, generator=gen) for _ in range(n_tensors)],
        [torch.randn(numel, generator=gen).to(dtype) for _ in range(n_tensors)],
    )


def with_grads(values, grads, dtype=None):
    """Parameters holding `values` (cast to `dtype`) with `grads` as their gradients (copies)."""
    params = [torch.nn.Parameter(v.to(dtype) if dtype else v.clone()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    return params


def torch_clip(params):
    return lambda max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


def scaled_clip_step(opt, clip, torch_scaler=False):
    """One iteration of the torch-style sequence: scale, unscale_, clip, step, update. Scale 1:
    the same work as any power of two, and repeated in-place unscaling of the fixed gradients
    (torch's) cannot drift them into the slow denormal range."""
    kw = dict(init_scale=1.0, growth_interval=10**9)
    scaler = torch.amp.GradScaler("cpu", **kw) if torch_scaler else genesis.amp.GradScaler(**kw)

    def step():
        scaler.scale(torch.ones(()))
        scaler.unscale_(opt)
        clip(MAX_NORM)
        scaler.step(opt)
        scaler.update()

    return step


def fused_clip_step(opt):
    """genesis' fused sequence: opt.clip_grad_norm_ then step."""

    def step():
        opt.clip_grad_norm_(MAX_NORM)
        opt.step()

    return step


def clip_case(n_tensors, numel, seconds):
    values, grads = _tensors(n_tensors, numel, 0)
    # The genesis optimizer lives only as long as its step: freed before torch's run.
    genesis_sec = timed(fused_clip_step(genesis.optim.AdamW(with_grads(values, grads), lr=1e-3)), seconds)
    tparams = with_grads(values, grads)
    topt = torch.optim.AdamW(tparams, lr=1e-3, fused=True)
    clip = torch_clip(tparams)

    def torch_step():
        clip(MAX_NORM)
        topt.step()

    torch_sec = timed(torch_step, seconds)
    return [
        ("torch: clip_grad_norm_ + fused AdamW", torch_sec, 40),
        ("genesis: opt.clip_grad_norm_ + step", genesis_sec, 32),
    ]


def scaler_case(n_tensors, numel, seconds):
    values, grads = _tensors(n_tensors, numel, 1)
    opt = genesis.optim.AdamW(with_grads(values, grads), lr=1e-3)
    genesis_sec = timed(scaled_clip_step(opt, opt.clip_grad_norm_), seconds)
    del opt
    tparams = with_grads(values, grads)
    topt = torch.optim.AdamW(tparams, lr=1e-3, fused=True)
    torch_sec = timed(scaled_clip_step(topt, torch_clip(tparams), torch_scaler=True), seconds)
    return [
        ("torch: GradScaler unscale_ + clip_grad_norm_ + fused AdamW", torch_sec, 48),
        ("genesis: lazy unscale_ + opt.clip_grad_norm_ + step", genesis_sec, 32),
    ]


def bf16_master_case(n_tensors, numel, seconds):
    values, grads = _tensors(n_tensors, numel, 2, torch.bfloat16)
    opt = genesis.optim.AdamW(with_grads(values, grads, torch.bfloat16), lr=1e-3, master_weights=True)
    genesis_sec = timed(scaled_clip_step(opt, opt.clip_grad_norm_), seconds)
    del opt
    model = [v.to(torch.bfloat16) for v in values]
    masters = [torch.nn.Parameter(v.clone()) for v in values]
    topt = torch.optim.AdamW(masters, lr=1e-3, fused=True)
    step = scaled_clip_step(topt, torch_clip(masters), torch_scaler=True)

    def torch_step():
        for p, g in zip(masters, grads):
            p.grad = g.float()
        step()
        torch._foreach_copy_(model, masters)

    torch_sec = timed(torch_step, seconds)
    return [
        ("torch: fp32 master fused AdamW, cast + unscale_ + clip + copy", torch_sec, 60),
        ("genesis: bf16 params, master_weights, lazy unscale_ + clip", genesis_sec, 30),
    ]


CASES = [
    ("clip_grad_norm_ + AdamW, fp32 parameters", clip_case),
    ("GradScaler + clip_grad_norm_ + AdamW, fp32 parameters", scaler_case),
    ("bf16 parameters + fp32 master weights + GradScaler + clip_grad_norm_, AdamW", bf16_master_case),
]


def main():
    common.run_ratio_benchmark(__doc__.split("\n")[0], "Fused clip", CASES)


if __name__ == "__main__":
    main()
