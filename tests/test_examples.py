"""The training examples in examples/ (the docs' "训练示例" and usage examples) run and learn.

Each example's ``main`` is run briefly in-process; the losses it prints are parsed and must go
down by a clear margin.
"""

import importlib.util
import math
import pathlib
import re
import runpy
import sys

import pytest
import torch

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
NUMBER = r"([0-9]+\.[0-9]+)"


def load_example(name):
    # Examples import their shared data module (teacher_data.py) as scripts do: from their
    # own directory.
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"genesis_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def printed_losses(text):
    losses = [float(v) for v in re.findall(r"Loss: " + NUMBER, text)]
    assert all(math.isfinite(v) for v in losses)
    return losses


def step_count(optimizer):
    steps = {float(s["step"]) for s in optimizer.state.values()}
    assert len(steps) == 1, steps
    return steps.pop()


@pytest.mark.parametrize(
    "name", ["train_basic", "train_scheduler", "train_grad_accumulation", "train_no_decay_groups", "optimizer_configs"]
)
def test_example_has_docstring_and_main(name):
    module = load_example(name)
    assert module.__doc__ and "docs" in module.__doc__
    assert callable(module.main)


def test_train_basic(capsys):
    model, optimizer = load_example("train_basic").main(epochs=3, log_every=4)
    losses = printed_losses(capsys.readouterr().out)
    assert len(losses) == 3 * 4  # 16 batches per epoch, printed every 4th
    assert losses[-1] < 0.9 * losses[0], losses
    assert step_count(optimizer) == 3 * 16
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_train_scheduler_lr_follows_cosine(capsys):
    epochs = 5
    _, optimizer, scheduler = load_example("train_scheduler").main(epochs=epochs)
    out = capsys.readouterr().out
    lrs = re.findall(r"LR: " + NUMBER, out)
    base, eta_min = 1e-3, 1e-6
    expected = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / epochs)) / 2 for t in range(1, epochs + 1)]
    assert lrs == [f"{lr:.6f}" for lr in expected]
    assert lrs[-1] == "0.000001"  # annealed down to eta_min
    assert scheduler.last_epoch == epochs
    assert optimizer.param_groups[0]["lr"] == pytest.approx(eta_min)
    losses = printed_losses(out)
    assert len(losses) == epochs
    assert losses[-1] < 0.9 * losses[0], losses


def test_train_grad_accumulation_steps_every_fourth_batch(capsys):
    module = load_example("train_grad_accumulation")
    batches = len(module.batches(batch_size=8, as_dicts=True))
    _, optimizer = module.main(epochs=2, accumulation_steps=4)
    losses = printed_losses(capsys.readouterr().out)
    assert step_count(optimizer) == 2 * batches // 4  # one update per 4 batches
    assert len(losses) == 2 * batches // 4 // 4
    assert losses[-1] < 0.9 * losses[0], losses


def test_train_no_decay_groups(capsys):
    model, optimizer = load_example("train_no_decay_groups").main(epochs=3)
    out = capsys.readouterr().out
    assert "decay: 2 tensors, no decay: 4 tensors" in out
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["fc1.weight", "fc2.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["fc1.bias", "fc2.bias", "norm.bias", "norm.weight"]
    losses = printed_losses(out)
    assert losses[-1] < 0.9 * losses[0], losses


def test_optimizer_configs_all_learn(capsys):
    module = load_example("optimizer_configs")
    results = module.main(steps=30)
    out = capsys.readouterr().out
    rows = re.findall(r"^(.+?)\s+first loss " + NUMBER + r"\s+last loss " + NUMBER, out, re.M)
    assert [name for name, _, _ in rows] == list(module.CONFIGS)
    assert len(rows) == 14
    for name, first, last in rows:
        first, last = float(first), float(last)
        # Even the fine-tuning rates (5e-5 .. 1e-4) move the loss by more than 0.01 in 30 steps.
        assert last < first - 0.01, (name, first, last)
    # Adam's default lr is 1e-3: the two configurations take bit-identical steps.
    assert results["Adam default"] == results["Adam lr=0.001"]
    # Momentum helps plain SGD at the same lr on this problem.
    assert results["SGD momentum"][-1] < results["SGD basic"][-1] - 0.1


def test_example_runs_as_script(capsys):
    runpy.run_path(str(EXAMPLES / "train_no_decay_groups.py"), run_name="__main__")
    losses = printed_losses(capsys.readouterr().out)
    assert len(losses) == 8 and losses[-1] < 0.9 * losses[0]
