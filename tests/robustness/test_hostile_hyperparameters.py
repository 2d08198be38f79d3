"""Hyperparameters torch refuses are refused at construction with a clear error, not converted
or left to fail inside step() (issue: memory and data safety, item 5)."""

import pytest

import genesis

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_lr_given_as_a_string_is_a_type_error_as_in_torch(name):
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError):
        getattr(torch.optim, name)([p], lr="0.1")
    with pytest.raises(TypeError, match="lr"):
        getattr(genesis.optim, name)([p], lr="0.1")


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "7", True])
def test_seed_out_of_range_fails_at_construction(seed):
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="seed"):
        genesis.optim.AdamW([p], stochastic_rounding=True, seed=seed)


def test_params_given_or_set_as_a_tuple():
    p = torch.nn.Parameter(torch.ones(3))
    q = torch.nn.Parameter(torch.ones(2))
    opt = genesis.optim.SGD([{"params": (p,)}], lr=0.5)
    p.grad = torch.ones(3)
    opt.step()
    assert torch.equal(p.detach(), torch.full((3,), 0.5))
    opt.param_groups[0]["params"] = (p, q)  # as a user editing the group might
    p.grad, q.grad = torch.ones(3), torch.ones(2)
    opt.step()
    assert torch.equal(p.detach(), torch.zeros(3))
    assert torch.equal(q.detach(), torch.full((2,), 0.5))
