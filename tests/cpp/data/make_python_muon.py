"""Writes python_muon.genesis, the Python-side fixture of tests/cpp/test_muon.cpp
(muon_reads_a_checkpoint_written_by_python): the state_dict of genesis.optim.Muon over torch
parameters with ns_dtype="float32" (Newton-Schulz through torch.mm) after the run of
tests/cpp/muon_fixture.h (values and options from tests/test_cpp_muon.py), plus the parameters
reached under the extra key "params". Run from the repository root after a change to the
checkpoint format or to Muon's arithmetic: python tests/cpp/data/make_python_muon.py"""

import pathlib
import sys

import torch

import genesis

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # tests/
from test_cpp_muon import SHAPES, STEPS, gradient, initial_value, make_optimizer  # noqa: E402

params = [torch.nn.Parameter(torch.from_numpy(initial_value(k, shape))) for k, shape in enumerate(SHAPES)]
opt = make_optimizer(params)
for t in range(STEPS):
    for k, (p, shape) in enumerate(zip(params, SHAPES)):
        p.grad = torch.from_numpy(gradient(k, t, shape))
    opt.step()
state = opt.state_dict()
state["params"] = [p.detach().clone() for p in params]
genesis.save(state, "tests/cpp/data/python_muon.genesis")
