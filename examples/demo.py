"""genesis demo: a two-layer network trained with genesis.optim.AdamW on NumPy arrays.

Needs only NumPy: the gradients are written out by hand, the update runs in genesis's compiled
core. The loss printed every 50 steps goes down.
"""

import numpy as np

import genesis
from genesis.nn import Parameter
from genesis.nn.utils import clip_grad_norm_


def make_data(rng, n=512):
    """Two interleaved spirals: not linearly separable, so the hidden layer has work to do."""
    t = rng.uniform(0.5, 3.5, size=n)
    label = rng.integers(0, 2, size=n)
    angle = t * 2.5 + np.pi * label
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) + rng.normal(0, 0.1, (n, 2))
    return x.astype(np.float32), label.astype(np.float32)


def main():
    rng = np.random.default_rng(0)
    x, y = make_data(rng)
    hidden = 64
    w1 = Parameter(rng.normal(0, 0.5, (2, hidden)).astype(np.float32))
    b1 = Parameter(np.zeros(hidden, np.float32))
    w2 = Parameter(rng.normal(0, 0.1, (hidden, 1)).astype(np.float32))
    b2 = Parameter(np.zeros(1, np.float32))
    params = [w1, b1, w2, b2]
    opt = genesis.optim.AdamW([{"params": [w1, w2]}, {"params": [b1, b2], "weight_decay": 0.0}], lr=0.02)

    for step in range(401):
        # Forward: tanh hidden layer, sigmoid output, binary cross-entropy.
        h = np.tanh(x @ w1.data + b1.data)
        logit = (h @ w2.data + b2.data)[:, 0]
        prob = 1.0 / (1.0 + np.exp(-logit))
        loss = -np.mean(y * np.log(prob + 1e-7) + (1 - y) * np.log(1 - prob + 1e-7))
        # Backward by hand.
        dlogit = ((prob - y) / len(y))[:, None].astype(np.float32)
        w2.grad = h.T @ dlogit
        b2.grad = dlogit.sum(axis=0)
        dh = (dlogit @ w2.data.T) * (1 - h * h)
        w1.grad = x.T @ dh
        b1.grad = dh.sum(axis=0)

        clip_grad_norm_(params, max_norm=1.0)
        opt.step()
        if step % 50 == 0:
            accuracy = np.mean((prob > 0.5) == (y > 0.5))
            print(f"step {step:3d}  loss {loss:.4f}  accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
