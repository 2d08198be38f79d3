"""The CPU kernels are built per instruction set (baseline, AVX2+FMA+F16C and AVX-512) and the
widest one the CPU runs is picked at run time; all are compiled without floating-point
contraction, so they must give the same bits. Each variant runs in its own process (the choice is
made once per process; GENESIS_CPU_ISA caps it)."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import genesis  # noqa: E402

SCRIPT = r"""
import sys, numpy as np, torch, genesis
sys.path.insert(0, sys.argv[2])
import reference as R
SHAPES = [(1,), (3,), (1000,), (65537,), (129, 301)]
out = {}
int8 = {"state_dtype": "int8", "min_8bit_size": 0}
CASES = [(torch.float32, {}), (torch.float64, {}), (torch.bfloat16, {"master_weights": True}),
         (torch.float16, {}), (torch.bfloat16, {"stochastic_rounding": True, "seed": 3}),
         (torch.float32, int8), (torch.bfloat16, dict(int8, master_weights=True))]
for dtype, kw in CASES:
    for name in R.ELEMENTWISE_NAMES if "state_dtype" in kw else R.NAMES:  # every option on
        torch.manual_seed(0)
        # a 2-D tensor for the factored and per-row paths, odd sizes for the vector tails
        ps = [torch.nn.Parameter(torch.randn(shape).to(dtype)) for shape in SHAPES]
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
np.savez(sys.argv[1], isa=genesis._C.cpu_isa(), arrays=len(SHAPES) * (5 * len(R.NAMES) + 2 * len(R.ELEMENTWISE_NAMES)),
         **{f"{k}-{i}": a for k, arrays in out.items() for i, a in enumerate(arrays)})
"""


def run(tmp_path, cap):
    path = tmp_path / f"{cap}.npz"
    env = dict(os.environ, GENESIS_CPU_ISA=cap)
    tests = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-c", SCRIPT, str(path), tests], check=True, env=env)
    return np.load(path)


def test_instruction_set_variants_give_the_same_bits(tmp_path):
    # Capped at each variant in turn; a CPU without AVX2 or AVX-512 runs a narrower one, which
    # the recorded isa shows (and which still must give the baseline's bits).
    baseline = run(tmp_path, "baseline")
    assert str(baseline["isa"]) == "baseline"
    keys = [k for k in baseline.files if k not in ("isa", "arrays")]
    assert len(keys) == int(baseline["arrays"])
    for cap, allowed in (("avx2", ("avx2", "baseline")), ("avx512", ("avx512", "avx2", "baseline"))):
        other = run(tmp_path, cap)
        assert str(other["isa"]) in allowed
        for key in keys:
            np.testing.assert_array_equal(other[key].view(np.uint64), baseline[key].view(np.uint64), err_msg=key)


def test_widest_variant_is_the_default():
    # Without GENESIS_CPU_ISA the widest built variant that the CPU runs is chosen.
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("reads the CPU's flags from /proc/cpuinfo")
    env = dict(os.environ)
    env.pop("GENESIS_CPU_ISA", None)
    code = "import genesis; print(genesis._C.cpu_isa())"
    isa = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    flags = set(open("/proc/cpuinfo").read().split())
    built = genesis._C.cpu_isas_built().split()
    expected = "baseline"
    if "avx2" in built and {"avx2", "fma", "f16c"} <= flags:
        expected = "avx2"
        if "avx512" in built and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
            expected = "avx512"
    assert isa.stdout.strip() == expected


def test_x86_64_builds_every_variant():
    # The CI machines are x86-64 with a compiler that has every flag: a variant silently
    # missing from the build would leave its dispatch untested.
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the AVX2 and AVX-512 variants are x86-64 only")
    assert genesis._C.cpu_isas_built().split() == ["baseline", "avx2", "avx512"]


PREFETCH_SCRIPT = r"""
import sys, numpy as np, torch, genesis
torch.manual_seed(0)
# a matrix whose rows span several prefetch rounds, a batch of small ones, a vector
ps = [torch.nn.Parameter(torch.randn(shape)) for shape in [(700, 1500), (3, 40, 25), (70001,)]]
opt = genesis.optim.Adafactor(ps, lr=1e-2, weight_decay=0.1)
for _ in range(3):
    for p in ps:
        p.grad = torch.randn(p.shape)
    opt.step()
np.savez(sys.argv[1], prefetch=genesis._C.cpu_prefetch(), **{str(i): p.detach().numpy() for i, p in enumerate(ps)})
"""


def run_prefetch(tmp_path, value):
    path = tmp_path / f"prefetch{value}.npz"
    env = dict(os.environ, GENESIS_CPU_PREFETCH=value, OMP_NUM_THREADS="2")
    subprocess.run([sys.executable, "-c", PREFETCH_SCRIPT, str(path)], check=True, env=env)
    return np.load(path)


def test_software_prefetch_changes_no_bit(tmp_path):
    # NOTE: [prefetch by vendor]: forced off and on, Adafactor (the rule that prefetches) steps
    # to the same bits, and the core reports what was forced.
    off, on = run_prefetch(tmp_path, "0"), run_prefetch(tmp_path, "1")
    assert not bool(off["prefetch"]) and bool(on["prefetch"])
    for key in ("0", "1", "2"):
        assert np.isfinite(on[key]).all()
        np.testing.assert_array_equal(off[key].view(np.uint32), on[key].view(np.uint32), err_msg=key)


def test_software_prefetch_default_follows_the_vendor():
    if not os.path.exists("/proc/cpuinfo") or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("reads the CPU's vendor from /proc/cpuinfo (x86-64)")
    env = dict(os.environ)
    env.pop("GENESIS_CPU_PREFETCH", None)
    code = "import genesis; print(genesis._config.config()['cpu_prefetch'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    intel = "GenuineIntel" in open("/proc/cpuinfo").read()
    assert out.stdout.strip() == str(intel)
