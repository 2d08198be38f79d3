"""genesis::Muon (the C++ API) against genesis.optim.Muon with ns_dtype="float32": the run of
tests/cpp/muon_fixture.h, written by the C++ API to tests/cpp/data/cpp_muon.genesis (kept
current by ctest's cpp_muon_fixture_is_current) with the parameters it reached, is repeated
here in Python. Both run Newton-Schulz in float32 and differ only in the matrix products'
summation order (docs/cpp.md#muon); the momentum buffers depend on the gradients alone and
are equal bit for bit, and the C++ state loads into the Python optimizer, which continues as
from its own state."""

import pathlib

import numpy as np

import genesis
from genesis.nn import Parameter

FIXTURE = pathlib.Path(__file__).resolve().parent / "cpp" / "data" / "cpp_muon.genesis"
SHAPES = [(5, 8), (9, 4), (6, 6)]
STEPS = 20


# muon_fixture.h's values, exact in float32, and its optimizer (tests/cpp/data/make_python_muon.py
# runs the same with torch parameters).
def initial_value(k, shape):
    i = np.arange(shape[0] * shape[1])
    return (((i * 37 + k * 11) % 23 - 11) / 16).astype(np.float32).reshape(shape)


def gradient(k, t, shape):
    i = np.arange(shape[0] * shape[1])
    return (((i * 13 + t * 7 + k * 5) % 19 - 9) / 8).astype(np.float32).reshape(shape)


def make_optimizer(params):
    return genesis.optim.Muon(
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


def step(params, opt, t):
    for k, (p, shape) in enumerate(zip(params, SHAPES)):
        p.grad = gradient(k, t, shape)
    opt.step()


def test_cpp_muon_matches_python_muon_in_float32():
    params = [Parameter(initial_value(k, shape)) for k, shape in enumerate(SHAPES)]
    opt = make_optimizer(params)
    for t in range(STEPS):
        step(params, opt, t)

    saved = genesis.load(FIXTURE)
    cpp_params = saved.pop("params")
    for k, (cpp, p) in enumerate(zip(cpp_params, params)):
        assert cpp.shape == p.data.shape == SHAPES[k] and cpp.dtype == np.float32
        assert np.abs(cpp - initial_value(k, SHAPES[k])).max() > 0.02  # the runs moved the parameters
        # float32 NS, different summation orders: the largest difference seen is 2e-7.
        np.testing.assert_allclose(cpp, p.data, rtol=1e-5, atol=1e-6)
    want = opt.state_dict()
    for index in range(3):
        np.testing.assert_array_equal(
            saved["state"][index]["momentum_buffer"].view(np.uint32),
            want["state"][index]["momentum_buffer"].view(np.uint32),
        )
    for got, expected in zip(saved["param_groups"], want["param_groups"]):
        assert got == expected  # torch's keys and values, ns_dtype "float32", ns_steps an int

    # The C++ state in a Python optimizer continues exactly as the Python state does.
    same = [Parameter(p.data.copy()) for p in params]
    loaded = make_optimizer(same)
    loaded.load_state_dict(saved)
    for t in range(STEPS, STEPS + 5):
        step(params, opt, t)
        step(same, loaded, t)
    for a, b in zip(params, same):
        np.testing.assert_array_equal(a.data.view(np.uint32), b.data.view(np.uint32))
