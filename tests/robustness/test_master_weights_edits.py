"""master_weights=True must not undo writes made to a 16-bit parameter outside the optimizer
(issue: memory and data safety, item 6; NOTE: [master re-seed] in update_element.h): an element
whose value is not the rounding of its master copy was written by the user, and its value
becomes the new master value."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genesis  # noqa: E402
from genesis.nn import Parameter  # noqa: E402

torch = pytest.importorskip("torch")


def _bits(t):
    return t.detach().reshape(-1).view(torch.int16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_model_load_state_dict_after_a_step_is_kept(dtype):
    """The common case: train a step, then `model.load_state_dict(...)` (an in-place copy into
    the parameters). With lr=0 and zero gradients the step must leave the loaded values alone
    and take them as the master copy."""
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 8).to(dtype)
    opt = genesis.optim.SGD(model.parameters(), lr=0.0, master_weights=True)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    loaded = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(loaded)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        assert torch.equal(_bits(p), _bits(loaded[name])), name
        assert torch.equal(opt.state[p]["master_param"], loaded[name].float()), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_edited_elements_only_are_reseeded(dtype):
    """AdamW after editing some elements of a parameter: the edited elements continue from the
    user's values, the others from their full-precision master values; both equal an optimizer
    whose master copy was re-seeded by hand the same way."""
    torch.manual_seed(1)
    n = 1000
    p = torch.nn.Parameter(torch.randn(n).to(dtype))
    opt = genesis.optim.AdamW([p], lr=1e-2, master_weights=True)
    p.grad = torch.randn(n).to(dtype)
    opt.step()
    edited = torch.arange(0, n, 7)
    with torch.no_grad():
        p[edited] = torch.randn(len(edited)).to(dtype)
    # The expected run: a twin whose master is set to what re-seeding must produce.
    twin = torch.nn.Parameter(p.detach().clone())
    twin_opt = genesis.optim.AdamW([twin], lr=1e-2, master_weights=True)
    twin_opt.load_state_dict(opt.state_dict())
    master = twin_opt.state[twin]["master_param"]
    master[edited] = p.detach()[edited].float()
    g = torch.randn(n).to(dtype)
    p.grad, twin.grad = g.clone(), g.clone()
    opt.step()
    twin_opt.step()
    assert torch.equal(_bits(p), _bits(twin))
    assert torch.equal(opt.state[p]["master_param"], twin_opt.state[twin]["master_param"])
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[edited] = False
    # Untouched elements kept their full precision (the master is not just the 16-bit value).
    kept = opt.state[p]["master_param"][untouched]
    assert not torch.equal(kept, kept.to(dtype).float())


def test_numpy_float16_parameter_edit_is_kept():
    """NumPy parameters have no version counter; the element check needs none."""
    p = Parameter(np.linspace(-1, 1, 100, dtype=np.float16))
    opt = genesis.optim.SGD([p], lr=0.0, master_weights=True)
    p.grad = np.ones(100, dtype=np.float16)
    opt.step()
    p.data[...] = np.float16(0.5)
    p.grad = np.zeros(100, dtype=np.float16)
    opt.step()
    assert (p.data == np.float16(0.5)).all()
    assert (opt.state[p]["master_param"] == np.float32(0.5)).all()
