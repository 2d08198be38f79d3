"""torch's version counters after genesis writes a tensor (NOTE: [version counters] in
csrc/python/bindings.cpp): a step, a clip or an unscale changes tensors in place as torch's do, so
autograd must see the change. A step between a forward pass and its backward is then torch's
RuntimeError ("modified by an inplace operation"), not a backward that silently differentiates
through the updated weights; parameters the step does not update keep their counts."""

import pytest

torch = pytest.importorskip("torch")

import genesis  # noqa: E402

import reference  # noqa: E402

INPLACE_ERROR = "modified by an inplace operation"


def _saved_loss(p):
    # p * p saves p for its backward: autograd checks p's version when backward reaches it.
    return (p * p).sum()


def _outcome(lib, name, kwargs, make_param):
    """Whether backward after a step between it and its forward raises torch's error, and the
    parameter's version counter before and after the step."""
    p = make_param()
    opt = getattr(lib, name)([p], **kwargs)
    loss = _saved_loss(p)
    p.grad = torch.ones_like(p)
    before = p._version
    opt.step()
    after = p._version
    try:
        loss.backward()
        raised = None
    except RuntimeError as e:
        raised = str(e)
    return raised, before, after


def _vector():
    return torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12))


def _matrix():
    return torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12).reshape(3, 4))


def _cases():
    for name in reference.NAMES:
        yield pytest.param(name, {}, _matrix, id=name)
    for name in reference.ELEMENTWISE_NAMES:
        kwargs = {"state_dtype": "int8", "min_8bit_size": 0}
        yield pytest.param(name, kwargs, _matrix, id=f"{name}-int8")
    yield pytest.param(
        "AdamW",
        {"master_weights": True},
        lambda: torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12, dtype=torch.bfloat16)),
        id="AdamW-bf16-master-weights",
    )
    # A transposed (non-contiguous) parameter: updated through a contiguous copy written back.
    yield pytest.param("AdamW", {}, lambda: torch.nn.Parameter(torch.randn(4, 3).t()), id="AdamW-transposed")
    yield pytest.param("Lion", {}, lambda: torch.nn.Parameter(torch.randn(4, 3).t()), id="Lion-transposed")
    yield pytest.param("Muon", {}, _matrix, id="Muon")
    yield pytest.param("Muon", {}, lambda: torch.nn.Parameter(torch.randn(5, 3).t()), id="Muon-transposed")


@pytest.mark.parametrize("name,kwargs,make_param", list(_cases()))
def test_a_step_between_forward_and_backward_is_torchs_error(name, kwargs, make_param):
    raised, before, after = _outcome(genesis.optim, name, kwargs, make_param)
    assert after > before
    assert raised is not None and INPLACE_ERROR in raised
    if hasattr(torch.optim, name) and not kwargs:
        torch_raised, _, _ = _outcome(torch.optim, name, {}, make_param)
        assert torch_raised is not None and INPLACE_ERROR in torch_raised


def test_the_bug_it_catches_was_silent():
    """What the counters guard against: without them, backward differentiates through the
    updated weight (here 2 * p_new instead of 2 * p_old)."""
    p = _vector()
    x = torch.linspace(0.5, 1.5, 12, requires_grad=True)
    loss = (x * p).sum()  # saves p for x's gradient
    p.grad = torch.ones_like(p)
    genesis.optim.SGD([p], lr=0.5).step()
    with pytest.raises(RuntimeError, match=INPLACE_ERROR):
        loss.backward()


@pytest.mark.parametrize("name", ["SGD", "AdamW", "LAMB", "Adafactor"])
def test_parameters_without_a_gradient_keep_their_versions_as_with_torch(name):
    outcomes = {}
    for lib in (torch.optim, genesis.optim):
        if not hasattr(lib, name):
            continue
        moved, frozen = _matrix(), _matrix()
        opt = getattr(lib, name)([moved, frozen], lr=0.1)
        loss = _saved_loss(frozen)  # a graph that saved the parameter the step leaves alone
        moved.grad = torch.ones_like(moved)
        versions = (moved._version, frozen._version)
        opt.step()
        loss.backward()  # frozen was not written: no error
        outcomes[lib.__name__] = (moved._version > versions[0], frozen._version == versions[1])
        torch.testing.assert_close(frozen.grad, 2 * frozen.detach())
    assert all(v == (True, True) for v in outcomes.values())


def test_every_step_advances_the_versions():
    p = _matrix()
    opt = genesis.optim.AdamW([p], lr=0.1)
    seen = [p._version]
    for _ in range(3):
        p.grad = torch.ones_like(p)
        opt.step()
        seen.append(p._version)
    assert seen == sorted(set(seen))  # strictly increasing


def test_a_step_skipped_for_an_inf_gradient_writes_nothing_and_keeps_the_versions():
    p = _matrix()
    opt = genesis.optim.AdamW([p], lr=0.1)
    scaler = genesis.amp.GradScaler(init_scale=2.0)
    loss = scaler.scale(_saved_loss(p))
    p.grad = torch.full_like(p, float("inf"))
    before = p._version
    scaler.step(opt)
    assert p._version == before
    loss.backward()  # no error: nothing was written


def _grads():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(7))]
    for p in ps:
        p.grad = torch.randn_like(p) * 10
    return ps


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda lib, ps: lib.clip_grad_norm_(ps, max_norm=0.5), id="clip_grad_norm_"),
        pytest.param(lambda lib, ps: lib.clip_grad_value_(ps, clip_value=0.1), id="clip_grad_value_"),
    ],
)
def test_clipping_advances_the_gradients_versions_as_torch(call):
    for lib in (torch.nn.utils, genesis.nn.utils):
        ps = _grads()
        before = [p.grad._version for p in ps]
        call(lib, ps)
        assert all(p.grad._version > v for p, v in zip(ps, before)), lib.__name__


def test_unscale_advances_the_versions_of_the_gradients_it_rewrites():
    """genesis's scaler rewrites a torch optimizer's gradients (advanced); a genesis optimizer's
    stay scaled until its step divides them as it reads them (not written, not advanced).
    (torch's own CPU scaler rewrites them without advancing their counts.)"""
    for opt_class, rewritten in ((torch.optim.SGD, True), (genesis.optim.SGD, False)):
        ps = _grads()
        grads = [p.grad.clone() for p in ps]
        scaler = genesis.amp.GradScaler(init_scale=4.0)
        scaler.scale(torch.ones(()))  # starts the scaler's iteration
        before = [p.grad._version for p in ps]
        scaler.unscale_(opt_class(ps, lr=0.1))
        for p, g, v in zip(ps, grads, before):
            assert (p.grad._version > v) is rewritten
            torch.testing.assert_close(p.grad, g / 4 if rewritten else g, rtol=0, atol=0)


def test_an_inference_tensor_is_not_updated_outside_inference_mode_as_with_torch():
    """An inference tensor has no version counter to advance: torch refuses to update one in
    place outside inference mode, and so does genesis, before anything changes (torch 2.13's
    SGD raises after writing it)."""
    for lib in (torch.optim, genesis.optim):
        with torch.inference_mode():
            p = torch.linspace(-1.0, 1.0, 4)
        opt = lib.SGD([p], lr=0.1)
        p.grad = torch.ones(4)
        with pytest.raises(RuntimeError, match="inference"):
            opt.step()
    assert torch.equal(p, torch.linspace(-1.0, 1.0, 4))  # genesis's
    with torch.inference_mode():  # inside it, both update it
        for lib in (torch.optim, genesis.optim):
            p = torch.linspace(-1.0, 1.0, 4)
            p.grad = torch.ones(4)
            lib.SGD([p], lr=0.1).step()
            assert torch.equal(p, torch.linspace(-1.0, 1.0, 4) - 0.1)


def test_an_inference_tensor_first_stepped_inside_inference_mode_is_refused_outside_it():
    with torch.inference_mode():
        p = torch.linspace(-1.0, 1.0, 4)
        p.grad = torch.ones(4)
        opt = genesis.optim.AdamW([p], lr=0.1)
        opt.step()
    before = (p.clone(), opt.state[p]["exp_avg"].clone())
    with pytest.raises(RuntimeError, match="parameter 0 of param group 0 is an inference tensor"):
        opt.step()
    assert torch.equal(p, before[0]) and torch.equal(opt.state[p]["exp_avg"], before[1])
    with torch.inference_mode():
        opt.step()  # inside it again: updated
    assert not torch.equal(p, before[0])
    p.grad = None
    opt.step()  # outside it, but without a gradient: not updated, so not refused (as torch)
