"""genesis.autocast and the genesis.enable_autocast flag (docs/mixed-precision.md): a switch over
torch.autocast that does nothing unless asked to."""

import os
import subprocess
import sys

import pytest
import torch

import genesis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from no_torch import NO_TORCH_ENV  # noqa: E402


@pytest.fixture
def flag(monkeypatch):
    """Set genesis.enable_autocast for one test (restored afterwards)."""
    return lambda value: monkeypatch.setattr(genesis, "enable_autocast", value)


A = torch.randn(4, 4)
B = torch.randn(4, 4)


def matmul_dtype():
    return (A @ B).dtype


def test_flag_defaults_to_false_and_the_region_does_nothing():
    assert genesis.enable_autocast is False
    with genesis.autocast() as region:
        assert isinstance(region, genesis.autocast)
        assert not torch.is_autocast_enabled("cpu")
        assert matmul_dtype() == torch.float32


def test_flag_on_gives_bfloat16_on_cpu(flag):
    flag(True)
    with genesis.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert matmul_dtype() == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    assert matmul_dtype() == torch.float32


def test_flag_is_read_when_entering(flag):
    """A region made while the flag is off follows the flag's value at ``with`` time."""
    region = genesis.autocast()
    flag(True)
    with region:
        assert matmul_dtype() == torch.bfloat16
    flag(False)
    with region:
        assert matmul_dtype() == torch.float32


def test_explicit_enabled_overrides_the_flag(flag):
    with genesis.autocast(enabled=True):
        assert matmul_dtype() == torch.bfloat16
    flag(True)
    with genesis.autocast(enabled=False):
        assert not torch.is_autocast_enabled("cpu")
        assert matmul_dtype() == torch.float32


def test_explicit_dtype_and_device_type(flag):
    flag(True)
    with genesis.autocast(dtype=torch.float16):
        assert matmul_dtype() == torch.float16
    with genesis.autocast(dtype="float16", device_type="cpu"):
        assert matmul_dtype() == torch.float16
    with genesis.autocast(device_type="cpu"):
        assert matmul_dtype() == torch.bfloat16


def test_nesting(flag):
    """Inner regions switch precision off or change the dtype; leaving one restores the
    enclosing region's setting. A flag-following region inside an explicit one, with the flag
    off, leaves the enclosing region in force."""
    flag(True)
    outer = genesis.autocast()
    with outer:
        with genesis.autocast(enabled=False):
            assert matmul_dtype() == torch.float32
            with genesis.autocast(dtype=torch.float16):
                assert matmul_dtype() == torch.float16
            assert matmul_dtype() == torch.float32
        assert matmul_dtype() == torch.bfloat16
        with outer:  # the same object entered again
            assert matmul_dtype() == torch.bfloat16
        assert matmul_dtype() == torch.bfloat16
    assert matmul_dtype() == torch.float32
    flag(False)
    with genesis.autocast(enabled=True):
        with genesis.autocast():
            assert matmul_dtype() == torch.bfloat16


def test_exception_leaves_the_region(flag):
    flag(True)
    with pytest.raises(KeyError):
        with genesis.autocast():
            raise KeyError("boom")
    assert not torch.is_autocast_enabled("cpu")


def test_decorator(flag):
    @genesis.autocast()
    def forward():
        """Docstring kept."""
        return matmul_dtype()

    assert forward.__doc__ == "Docstring kept."
    assert forward() == torch.float32
    flag(True)
    assert forward() == torch.bfloat16
    assert genesis.autocast(dtype=torch.float16)(matmul_dtype)() == torch.float16


def test_autograd_through_region(flag):
    """The usual pattern: forward under autocast, backward outside; gradients come back in
    the parameters' dtype."""
    flag(True)
    model = torch.nn.Linear(4, 2)
    with genesis.autocast():
        out = model(torch.randn(3, 4))
        loss = out.float().pow(2).mean()
    assert out.dtype == torch.bfloat16
    loss.backward()
    assert model.weight.grad.dtype == torch.float32


def test_without_torch_nothing_is_imported():
    """A NumPy-only program may use genesis.autocast, even with the flag on: torch is never
    imported."""
    code = (
        "import sys, genesis\n"
        "genesis.enable_autocast = True\n"
        "with genesis.autocast():\n"
        "    pass\n"
        "with genesis.autocast(enabled=True):\n"
        "    pass\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=NO_TORCH_ENV)
