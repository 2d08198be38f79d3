"""The CPU kernels are built per instruction set (baseline and AVX2+FMA+F16C) and picked at run
time; both are compiled without floating-point contraction, so they must give the same bits.
Each variant runs in its own process (the choice is made once per process)."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SCRIPT = r"""
import sys, numpy as np, torch, genesis
sys.path.insert(0, sys.argv[2])
import reference as R
out = {}
for dtype, kw in [(torch.float32, {}), (torch.float64, {}), (torch.bfloat16, {"master_weights": True}),
                  (torch.float16, {}), (torch.bfloat16, {"stochastic_rounding": True, "seed": 3})]:
    for name in R.NAMES:  # every registered rule, every option on
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(n).to(dtype)) for n in (1, 3, 1000, 65537)]
        opt = getattr(genesis.optim, name)(ps, **R.RICH[name], **kw)
        for step in range(3):
            for p in ps:
                p.grad = torch.randn(p.shape).to(dtype)
            if step == 1:  # the deferred clip's gradient transform (update_element.h)
                opt.clip_grad_norm_(1.0)
                opt.clip_grad_value_(0.01)
            else:
                genesis.nn.utils.clip_grad_norm_(ps, 1.0)
            opt.step()
        # float64 holds every float16/bfloat16/float32/float64 value exactly
        out[name + str(dtype) + str(sorted(kw))] = [p.detach().double().numpy() for p in ps]
np.savez(sys.argv[1], isa=genesis._C.cpu_isa(), rules=len(R.NAMES),
         **{f"{k}-{i}": a for k, arrays in out.items() for i, a in enumerate(arrays)})
"""


def run(tmp_path, isa):
    path = tmp_path / f"{isa}.npz"
    env = dict(os.environ)
    if isa == "baseline":
        env["GENESIS_CPU_ISA"] = "baseline"
    else:
        env.pop("GENESIS_CPU_ISA", None)
    tests = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-c", SCRIPT, str(path), tests], check=True, env=env)
    return np.load(path)


def test_instruction_set_variants_give_the_same_bits(tmp_path):
    baseline = run(tmp_path, "baseline")
    default = run(tmp_path, "default")
    assert str(baseline["isa"]) == "baseline"
    assert str(default["isa"]) in ("avx2", "baseline")
    keys = [k for k in baseline.files if k not in ("isa", "rules")]
    assert len(keys) == 5 * 4 * int(baseline["rules"])
    for key in keys:
        np.testing.assert_array_equal(default[key].view(np.uint64), baseline[key].view(np.uint64), err_msg=key)
