"""The examples' training losses, for bench/plot.py: each script in examples/ is run as written
(its own model, data and optimizer) and the losses it prints are collected.

    python bench/loss_curves.py --json bench/results/loss_curves.json   # ~1 minute
"""

import argparse
import contextlib
import importlib.util
import io
import json
import pathlib
import re
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
# Per example: keyword arguments for its main() (log more often where it can) and when it
# prints a loss.
RUNS = {
    "demo": ({}, "every 50 steps"),
    "train_basic": ({"log_every": 1}, "every batch"),
    "train_scheduler": ({}, "mean of each epoch"),
    "train_grad_accumulation": ({}, "every 4th update"),
    "train_no_decay_groups": ({}, "every 8th batch"),
    "train_mixed_precision": ({"log_every": 4}, "every 4 steps"),
}
LOSS = re.compile(r"[Ll]oss:? ([0-9]+\.[0-9]+)")


def load(name):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the examples import teacher_data from their folder
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH", required=True)
    args = ap.parse_args()
    curves = {}
    for name, (kwargs, unit) in RUNS.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            load(name).main(**kwargs)
        losses = [float(v) for v in LOSS.findall(out.getvalue())]
        if len(losses) < 2:
            raise SystemExit(f"{name}: found {len(losses)} printed losses; did its output change?")
        curves[name] = dict(unit=unit, losses=losses)
        print(f"{name}: {len(losses)} losses, {losses[0]:.4f} -> {losses[-1]:.4f}")
    # optimizer_configs returns every configuration's per-step losses itself.
    with contextlib.redirect_stdout(io.StringIO()):
        configs = load("optimizer_configs").main()
    with open(args.json, "w") as f:
        json.dump(dict(benchmark="loss_curves", examples=curves, optimizer_configs=configs), f, indent=1)


if __name__ == "__main__":
    main()
