"""Mixed-precision benchmark: bf16 parameters with fp32 master weights, and GradScaler's
unscale fused into the update, each against torch's way of doing the same in the same run.

Workload: ~50M parameters in 50 tensors (or --numel/--tensors), median of timed steps, same
thread count for torch and genesis. Prints ms/step, GB/s with the bytes per parameter stated,
and the speed ratio to torch's pipeline.

  bf16 + master weights (AdamW). genesis: bf16 param, fp32 master/m/v in state; reads master,
    g(bf16), m, v and writes master, p(bf16), m, v: 4+2+4+4 + 4+2+4+4 = 28 B/param. torch has
    no master-weight optimizer: its pipeline is fused AdamW on the fp32 master (with the bf16
    grad cast to fp32 first) plus a copy into the bf16 model weights: 2+4 (cast) + 28 (step) +
    4+2 (copy) = 40 B/param.
  GradScaler + AdamW (fp32). genesis: one read-only inf/NaN pass over the grads (4 B), then the
    update with the 1/scale multiply fused in (28 B): 32 B/param. torch:
    _amp_foreach_non_finite_check_and_unscale_ (read+write g: 8 B) then fused AdamW (28 B):
    36 B/param.
"""

import torch

import genesis

import _common as common


def timed(step, seconds):
    times = common.time_steps(step, warmup=3, seconds=seconds, min_steps=5, max_steps=200)
    return common.median(times)


def master_weights_case(n_tensors, numel, seconds):
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(numel, generator=gen) for _ in range(n_tensors)]
    grads = [torch.randn(numel, generator=gen).to(torch.bfloat16) for _ in range(n_tensors)]

    params = [torch.nn.Parameter(v.to(torch.bfloat16)) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    opt = genesis.optim.AdamW(params, lr=1e-3, master_weights=True)
    genesis_sec = timed(opt.step, seconds)
    del opt, params

    masters = [v.clone() for v in values]
    model = [v.to(torch.bfloat16) for v in values]
    master_params = [torch.nn.Parameter(m) for m in masters]
    topt = torch.optim.AdamW(master_params, lr=1e-3, fused=True)

    def torch_step():
        for p, g in zip(master_params, grads):
            p.grad = g.float()
        topt.step()
        torch._foreach_copy_(model, master_params)

    torch_sec = timed(torch_step, seconds)
    return [
        ("torch: fp32 fused AdamW + copy to bf16", torch_sec, 40),
        ("genesis: bf16 params, master_weights=True", genesis_sec, 28),
    ]


def genesis_scaler_step(values, grads, scale):
    """One genesis GradScaler.step + update over fresh parameters holding ``grads``."""
    params = [torch.nn.Parameter(v.clone()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    opt = genesis.optim.AdamW(params, lr=1e-3)
    scaler = genesis.amp.GradScaler(init_scale=scale, growth_interval=10**9)
    scaler.scale(torch.ones(()))  # starts the scaler, as scaling the loss does

    def step():
        scaler.step(opt)
        scaler.update()

    return step


def grad_scaler_case(n_tensors, numel, seconds):
    gen = torch.Generator().manual_seed(1)
    values = [torch.randn(numel, generator=gen) for _ in range(n_tensors)]
    # Scale 1: the same work as any power of two, and repeated in-place unscaling of the fixed
    # gradients cannot drift them into the slow denormal range.
    scale = 1.0
    grads = [torch.randn(numel, generator=gen) for _ in range(n_tensors)]

    # The genesis optimizer lives only as long as its step: freed before torch's run.
    genesis_sec = timed(genesis_scaler_step(values, grads, scale), seconds)

    tparams = [torch.nn.Parameter(v.clone()) for v in values]
    tgrads = [g.clone() for g in grads]
    topt = torch.optim.AdamW(tparams, lr=1e-3, fused=True)
    found_inf = torch.zeros(1)
    inv_scale = torch.full((1,), 1.0 / scale)

    for p, g in zip(tparams, tgrads):
        p.grad = g

    def torch_step():
        torch._amp_foreach_non_finite_check_and_unscale_(tgrads, found_inf, inv_scale)
        if not found_inf.item():
            topt.step()

    torch_sec = timed(torch_step, seconds)
    return [
        ("torch: check_and_unscale_ + fused AdamW", torch_sec, 36),
        ("genesis: GradScaler.step (check + fused unscale)", genesis_sec, 32),
    ]


def main():
    common.run_ratio_benchmark(
        __doc__.split("\n")[0],
        "Mixed precision",
        [
            ("bf16 parameters + fp32 master weights, AdamW", master_weights_case),
            ("GradScaler + AdamW, fp32 parameters", grad_scaler_case),
        ],
    )


if __name__ == "__main__":
    main()
