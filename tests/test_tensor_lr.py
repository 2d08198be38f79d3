"""Learning rates (and Adam's betas) given as tensors, as torch 2.13 accepts them, on the CPU:
the group keeps the very tensor (a scheduler changes it in place and the next step uses the new
value), state_dicts carry it, the numbers are torch's, and the checks are torch's, class by
class (only torch's Adam and AdamW refuse a tensor lr with foreach=True)."""

import copy
import inspect
import re

import pytest

torch = pytest.importorskip("torch")

import genesis.optim  # noqa: E402

NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam", "Rprop"]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _train(lib, name, dtype, lr, steps=24, **kwargs):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).to(dtype)
    opt = getattr(lib, name)(model.parameters(), lr=lr, **kwargs)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5, 0.5)
    for k in range(steps):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(100 + k), dtype=dtype)
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()
        sched.step()
    return model, opt


@pytest.mark.parametrize(
    "lr",
    [torch.tensor(0.01), torch.tensor([[0.01]]), torch.tensor(0.01, dtype=torch.float64)],
    ids=["0-dim", "1x1", "float64"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr_trains_as_torch_under_a_scheduler(name, dtype, lr):
    runs = {}
    for lib in (torch.optim, genesis.optim):
        given = lr.clone()
        model, opt = _train(lib, name, dtype, given)
        assert opt.param_groups[0]["lr"] is given  # kept, and changed in place by StepLR
        runs[lib] = (model, opt, given)
    (tm, to, tlr), (gm, go, glr) = runs[torch.optim], runs[genesis.optim]
    assert torch.equal(glr, tlr) and glr.item() < lr.item()
    tol = TOL[dtype]
    if lr.dtype == torch.float32 and dtype == torch.float64:
        # torch's Adam, AdamW, Adamax, ASGD and NAdam compute some coefficients (lr / bias
        # correction) in the float32 of the lr tensor; genesis in float64 from its exact value.
        tol = dict(rtol=1e-6, atol=1e-9)
    for a, b in zip(gm.parameters(), tm.parameters()):
        torch.testing.assert_close(a, b, **tol)
    # The state_dicts carry the tensor and load into the other library's optimizer, which
    # then continues as the uninterrupted run.
    for src, dst_lib in ((to, genesis.optim), (go, torch.optim)):
        sd = copy.deepcopy(src.state_dict())
        assert isinstance(sd["param_groups"][0]["lr"], torch.Tensor)
        twin = copy.deepcopy(gm)
        resumed = getattr(dst_lib, name)(twin.parameters(), lr=lr.clone())
        resumed.load_state_dict(sd)
        assert isinstance(resumed.param_groups[0]["lr"], torch.Tensor)
        torch.testing.assert_close(resumed.param_groups[0]["lr"], src.param_groups[0]["lr"])


@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr_flag_checks_are_torchs_class_by_class(name):
    def outcome(lib, **kwargs):
        p = torch.nn.Parameter(torch.ones(3))
        try:
            opt = getattr(lib, name)([p], **kwargs)
        except ValueError as e:
            return str(e)
        p.grad = torch.ones(3)
        if kwargs.get("foreach"):
            return "constructed"  # torch's foreach kernels may then fail on a tensor lr
        opt.step()
        return p.detach()

    for kwargs in (
        dict(lr=torch.tensor(0.1), foreach=True),
        dict(lr=torch.tensor([0.1, 0.2])),
        dict(lr=torch.tensor(0.1), foreach=False),
    ):
        want, got = outcome(torch.optim, **kwargs), outcome(genesis.optim, **kwargs)
        if isinstance(want, str):
            assert got == want
        else:
            torch.testing.assert_close(got, want)
    expected = "lr as a Tensor is not supported for capturable=False and foreach=True"
    assert (outcome(genesis.optim, lr=torch.tensor(0.1), foreach=True) == expected) == (name in ("Adam", "AdamW"))


@pytest.mark.parametrize("name", [n for n in NAMES if "betas" in inspect.signature(getattr(torch.optim, n)).parameters])
def test_tensor_betas_as_torch(name):
    """Adam and AdamW refuse mixed float/tensor betas and tensor betas with foreach=True;
    torch's other optimizers accept both (and genesis then trains as torch's for-loop does).
    float64 tensors: torch computes with float32 ones partly in float32 (see above)."""
    b1, b2 = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.99, dtype=torch.float64)
    cases = [dict(betas=(b1, b2)), dict(betas=(b1, 0.99)), dict(betas=(b1, b2), foreach=True)]
    for kwargs in cases:
        if kwargs.get("foreach"):
            # torch's foreach kernels of some of these fail on tensor betas (a TypeError or
            # RuntimeError inside torch); genesis has one implementation and trains.
            try:
                _train(torch.optim, name, torch.float64, 0.01, steps=1, **copy.deepcopy(kwargs))
            except ValueError as e:
                with pytest.raises(ValueError, match=re.escape(str(e))):
                    _train(genesis.optim, name, torch.float64, 0.01, steps=1, **copy.deepcopy(kwargs))
                assert name in ("Adam", "AdamW")
                continue
            except (TypeError, RuntimeError):
                pass
            _train(genesis.optim, name, torch.float64, 0.01, steps=6, **copy.deepcopy(kwargs))
            continue
        results = []
        for lib in (torch.optim, genesis.optim):
            try:
                model, _ = _train(lib, name, torch.float64, 0.01, steps=6, **copy.deepcopy(kwargs))
                results.append(list(model.parameters()))
            except ValueError as e:
                results.append(str(e))
        want, got = results
        if isinstance(want, str):
            assert got == want and name in ("Adam", "AdamW")
            continue
        # torch's NAdam with tensor betas takes its momentum schedule from the float32 step
        # tensor instead of a Python float.
        tol = dict(rtol=1e-6, atol=1e-9) if name == "NAdam" else TOL[torch.float64]
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol)


def test_a_cuda_tensor_lr_read_on_the_host_is_refused_while_a_graph_is_captured(monkeypatch):
    """Without capturable=True a CUDA tensor lr is read on the host, which a stream being
    captured cannot do. No GPU here: the CUDA checks are stood in for, and the refusal must come
    before anything changes. (capturable=True reads it on the device: test_capturable.py.)"""
    from genesis import _interop
    from genesis.optim import _device_lr

    p = torch.nn.Parameter(torch.ones(3))
    opt = genesis.optim.Adam([p], lr=torch.tensor(0.1))
    p.grad = torch.ones(3)
    monkeypatch.setattr(_interop, "is_cuda", lambda x: isinstance(x, torch.Tensor) and x.dim() == 0)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="cannot happen while a CUDA graph is being captured: capturable is not set"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3)) and len(opt.state) == 0
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    _device_lr.check(opt, opt.param_groups[0], 0, None)  # outside a capture: read as usual
