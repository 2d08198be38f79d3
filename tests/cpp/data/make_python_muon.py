"""Writes python_muon.genesis, the Python-side fixture of tests/cpp/test_muon.cpp
(muon_reads_a_checkpoint_written_by_python): the state_dict of genesis.optim.Muon over torch
parameters with ns_dtype="float32" (Newton-Schulz through torch.mm) after the run of
tests/cpp/muon_fixture.h, plus the parameters reached under the extra key "params". Run from the
repository root after a change to the checkpoint format or to Muon's arithmetic:
python tests/cpp/data/make_python_muon.py"""

import torch

import genesis

SHAPES = [(5, 8), (9, 4), (6, 6)]


def values(k, t, shape, gradient):
    i = torch.arange(shape[0] * shape[1], dtype=torch.float64)
    v = ((i * 13 + t * 7 + k * 5) % 19 - 9) / 8 if gradient else ((i * 37 + k * 11) % 23 - 11) / 16
    return v.to(torch.float32).reshape(shape)


params = [torch.nn.Parameter(values(k, 0, shape, False)) for k, shape in enumerate(SHAPES)]
opt = genesis.optim.Muon(
    [
        {"params": params[:2], "lr": 0.02},
        {
            "params": params[2:],
            "lr": 0.01,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 0.0,
            "adjust_lr_fn": "match_rms_adamw",
        },
    ],
    ns_dtype="float32",
)
for t in range(20):
    for k, (p, shape) in enumerate(zip(params, SHAPES)):
        p.grad = values(k, t, shape, True)
    opt.step()
state = opt.state_dict()
state["params"] = [p.detach().clone() for p in params]
genesis.save(state, "tests/cpp/data/python_muon.genesis")
