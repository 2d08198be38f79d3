"""Hyperparameter checks shared by the optimizers; messages follow torch.optim's."""

import math


def _value(x):
    return float(x.item()) if hasattr(x, "item") else float(x)


def check_non_negative(group, name, label):
    value = _value(group[name])
    if not 0.0 <= value:  # also rejects NaN
        raise ValueError(f"Invalid {label}: {group[name]}")


def check_betas(group):
    betas = group["betas"]
    if len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas} (expected a pair)")
    for i, beta in enumerate(betas):
        if not 0.0 <= _value(beta) < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


def check_finite(group, name, label):
    value = _value(group[name])
    if not math.isfinite(value):
        raise ValueError(f"Invalid {label}: {group[name]}")
