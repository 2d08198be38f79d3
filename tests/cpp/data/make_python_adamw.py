"""Writes python_adamw.genesis, the Python-side fixture of tests/cpp/test_checkpoint.cpp
(reads_a_checkpoint_written_by_python). Run from the repository root after a change to the
checkpoint format or to AdamW's arithmetic: python tests/cpp/data/make_python_adamw.py"""

import torch

import genesis

params = [torch.nn.Parameter(torch.arange(4, dtype=torch.float32) / 4), torch.nn.Parameter(torch.ones(2, 3))]
opt = genesis.optim.AdamW(
    [{"params": [params[0]], "lr": 0.01}, {"params": [params[1]], "weight_decay": 0.0}],
    lr=0.002,
    betas=(0.8, 0.95),
    amsgrad=True,
)
for _ in range(3):
    params[0].grad = torch.tensor([0.5, -1.0, 2.0, 0.25])
    params[1].grad = torch.full((2, 3), -0.5)
    opt.step()
genesis.save(opt.state_dict(), "tests/cpp/data/python_adamw.genesis")
