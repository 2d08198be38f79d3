"""The torch examples' data set: Gaussian inputs labelled by a fixed random linear "teacher",
generated from a seed, so every example runs offline with torch alone and has something real
to learn."""

import torch


def teacher_data(n=512, features=16, classes=4, seed=0):
    """Inputs x (n, features) and labels y (n,) in [0, classes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x @ torch.randn(features, classes, generator=g)).argmax(dim=1)
    return x, y


def batches(batch_size=32, as_dicts=False, **data):
    """teacher_data split into batches: (input, target) pairs, or {"input", "target"} dicts
    like the documentation's loops use."""
    x, y = teacher_data(**data)
    pairs = zip(x.split(batch_size), y.split(batch_size))
    if as_dicts:
        return [{"input": xb, "target": yb} for xb, yb in pairs]
    return list(pairs)
