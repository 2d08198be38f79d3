"""Optimizer state written by the C++ API (tests/cpp/data/cpp_adamw.genesis, kept current by
ctest's cpp_checkpoint_fixture_is_current) loads into a Python genesis optimizer: the same
options, and state equal bit for bit to what Python computes from the same start."""

import pathlib

import numpy as np

import genesis
from genesis.nn import Parameter

FIXTURE = pathlib.Path(__file__).resolve().parent / "cpp" / "data" / "cpp_adamw.genesis"


def _optimizer():
    params = [Parameter(np.arange(4, dtype=np.float32) / 4), Parameter(np.ones((2, 3), np.float32))]
    opt = genesis.optim.AdamW(
        [{"params": [params[0]], "lr": 0.01}, {"params": [params[1]], "weight_decay": 0.0}],
        lr=0.002,
        betas=(0.8, 0.95),
        amsgrad=True,
    )
    return params, opt


def test_cpp_checkpoint_loads_into_a_python_optimizer():
    params, computed = _optimizer()
    for _ in range(3):
        params[0].grad = np.array([0.5, -1.0, 2.0, 0.25], np.float32)
        params[1].grad = np.full((2, 3), -0.5, np.float32)
        computed.step()

    _, loaded = _optimizer()
    saved = genesis.load(FIXTURE)
    assert saved["state"][1]["exp_avg"].shape == (6,)  # C++ writes flat arrays
    loaded.load_state_dict(saved)
    groups = loaded.param_groups
    assert (groups[0]["lr"], groups[0]["weight_decay"], groups[1]["lr"], groups[1]["weight_decay"]) == (
        0.01,
        0.01,
        0.002,
        0.0,
    )
    assert groups[0]["betas"] == (0.8, 0.95) and groups[0]["amsgrad"] is True
    want, got = computed.state_dict()["state"], loaded.state_dict()["state"]
    assert sorted(got) == sorted(want) == [0, 1]
    for index in want:
        assert got[index]["step"] == want[index]["step"] == 3.0
        for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert got[index][name].shape == want[index][name].shape  # reshaped to the parameter
            np.testing.assert_array_equal(got[index][name].view(np.uint32), want[index][name].view(np.uint32))
