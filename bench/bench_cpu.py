"""CPU benchmark: genesis vs torch.optim (for-loop, foreach, fused) and clip_grad_norm_.

What is measured (docs/performance.md, the performance contract):
  * ms/step: median of N timed steps after warm-up (time.perf_counter around each step);
  * achieved GB/s = (bytes each update must move per parameter) x (parameters) / time;
  * % of the machine's read-modify-write (RMW) memory bandwidth, measured in the same run;
  * speed ratio to torch's fused implementation (or foreach where torch has no fused one);
    "2.00x" means twice as fast as that baseline.

Workloads (float32; sizes shrink ~100x with --quick):
  large   ~50M parameters in 50 tensors   - memory-bandwidth bound
  medium  2000 tensors x 1000 elements    - many tensors, mostly in cache
  small   2000 tensors x 10 elements      - pure per-tensor overhead

Every implementation runs with the same thread count (torch.set_num_threads and
genesis.set_num_threads). Before anything is timed, genesis is checked against torch's
for-loop reference from identical inputs, so a fast but wrong kernel fails loudly instead of
being timed.

Usage:
  python bench/bench_cpu.py                 # full run (a few minutes; use a quiet machine)
  python bench/bench_cpu.py --quick         # smoke run, < 30 s, numbers not meaningful
  python bench/bench_cpu.py --markdown      # tables as Markdown, for bench/RESULTS.md
  python bench/bench_cpu.py --json out.json # also write the results as JSON (bench/plot.py)
  python bench/bench_cpu.py --threads 8 --workloads large --ops AdamW clip_grad_norm_
"""

import argparse
import datetime
import gc
import json
import os
import sys

import torch

import genesis

try:  # run as a script (python bench/bench_cpu.py) or as a module (python -m bench.bench_cpu)
    import _common as common
except ImportError:
    from bench import _common as common


# -------------------------------------------------------------------------- configuration
# (name, number of tensors, elements per tensor), full size and --quick size.
WORKLOADS = {
    "large": ((50, 1_000_000), (50, 10_000)),
    "medium": ((2000, 1000), (200, 100)),
    "small": ((2000, 10), (200, 10)),
}

# The optimizers benchmarked. Bytes per parameter count only the streams a perfect fused update
# must move in steady state (fp32, 4 bytes each); the achieved GB/s uses these numbers, so an
# implementation that moves more (e.g. torch foreach writing temporaries) shows lower GB/s.
OPTIMIZERS = {
    "AdamW": dict(
        torch_cls=torch.optim.AdamW,
        genesis_cls=genesis.optim.AdamW,
        kwargs=dict(lr=1e-3, weight_decay=1e-2),
        bytes=28,
        streams="read p,g,m,v; write p,m,v",
    ),
    "SGD": dict(
        torch_cls=torch.optim.SGD,
        genesis_cls=genesis.optim.SGD,
        kwargs=dict(lr=1e-3, momentum=0.9),
        bytes=20,
        streams="read p,g,buf; write p,buf",
    ),
    "RMSprop": dict(
        torch_cls=torch.optim.RMSprop,
        genesis_cls=genesis.optim.RMSprop,
        kwargs=dict(lr=1e-3),
        bytes=20,
        streams="read p,g,v; write p,v",
    ),
    "Adagrad": dict(
        torch_cls=torch.optim.Adagrad,
        genesis_cls=genesis.optim.Adagrad,
        kwargs=dict(lr=1e-2, weight_decay=1e-2),
        bytes=20,
        streams="read p,g,sum; write p,sum",
    ),
    "Adadelta": dict(
        torch_cls=torch.optim.Adadelta,
        genesis_cls=genesis.optim.Adadelta,
        kwargs=dict(lr=1.0, weight_decay=1e-2),
        bytes=28,
        streams="read p,g,v,u; write p,v,u",
    ),
    "Adamax": dict(
        torch_cls=torch.optim.Adamax,
        genesis_cls=genesis.optim.Adamax,
        kwargs=dict(lr=2e-3, weight_decay=1e-2),
        bytes=28,
        streams="read p,g,m,u; write p,m,u",
    ),
    "NAdam": dict(
        torch_cls=torch.optim.NAdam,
        genesis_cls=genesis.optim.NAdam,
        kwargs=dict(lr=2e-3, weight_decay=1e-2, decoupled_weight_decay=True),
        bytes=28,
        streams="read p,g,m,v; write p,m,v",
    ),
    "RAdam": dict(
        torch_cls=torch.optim.RAdam,
        genesis_cls=genesis.optim.RAdam,
        kwargs=dict(lr=1e-3, weight_decay=1e-2),
        bytes=28,
        streams="read p,g,m,v; write p,m,v",
    ),
    "ASGD": dict(
        torch_cls=torch.optim.ASGD,
        genesis_cls=genesis.optim.ASGD,
        kwargs=dict(lr=1e-2, t0=2.0),
        bytes=20,
        streams="read p,g,ax; write p,ax",
    ),
    "Rprop": dict(
        torch_cls=torch.optim.Rprop,
        genesis_cls=genesis.optim.Rprop,
        kwargs=dict(lr=1e-2),
        bytes=28,
        streams="read p,g,prev,step_size; write p,prev,step_size",
    ),
    # torch has no Lion: the baselines are the paper's Algorithm 2 in torch ops (TorchLion).
    "Lion": dict(
        torch_cls=None,
        genesis_cls=genesis.optim.Lion,
        kwargs=dict(lr=1e-4, weight_decay=1e-2),
        bytes=20,
        streams="read p,g,m; write p,m",
    ),
    # Reduction rules: the bytes are those of their fewest passes (docs/performance.md#passes-
    # over-memory). torch has no LAMB: the baselines are apex's formula in torch ops (TorchLAMB).
    "LAMB": dict(
        torch_cls=None,
        genesis_cls=genesis.optim.LAMB,
        kwargs=dict(lr=1e-3, weight_decay=1e-2),
        bytes=40,
        streams="pass 1: read p,g,m,v; write m,v. pass 2: read p,m,v; write p",
    ),
    # Matrices (1000 x 1000, 25 x 40): the factored second moment is what Adafactor is for.
    "Adafactor": dict(
        torch_cls=torch.optim.Adafactor,
        genesis_cls=genesis.optim.Adafactor,
        kwargs=dict(lr=1e-2, weight_decay=1e-2),
        matrix=True,
        # A 1000 x 1000 step moves elements by up to ~0.1 (u = g / sqrt(v) is large where v
        # is small); torch sums its norms in float32, genesis in float64: after 3 steps both
        # are ~1e-6 from a float64 run (measured: torch 1.4e-6, genesis 1.0e-6), so 1e-6 is
        # too tight an absolute tolerance at this size.
        check_atol=1e-5,
        bytes=24,
        streams="pass 1: read g; pass 2: read p,g; pass 3: read p,g; write p",
    ),
}


class TorchLion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, Algorithm 2) written with torch ops, for-loop or foreach: the
    baseline genesis' Lion is timed and checked against (torch.optim has no Lion)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, foreach=False):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            ms = [self.state[p].setdefault("exp_avg", torch.zeros_like(p)) for p in ps]
            if group["foreach"]:
                c = torch._foreach_mul(ms, b1)
                torch._foreach_add_(c, gs, alpha=1 - b1)
                torch._foreach_mul_(ps, 1 - lr * wd)
                torch._foreach_add_(ps, torch._foreach_sign(c), alpha=-lr)
                torch._foreach_mul_(ms, b2)
                torch._foreach_add_(ms, gs, alpha=1 - b2)
            else:
                for p, g, m in zip(ps, gs, ms):
                    c = m * b1 + g * (1 - b1)
                    p.mul_(1 - lr * wd).add_(c.sign(), alpha=-lr)
                    m.mul_(b2).add_(g, alpha=1 - b2)


OPTIMIZERS["Lion"]["torch_cls"] = TorchLion


class TorchLAMB(torch.optim.Optimizer):
    """LAMB as apex's FusedLAMB computes it (adam_w_mode, bias correction, trust ratio
    ||p|| / ||u|| where weight_decay != 0), written with torch ops, for-loop or foreach: the
    baseline genesis' LAMB is timed and checked against (torch.optim has no LAMB)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, foreach=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            for p in ps:
                st = self.state[p]
                if not st:
                    st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
            t = self.state[ps[0]]["step"] if ps else 0
            ms = [self.state[p]["exp_avg"] for p in ps]
            vs = [self.state[p]["exp_avg_sq"] for p in ps]
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            if group["foreach"]:
                torch._foreach_mul_(ms, b1)
                torch._foreach_add_(ms, gs, alpha=1 - b1)
                torch._foreach_mul_(vs, b2)
                torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
                denom = torch._foreach_div(vs, bc2)
                torch._foreach_sqrt_(denom)
                torch._foreach_add_(denom, eps)
                us = torch._foreach_div(ms, bc1)
                torch._foreach_div_(us, denom)
                torch._foreach_add_(us, ps, alpha=wd)
                pn, un = torch._foreach_norm(ps), torch._foreach_norm(us)
                ratios = [-lr * float(a / b) if a > 0 and b > 0 else -lr for a, b in zip(pn, un)]
                torch._foreach_mul_(us, ratios)
                torch._foreach_add_(ps, us)
            else:
                for p, g, m, v in zip(ps, gs, ms, vs):
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    u = (m / bc1).div_((v / bc2).sqrt_().add_(eps)).add_(p, alpha=wd)
                    a, b = p.norm(), u.norm()
                    ratio = float(a / b) if a > 0 and b > 0 else 1.0
                    p.add_(u, alpha=-lr * ratio)


OPTIMIZERS["LAMB"]["torch_cls"] = TorchLAMB

# clip_grad_norm_ reads every gradient once for the norm, then reads and writes it to scale:
# 12 bytes per parameter. If the norm is already under max_norm genesis skips the scale (4 bytes
# per parameter), while torch always multiplies; a tiny max_norm makes both do the full work.
CLIP_MAX_NORM = 1e-3
CLIP_BYTES = 12
CLIP_STREAMS = "read g (norm), read+write g (scale)"

# Muon orthogonalizes matrices (bfloat16 matrix products, the same torch calls in both): its
# own workload of transformer-like 2-D weights, timed once, against torch.optim.Muon (which
# has a for-loop implementation only). (rows, cols, count), full size and --quick size.
MUON_MATRICES = ([(256, 256, 8), (256, 1024, 4), (1024, 256, 4)], [(32, 32, 4), (32, 64, 2), (64, 32, 2)])
MUON_KWARGS = dict(lr=0.02)

ALL_OPS = list(OPTIMIZERS) + ["clip_grad_norm_", "Muon"]

# Correctness check before timing.
CHECK_STEPS = 3
RTOL, ATOL = 1e-5, 1e-6


# ---------------------------------------------------------------------------- test data
def make_data(n_tensors, numel, seed=0):
    """Master copies of parameters and gradients (random normal, float32). Every
    implementation starts from clones of these, so all of them do identical work."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(numel, generator=gen) for _ in range(n_tensors)]
    grads = [torch.randn(numel, generator=gen) for _ in range(n_tensors)]
    return params, grads


def matrix_shape(numel):
    """The squarest (rows, cols) with rows * cols = numel (1,000,000: 1000 x 1000)."""
    rows = int(numel**0.5)
    while numel % rows:
        rows -= 1
    return rows, numel // rows


def fresh_params(master_params, master_grads):
    """New nn.Parameters cloned from the masters, with cloned gradients attached. Gradients are
    set once and stay fixed across steps (optimizers never modify them)."""
    params = []
    for p, g in zip(master_params, master_grads):
        q = torch.nn.Parameter(p.clone())
        q.grad = g.clone()
        params.append(q)
    return params


def torch_has_fused(cls, device="cpu"):
    """Whether this torch build has a fused implementation of ``cls`` on ``device`` (on the CPU:
    SGD, Adam, AdamW since torch 2.4; RMSprop has none)."""
    if cls in (TorchLion, TorchLAMB):
        return False
    try:
        p = torch.nn.Parameter(torch.zeros(4, device=device))
        p.grad = torch.ones_like(p)
        cls([p], lr=1e-3, fused=True).step()
        return True
    except (TypeError, RuntimeError, ValueError):
        return False


# --------------------------------------------------------------------------- implementations
def optimizer_impls(spec):
    """[(label, factory)]: factory(params) returns the function to time (one step)."""
    tcls, gcls, kw = spec["torch_cls"], spec["genesis_cls"], spec["kwargs"]
    impls = [
        ("torch for-loop", lambda ps: tcls(ps, foreach=False, **kw).step),
        ("torch foreach", lambda ps: tcls(ps, foreach=True, **kw).step),
    ]
    if torch_has_fused(tcls):
        impls.append(("torch fused", lambda ps: tcls(ps, fused=True, **kw).step))
    impls.append(("genesis", lambda ps: gcls(ps, **kw).step))
    return impls


def clip_impls():
    clip = torch.nn.utils.clip_grad_norm_
    gclip = genesis.nn.utils.clip_grad_norm_
    return [
        ("torch for-loop", lambda ps: lambda: clip(ps, CLIP_MAX_NORM, foreach=False)),
        ("torch foreach", lambda ps: lambda: clip(ps, CLIP_MAX_NORM, foreach=True)),
        ("genesis", lambda ps: lambda: gclip(ps, CLIP_MAX_NORM)),
    ]


# ---------------------------------------------------------------------------- correctness
def max_abs_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def assert_close(what, got, want, atol=ATOL, rtol=RTOL):
    for i, (x, y) in enumerate(zip(got, want)):
        if not torch.allclose(x, y, rtol=rtol, atol=atol):
            diff = float((x - y).abs().max())
            raise AssertionError(
                f"{what}: genesis differs from torch in tensor {i} "
                f"(max abs diff {diff:.3g}, rtol {rtol}, atol {atol}); "
                "refusing to benchmark a wrong kernel"
            )


def _buffers(opt, params):
    """Each parameter's state tensors (moments, momentum buffer), without the step count."""
    return [{k: v.detach().clone() for k, v in opt.state[p].items() if k != "step"} for p in params]


def check_optimizer(op, spec, master_params, master_grads):
    """A few steps of torch (for-loop reference) and genesis from identical inputs; parameters
    and state buffers must agree. The buffers matter: a wrong moment barely moves the
    parameters in 3 steps but would be caught there. Done one after the other so only one
    optimizer's state is alive at a time (the large workload is 200 MB per tensor stream)."""
    kw = spec["kwargs"]
    ref = fresh_params(master_params, master_grads)
    opt = spec["torch_cls"](ref, foreach=False, **kw)
    for _ in range(CHECK_STEPS):
        opt.step()
    want, want_state = [p.detach() for p in ref], _buffers(opt, ref)
    del opt, ref
    got = fresh_params(master_params, master_grads)
    opt = spec["genesis_cls"](got, **kw)
    for _ in range(CHECK_STEPS):
        opt.step()
    got, got_state = [p.detach() for p in got], _buffers(opt, got)
    del opt
    assert_close(op, got, want, atol=spec.get("check_atol", ATOL))
    for name in want_state[0]:
        if name not in got_state[0]:
            raise AssertionError(f"{op}: genesis has no state {name!r} (torch has)")
        # State values are not O(1) like the parameters (v ~ 1e-3 g^2): relative comparison,
        # with an absolute floor scaled to the state's magnitude (Adagrad's sum of (g + wd*p)^2
        # can cancel to ~1e-9, where torch's fused multiply-add rounds differently).
        want_buf = [s[name] for s in want_state]
        scale = max(float(w.abs().max()) for w in want_buf if w.numel())
        assert_close(f"{op} state {name!r}", [s[name] for s in got_state], want_buf, atol=1e-6 * scale)
    return max_abs_diff(got, want)


def check_clip(master_params, master_grads):
    """torch and genesis clip_grad_norm_ from identical gradients: same norm, same gradients,
    and the norm exceeds max_norm so the scale (the 8 of the 12 bytes) really happens."""
    ref = fresh_params(master_params, master_grads)
    want_norm = torch.nn.utils.clip_grad_norm_(ref, CLIP_MAX_NORM, foreach=False)
    want = [p.grad for p in ref]
    got_params = fresh_params(master_params, master_grads)
    got_norm = genesis.nn.utils.clip_grad_norm_(got_params, CLIP_MAX_NORM)
    got = [p.grad for p in got_params]
    if not float(want_norm) > CLIP_MAX_NORM:
        raise AssertionError("clip benchmark would not scale: raise the gradients or lower CLIP_MAX_NORM")
    if not torch.allclose(
        torch.as_tensor(got_norm, dtype=torch.float64),
        torch.as_tensor(want_norm, dtype=torch.float64),
        rtol=1e-4,
        atol=0,
    ):
        raise AssertionError(
            f"clip_grad_norm_: genesis norm {float(got_norm)!r} != torch "
            f"{float(want_norm)!r}; refusing to benchmark a wrong kernel"
        )
    # Clipped gradients are tiny (norm 1e-3 in total), so an absolute tolerance would accept
    # anything: compare relatively only. torch accumulates the norm of 50M float32 values in
    # float32 and genesis in float64; the two norms (hence the scales) differ by up to ~2e-5
    # relative, so the gradients are compared at 1e-4.
    assert_close("clip_grad_norm_", got, want, atol=0.0, rtol=1e-4)
    return max_abs_diff(got, want)


# -------------------------------------------------------------------------------- running
def run_impl(factory, master_params, master_grads, timing, restore_grads=False):
    """Time one implementation on fresh clones; returns the median seconds per step and the
    number of timed steps. Everything it allocated is freed before returning so that the next
    implementation starts from the same memory state."""
    params = fresh_params(master_params, master_grads)
    step = factory(params)
    before_each = None
    if restore_grads:
        # clip_grad_norm_ scales the gradients in place; after one call the norm is at
        # max_norm and later calls would skip the scale (genesis) or multiply by 1 (torch).
        # Restoring the original gradients (untimed) before each call makes every timed call
        # do the same full work, like the fixed gradients of the optimizer benchmarks.
        grads = [p.grad for p in params]
        before_each = lambda: torch._foreach_copy_(grads, master_grads)  # noqa: E731
    times = common.time_steps(step, before_each=before_each, **timing)
    del step, params, before_each
    gc.collect()
    return common.median(times), len(times)


def bench_workload(name, n_tensors, numel, ops, timing, rmw_gbs, markdown, probe=None):
    """Print one table per op; return the measurements as records (dicts) for --json.

    Each op's shares of the read-modify-write bandwidth are taken against the larger of the
    run's first probe (``rmw_gbs``) and a probe right after the op's rows (``probe()``, if given): on a
    machine shared with other jobs the bandwidth a step can get moves during a run, and a
    single probe at the start let a row exceed 100 % when the machine grew quieter."""
    n_params = n_tensors * numel
    records = []
    master_params, master_grads = make_data(n_tensors, numel)
    for op in ops:
        if op == "clip_grad_norm_":
            impls, nbytes, streams = clip_impls(), CLIP_BYTES, CLIP_STREAMS
            diff = check_clip(master_params, master_grads)
        else:
            spec = OPTIMIZERS[op]
            impls, nbytes, streams = optimizer_impls(spec), spec["bytes"], spec["streams"]
        params, grads = master_params, master_grads
        if op != "clip_grad_norm_" and spec.get("matrix"):
            shape = matrix_shape(numel)
            params, grads = [p.view(shape) for p in params], [g.view(shape) for g in grads]
            streams += f" ({shape[0]} x {shape[1]} matrices)"
        if op != "clip_grad_norm_":
            diff = check_optimizer(op, spec, params, grads)

        results = []
        for label, factory in impls:
            sec, steps = run_impl(factory, params, grads, timing, restore_grads=(op == "clip_grad_norm_"))
            results.append((label, sec, steps))
        ref_gbs = max(rmw_gbs, probe()) if probe else rmw_gbs

        labels = [r[0] for r in results]
        baseline = "torch fused" if "torch fused" in labels else "torch foreach"
        base_sec = results[labels.index(baseline)][1]
        rows = []
        for label, sec, steps in results:
            gbs = nbytes * n_params / sec / 1e9
            records.append(
                dict(
                    op=op,
                    workload=name,
                    n_tensors=n_tensors,
                    numel=numel,
                    impl=label,
                    ms_per_step=sec * 1e3,
                    gbs=gbs,
                    bandwidth_fraction=gbs / ref_gbs,
                    rmw_gbs=ref_gbs,
                    speedup=base_sec / sec,
                    baseline=baseline,
                    steps=steps,
                    bytes_per_param=nbytes,
                )
            )
            rows.append(
                [
                    label,
                    f"{sec * 1e3:.3f}",
                    f"{gbs:.2f}",
                    f"{100 * gbs / ref_gbs:.1f}%",
                    f"{base_sec / sec:.2f}x",
                    str(steps),
                ]
            )
        headers = ["implementation", "ms/step", "GB/s", "% of RMW BW", f"vs {baseline}", "steps"]

        title = f"{op} - {name}: {n_tensors} tensors x {numel:,} = {n_params:,} params"
        checked = "1 call" if op == "clip_grad_norm_" else f"{CHECK_STEPS} steps"
        details = (
            f"{nbytes} B/param ({streams}); checked against torch for-loop after {checked}: max abs diff {diff:.2g}; "
            f"RMW bandwidth for these rows {ref_gbs:.2f} GB/s"
        )
        if markdown:
            print(f"\n#### {title}\n\n{details}\n")
        else:
            print(f"\n{title}\n  {details}")
        print(common.format_table(headers, rows, markdown))
        sys.stdout.flush()
    del master_params, master_grads
    gc.collect()
    return records


def bench_muon(quick, timing, markdown):
    """genesis.optim.Muon vs torch.optim.Muon on 2-D weights: checked first (the parameters
    after CHECK_STEPS steps agree), then timed with the same threads. Returns records."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(r, c) for r, c, n in MUON_MATRICES[1 if quick else 0] for _ in range(n)]
    master_params = [torch.randn(s, generator=gen) for s in shapes]
    master_grads = [torch.randn(s, generator=gen) for s in shapes]
    impls = [
        ("torch for-loop", lambda ps: torch.optim.Muon(ps, **MUON_KWARGS).step),
        ("genesis", lambda ps: genesis.optim.Muon(ps, **MUON_KWARGS).step),
    ]
    finals = []
    for _, factory in impls:
        ps = fresh_params(master_params, master_grads)
        step = factory(ps)
        for _ in range(CHECK_STEPS):
            step()
        finals.append([p.detach() for p in ps])
    assert_close("Muon", finals[1], finals[0])
    diff = max_abs_diff(finals[1], finals[0])
    results = [(label,) + run_impl(factory, master_params, master_grads, timing) for label, factory in impls]
    base_sec = results[0][1]
    n_params = sum(r * c for r, c in shapes)
    records, rows = [], []
    for label, sec, steps in results:
        records.append(
            dict(
                op="Muon",
                workload="matrices",
                n_tensors=len(shapes),
                numel=n_params // len(shapes),
                impl=label,
                ms_per_step=sec * 1e3,
                speedup=base_sec / sec,
                baseline="torch for-loop",
                steps=steps,
            )
        )
        rows.append([label, f"{sec * 1e3:.3f}", f"{base_sec / sec:.2f}x", str(steps)])
    title = (
        f"Muon - {len(shapes)} matrices ("
        + ", ".join(f"{n}x {r}x{c}" for r, c, n in MUON_MATRICES[1 if quick else 0])
        + f") = {n_params:,} params"
    )
    details = (
        f"bfloat16 Newton-Schulz (5 steps) in torch's kernels for both; genesis fuses the "
        f"momentum and update stages; checked against torch after {CHECK_STEPS} steps: "
        f"max abs diff {diff:.2g}"
    )
    print(f"\n#### {title}\n\n{details}\n" if markdown else f"\n{title}\n  {details}")
    print(common.format_table(["implementation", "ms/step", "vs torch for-loop", "steps"], rows, markdown))
    sys.stdout.flush()
    return records


# ----------------------------------------------------------------------------------- main
def genesis_scale(x):
    """genesis' in-place multiply over one tensor (the scale step of its clip_grad_norm_),
    for the RMW probe; None if the private core entry point is not there."""
    try:
        # genesis registers torch's tensor type with its core lazily, on the first torch tensor
        # it sees through the public API; do that here, since BufferList is called directly.
        genesis._interop.is_torch(x)
        buffers = genesis._C.BufferList([x])
    except (AttributeError, TypeError):
        return None
    return lambda: buffers.scale(1.0000001)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads for torch and genesis (default: os.cpu_count())"
    )
    ap.add_argument(
        "--quick", action="store_true", help="~100x smaller sizes and fewer repetitions: a smoke run, not a measurement"
    )
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    ap.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument("--ops", nargs="+", choices=ALL_OPS, default=ALL_OPS)
    ap.add_argument(
        "--seconds", type=float, default=None, help="timed seconds per implementation (default 2, quick 0.05)"
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5, quick 2)")
    ap.add_argument("--min-steps", type=int, default=None, help="minimum timed steps (default 10, quick 3)")
    ap.add_argument("--max-steps", type=int, default=None, help="maximum timed steps (default 1000, quick 50)")
    return ap.parse_args()


def main():
    args = parse_args()
    quick = args.quick
    timing = dict(
        warmup=args.warmup if args.warmup is not None else (2 if quick else 5),
        seconds=args.seconds if args.seconds is not None else (0.05 if quick else 2.0),
        min_steps=args.min_steps if args.min_steps is not None else (3 if quick else 10),
        max_steps=args.max_steps if args.max_steps is not None else (50 if quick else 1000),
    )

    torch.set_num_threads(args.threads)
    genesis.set_num_threads(args.threads)

    # RMW probe array: at least 4x the last-level cache and at least 256 MiB, so it measures DRAM.
    llc = common.last_level_cache_bytes()
    rmw_bytes = max(256 << 20, 4 * (llc or 0))
    if quick:
        rmw_bytes //= 100
    rmw = common.rmw_bandwidth(torch, rmw_bytes, reps=3 if quick else 10, genesis_scale=genesis_scale)
    # The reference is the best any simple in-place kernel achieved: an honest upper bound on
    # what an optimizer step, itself a read-modify-write stream, can reach.
    rmw_name, rmw_gbs = max(rmw.items(), key=lambda kv: kv[1])

    def probe():  # the same kernels again, fewer repetitions: after each op's rows
        return max(common.rmw_bandwidth(torch, rmw_bytes, reps=3, genesis_scale=genesis_scale).values())

    info = [
        ("date", datetime.datetime.now().isoformat(timespec="seconds")),
        ("CPU", common.cpu_model()),
        ("logical CPUs / physical cores", f"{os.cpu_count()} / {common.physical_cores() or '?'}"),
        ("last-level cache", common.fmt_bytes(llc)),
        ("memory", common.fmt_bytes(common.total_memory_bytes())),
        (
            "threads (torch and genesis)",
            f"{args.threads} (torch reports {torch.get_num_threads()}, genesis {genesis.get_num_threads()})",
        ),
        ("python / torch / genesis", f"{sys.version.split()[0]} / {torch.__version__} / {genesis.__version__}"),
        (
            "timing",
            f"median of timed steps (~{timing['seconds']} s per implementation, "
            f"{timing['min_steps']}-{timing['max_steps']} steps) after "
            f"{timing['warmup']} warm-up steps",
        ),
        (
            "RMW bandwidth probe",
            f"{common.fmt_bytes(rmw_bytes)} float32 array, best of reps: "
            + ", ".join(f"{k} {v:.2f} GB/s" for k, v in rmw.items()),
        ),
        (
            "RMW bandwidth (reference)",
            f"{rmw_gbs:.2f} GB/s ({rmw_name}); each op's rows against the larger of this and a probe after them",
        ),
    ]
    if quick:
        info.append(("NOTE", "--quick: tiny sizes, data in cache; numbers are not meaningful"))

    if args.markdown:
        print("### genesis CPU benchmark\n")
        for k, v in info:
            print(f"- **{k}**: {v}")
    else:
        print("genesis CPU benchmark")
        width = max(len(k) for k, _ in info)
        for k, v in info:
            print(f"  {k.ljust(width)}  {v}")
    sys.stdout.flush()

    records = []
    elementwise = [op for op in args.ops if op != "Muon"]
    for name in args.workloads:
        full, small = WORKLOADS[name]
        n_tensors, numel = small if quick else full
        records += bench_workload(name, n_tensors, numel, elementwise, timing, rmw_gbs, args.markdown, probe)
    if "Muon" in args.ops:
        records += bench_muon(quick, timing, args.markdown)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(benchmark="bench_cpu", machine=dict(info), rmw_gbs=rmw_gbs, results=records), f, indent=1)


if __name__ == "__main__":
    main()
