"""Smoke test of an installed genesis wheel (run by .ci/wheel-test in a fresh virtual
environment that has NumPy and the wheel, no torch and no compiler).

Every optimizer genesis.optim exports (found from __all__, so optimizers added later are
covered) minimizes a small quadratic on NumPy parameters, with clipping and a checkpoint round
trip; the run fails if any optimizer errs, leaves a non-finite value or does not lower the loss.
"""

import inspect
import os
import sys
import tempfile

import numpy as np

import genesis
from genesis.nn import Parameter
from genesis.nn.utils import clip_grad_norm_


def fail(message):
    print(f"wheel smoke test FAILED: {message}", file=sys.stderr)
    sys.exit(1)


if genesis._C.cuda_built():
    fail("the CPU wheel's extension was built with CUDA")


def optimizer_classes():
    for name in genesis.optim.__all__:
        obj = getattr(genesis.optim, name)
        if inspect.isclass(obj) and issubclass(obj, genesis.optim.Optimizer) and obj is not genesis.optim.Optimizer:
            yield name, obj


def minimize(name, cls, steps=30):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(8, 5)).astype(np.float32)
    # Muon updates matrices only (torch's rule), so its "bias" is a 1 x 5 matrix.
    bias_shape = (1, 5) if name == "Muon" else (5,)
    params = [Parameter(np.zeros((8, 5), np.float32)), Parameter(np.ones(bias_shape, np.float32))]
    # Optimizers whose lr has no default (SGD's is a "required" marker) get one; the others
    # run on their defaults.
    lr = inspect.signature(cls).parameters.get("lr")
    kwargs = {"lr": 0.05} if lr is not None and not isinstance(lr.default, (int, float)) else {}
    opt = cls(params, **kwargs)

    def closure():
        # loss = 0.5 * (|w - target|^2 + |b|^2), gradients written by hand
        w, b = params
        if name == "SparseAdam":  # NumPy's form of a sparse gradient: (row indices, rows)
            w.grad = (np.arange(8), w.data - target)
            b.grad = (np.arange(5), b.data.copy())
        else:
            w.grad = w.data - target
            b.grad = b.data.copy()
            clip_grad_norm_(params, max_norm=10.0)
        return 0.5 * float(
            np.sum(np.square(w.data - target, dtype=np.float64)) + np.sum(np.square(b.data, dtype=np.float64))
        )

    first = closure()
    for _ in range(steps):
        opt.step(closure)  # a closure works for every optimizer, LBFGS included
    last = closure()
    if not all(np.isfinite(p.data).all() for p in params):
        fail(f"{name}: non-finite parameters")
    if not last < first:
        fail(f"{name}: loss did not fall ({first} -> {last})")

    # The optimizer state survives a checkpoint round trip through genesis.save / genesis.load.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "opt.genesis")
        genesis.save(opt.state_dict(), path)
        opt.load_state_dict(genesis.load(path))
    opt.step(closure)
    return first, last


def main():
    print(genesis.show_config())
    names = []
    for name, cls in optimizer_classes():
        first, last = minimize(name, cls)
        print(f"  {name:10s} loss {first:.4f} -> {last:.4f}")
        names.append(name)
    if not {"SGD", "Adam", "AdamW", "RMSprop"} <= set(names):
        fail(f"expected at least SGD, Adam, AdamW and RMSprop, found {names}")
    print(f"wheel smoke test passed: {len(names)} optimizers")


if __name__ == "__main__":
    main()
