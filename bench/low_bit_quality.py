"""Training quality with 8-bit optimizer state (docs/low-bit-state.md): two small real tasks
trained a few hundred steps with float32 and with 8-bit state, for AdamW and Lion, and the map
comparison (the float-like map genesis uses against a linear absmax map, with and without
stochastic rounding of the codes, simulated from the same formulas).

    python bench/low_bit_quality.py --json bench/results/low_bit_quality.json [--plot docs/_static/low_bit_loss.png]

tests/test_low_bit_state.py runs `final_losses` for its 2 % check (about 15 s on one core).
"""

import argparse
import json
import pathlib

import numpy as np
import torch

import genesis

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
TASKS = ("mlp", "chars")
RULES = {"AdamW": dict(lr=3e-3, weight_decay=0.01), "Lion": dict(lr=3e-4, weight_decay=0.1)}


# ----------------------------------------------------------------------------------- tasks
def mlp_task(seed=0):
    """A 3-layer MLP classifying inputs labelled by a random two-layer teacher network (the
    examples' teacher task, made non-linear and larger so that every weight matrix has 8-bit
    state): 32 -> 256 -> 256 -> 8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 32, generator=g)
    hidden = torch.tanh(x @ torch.randn(32, 64, generator=g))
    y = (hidden @ torch.randn(64, 8, generator=g)).argmax(dim=1)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 256), torch.nn.GELU(), torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 8)
    )
    return model, x, y


def char_task(seed=0, context=16):
    """A character-level next-character model on the text of docs/*.md: 16 characters of
    context, embedded (vocabulary x 24), through an MLP (384 -> 256 -> vocabulary)."""
    text = "".join(p.read_text() for p in sorted(DOCS.glob("*.md")))[:60000]
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    windows = ids.unfold(0, context + 1, 1)
    x, y = windows[:, :-1], windows[:, -1]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Embedding(len(vocab), 24),
        torch.nn.Flatten(),
        torch.nn.Linear(24 * context, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, len(vocab)),
    )
    return model, x, y


def train(task, make_opt, steps=300, batch=128, seed=0):
    """Per-step minibatch losses and the final loss over the whole data set."""
    model, x, y = {"mlp": mlp_task, "chars": char_task}[task](seed)
    opt = make_opt(model.parameters())
    g = torch.Generator().manual_seed(seed + 1)
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = loss_fn(model(x), y).item()
    return losses, final


def final_losses(tasks=TASKS, rules=RULES, steps=300):
    """{(task, rule, state): (per-step losses, final full-data loss)} for float32 and int8 state."""
    out = {}
    for task in tasks:
        for rule in rules:
            cls = getattr(genesis.optim, rule)
            for state in ("float32", "int8"):
                out[task, rule, state] = train(
                    task,
                    lambda ps, cls=cls, state=state, rule=rule: cls(ps, state_dtype=state, **rules[rule]),
                    steps=steps,
                )
    return out


# ------------------------------------------------------------------ map comparison (simulated)
def _linear_quant(v, unsigned, stochastic, gen):
    """Linear absmax map: 255 (signed) or 256 (unsigned) evenly spaced levels per block."""
    blocks = torch.nn.functional.pad(v.reshape(-1), (0, -v.numel() % 256)).reshape(-1, 256)
    absmax = blocks.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
    levels = 255.0 if unsigned else 127.0
    x = blocks / absmax * levels
    x = torch.floor(x + torch.rand(x.shape, generator=gen)) if stochastic else torch.round(x)
    return (x / levels * absmax).reshape(-1)[: v.numel()].reshape(v.shape)


def _float_quant(v, unsigned, stochastic, gen):
    """genesis's map (through the core's quantize/dequantize); stochastic: round to one of the
    two neighbouring codes with probability by distance."""
    flat = v.reshape(-1).numpy().astype(np.float32)
    codes, absmax = genesis._C.quantize(flat, unsigned)
    back = genesis._C.dequantize(codes, absmax, unsigned)
    if stochastic:
        # the neighbouring code on the other side of the value, and the rounding probability
        step = np.where(back > flat, -1, 1) * (1 if unsigned else np.where(flat < 0, -1, 1))
        other = genesis._C.dequantize(np.clip(codes.astype(np.int32) + step, 0, 255).astype(np.uint8), absmax, unsigned)
        span = np.abs(other - back)
        p = np.divide(np.abs(flat - back), span, out=np.zeros_like(span), where=span > 0)
        pick = torch.rand(flat.size, generator=gen).numpy() < p
        back = np.where(pick, other, back)
    return torch.from_numpy(back).reshape(v.shape)


def simulated_adamw(params, quant, lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, stochastic=False):
    """AdamW whose moments are quantized after every step with `quant` (tensors of 4096
    elements and more, as genesis), for comparing maps."""
    params = list(params)
    gen = torch.Generator().manual_seed(0)
    state = {p: [torch.zeros_like(p), torch.zeros_like(p), 0] for p in params}

    class Sim:
        def zero_grad(self):
            for p in params:
                p.grad = None

        @torch.no_grad()
        def step(self):
            for p in params:
                m, v, t = state[p]
                t += 1
                g = p.grad
                p.mul_(1 - lr * weight_decay)
                m.lerp_(g, 1 - betas[0])
                v.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
                denom = (v / (1 - betas[1] ** t)).sqrt() + eps
                p.addcdiv_(m, denom, value=-lr / (1 - betas[0] ** t))
                if p.numel() >= 4096:
                    m.copy_(quant(m, False, stochastic, gen))
                    v.copy_(quant(v, True, stochastic, gen))
                state[p][2] = t

    return Sim()


def map_comparison(steps=300):
    out = {}
    for task in TASKS:
        for label, quant, stochastic in (
            ("float32 state", None, False),
            ("float-like map (genesis)", _float_quant, False),
            ("float-like map, stochastic", _float_quant, True),
            ("linear map", _linear_quant, False),
            ("linear map, stochastic", _linear_quant, True),
        ):
            if quant is None:
                make = lambda ps: torch.optim.AdamW(ps, **RULES["AdamW"])  # noqa: E731
            else:
                make = lambda ps, q=quant, s=stochastic: simulated_adamw(ps, q, stochastic=s, **RULES["AdamW"])  # noqa: E731
            out[task, label] = train(task, make, steps=steps)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH", required=True)
    ap.add_argument("--plot", metavar="PNG")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = final_losses(steps=args.steps)
    maps = map_comparison(steps=args.steps)
    result = {
        "runs": [dict(task=t, rule=r, state=s, final=f, losses=curve) for (t, r, s), (curve, f) in runs.items()],
        "maps": [dict(task=t, map=m, final=f, losses=curve) for (t, m), (curve, f) in maps.items()],
    }
    for (t, r, s), (_, f) in runs.items():
        ref = runs[t, r, "float32"][1]
        print(f"{t:6s} {r:6s} {s:8s} final loss {f:.4f}  ({100 * (f / ref - 1):+.2f} % vs float32 state)")
    for (t, m), (_, f) in maps.items():
        ref = maps[t, "float32 state"][1]
        print(f"{t:6s} AdamW  {m:28s} final loss {f:.4f}  ({100 * (f / ref - 1):+.2f} %)")
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for ax, task in zip(axes, TASKS):
            for (t, r, s), (losses, _) in runs.items():
                if t != task:
                    continue
                smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
                ax.plot(smooth, label=f"{r}, {s} state", linestyle="-" if s == "float32" else "--")
            ax.set_title({"mlp": "MLP (teacher task)", "chars": "character-level model"}[task])
            ax.set_xlabel("step")
            ax.set_ylabel("training loss (10-step mean)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
