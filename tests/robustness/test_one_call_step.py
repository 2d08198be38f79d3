"""The one-call step (NOTE: [one-call step] and [batched tensor facts] in
csrc/python/bindings.cpp): once a plan is cached, step() gathers and updates every group in one
core call, and after two such steps checks each group's tensors with one torch guard instead of
a dozen calls per tensor. Neither may accept anything the per-call checks refuse, nor miss any
change the user makes between steps. Each case below changes one thing after warm-up steps
(one warm-up step: the per-call checks of the one-call step; four: the guard), then steps on
beside torch.optim.AdamW on the same numbers, with the guard on and off (GENESIS_TENSOR_FACTS).
Each runs in a child interpreter (tests/robustness/child.py): a stale pointer may crash it.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from child import ODD_TENSORS, facts_prelude, run_case  # noqa: E402

torch = pytest.importorskip("torch")

# What is done to parameter 3 of 6 (n elements each) after the warm-up steps. `ps` are the
# parameters, `opt` the optimizer (torch's or genesis's: the same code runs on both).
_CHANGES = {
    "nothing": "pass",
    "grad_none": "ps[3].grad = None",
    "grad_strided": "ps[3].grad = torch.linspace(-1, 1, 2 * n)[::2]",
    "grad_of_a_subclass": "ps[3].grad = ps[3].grad.as_subclass(Sub)",
    "grad_requires_grad": "ps[3].grad = ps[3].grad.detach().clone().requires_grad_()",
    "grad_data_replaced": "ps[3].grad.data = torch.linspace(-2, 2, n)",
    "param_repointed": "ps[3].data = torch.linspace(0, 1, n)",
    "param_frozen": "ps[3].requires_grad_(False)",
    "param_offset_view": "ps[3].data = torch.linspace(0, 1, n + 1)[1:]",
    "state_repointed": "opt.state[ps[3]]['exp_avg'].data = opt.state[ps[3]]['exp_avg'].data.clone()",
    "step_in_inference_mode": "mode = torch.inference_mode()",
    "step_in_function_mode": "mode = Passthrough()",
    "step_in_no_grad": "mode = torch.no_grad()",
}


_SETUP = (
    ODD_TENSORS
    + """
import contextlib, os, genesis

def run(lib, change, warm, n=33):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(n)) for _ in range(6)]
    grads = [[torch.randn(n) for _ in ps] for _ in range(warm + 3)]
    module = torch.optim if lib == "torch" else genesis.optim
    kwargs = {"foreach": False} if lib == "torch" else {}
    opt = module.AdamW(ps, lr=1e-2, weight_decay=0.1, **kwargs)
    for step in range(warm):
        for p, g in zip(ps, grads[step]):
            p.grad = g.clone()
        opt.step()
    for p, g in zip(ps, grads[warm]):
        p.grad = g.clone()
    # exec() cannot rebind a function's locals: the change runs in its own namespace.
    scope = dict(globals(), ps=ps, opt=opt, n=n, mode=contextlib.nullcontext())
    exec(change, scope)
    with scope["mode"]:
        opt.step()
    for rest in grads[warm + 1:]:
        for p, g in zip(ps, rest):
            p.grad = g.clone()
        opt.step()
    state = [t for p in ps for k, t in sorted(opt.state[p].items()) if k != "step"]
    counts = opt._plans[0].plan.path_counts() if lib == "genesis" else None
    return [p.detach().clone() for p in ps], state, counts
"""
)


@pytest.mark.parametrize("facts", ["on", "off"])
@pytest.mark.parametrize("warm", [1, 4])
@pytest.mark.parametrize("change", sorted(_CHANGES))
def test_change_between_steps_gives_torchs_numbers(change, warm, facts):
    result = run_case(
        setup=facts_prelude(facts) + _SETUP,
        source=f"""
    ref_p, ref_s, _ = run("torch", {_CHANGES[change]!r}, {warm})
    got_p, got_s, counts = run("genesis", {_CHANGES[change]!r}, {warm})
    close = lambda a, b: all(bool(torch.allclose(x, y, rtol=1e-5, atol=1e-6)) for x, y in zip(a, b))
    report(params=close(got_p, ref_p), state=close(got_s, ref_s) and len(got_s) == len(ref_s), counts=counts)
    """,
    )
    assert result["params"] is True and result["state"] is True
    # The one-call step ran: the steps after the first (which admits), except where the change
    # sends a step to the checked path (a subclass, an inference mode, ...): at least the two
    # after it. A strided gradient stages its parameter (Optimizer._run_staged) for that step
    # and has it admitted again at the next one: then only the warm-up steps.
    assert result["counts"]["one_call"] >= (warm - 1 if change == "grad_strided" else 2)
    if facts == "off":
        assert result["counts"]["batched"] == 0
    elif change == "nothing":
        assert result["counts"]["batched"] == warm  # every step from the fourth on (of warm + 3)


_REFUSALS = {
    # (the change, what the error names)
    "grad_float16_data": ("ps[3].grad.data = ps[3].grad.data.half()", "torch.float16"),
    "grad_float64_data": ("ps[3].grad.data = ps[3].grad.data.double()", "torch.float64"),
    "grad_negated": ("ps[3].grad = torch._neg_view(ps[3].grad.clone())", "resolve_neg"),
    "param_shrunk": ("ps[3].data = ps[3].data[: n // 2]", "parameter 3"),
    "second_group_grad_negated": ("ps[5].grad = torch._neg_view(ps[5].grad.clone())", "resolve_neg"),
}


@pytest.mark.parametrize("facts", ["on", "off"])
@pytest.mark.parametrize("warm", [1, 4])
@pytest.mark.parametrize("change", sorted(_REFUSALS))
def test_refused_change_raises_before_anything_is_modified(change, warm, facts):
    """What the per-call checks refuse, the one-call step and its guard refuse too: the checked
    path then raises its named error before any parameter or state of any group is written."""
    code, named = _REFUSALS[change]
    result = run_case(
        setup=facts_prelude(facts),
        source=f"""
    import torch, genesis
    torch.manual_seed(0)
    n = 33
    ps = [torch.nn.Parameter(torch.randn(n)) for _ in range(6)]
    opt = genesis.optim.AdamW([{{"params": ps[:4]}}, {{"params": ps[4:], "lr": 1e-3}}], lr=1e-2)
    for _ in range({warm}):
        for p in ps:
            p.grad = torch.randn(n)
        opt.step()
    counts = [g.plan.path_counts() for g in opt._plans]
    for p in ps:
        p.grad = torch.randn(n)
    before = [p.detach().clone() for p in ps]
    state = [t.clone() for p in ps for t in opt.state[p].values()]
    {code}
    try:
        opt.step()
        err = None
    except (TypeError, ValueError, RuntimeError) as e:
        err = str(e)
    same = all(bool(torch.equal(p.detach(), b[: p.numel()])) for p, b in zip(ps, before))
    same_state = all(bool(torch.equal(a, b)) for a, b in zip([t for p in ps for t in opt.state[p].values()], state))
    report(err=err, same=same, same_state=same_state, counts=counts)
    """,
    )
    assert result["err"] is not None and named in result["err"]
    assert result["same"] is True and result["same_state"] is True
    if warm == 4:  # the step before the change went through the guard (or the one-call checks)
        assert all(c["batched"] == (1 if facts == "on" else 0) for c in result["counts"])


def test_one_call_step_with_the_gil_released_pins_the_gradients():
    """Large tensors release the GIL during the update (NOTE: [when the GIL is released]): the
    one-call step then takes the read pins after all. Another thread swapping a gradient's
    memory out meanwhile must leave the process alive and the parameter finite (the outcome of
    such a race is unspecified, as in torch). Without the pins this crashed on every run."""
    result = run_case(
        """
    import sys, threading, torch, genesis
    sys.setswitchinterval(1e-6)
    n = 1 << 24  # 64 MB: freed memory of this size is unmapped at once (a read of it crashes)
    ps = [torch.nn.Parameter(torch.zeros(n)) for _ in range(2)]
    opt = genesis.optim.AdamW(ps, lr=1e-3)
    stop = threading.Event()
    spare = torch.ones(n)  # made once: the swap frees the gradient's memory the moment it runs

    def meddle():
        while not stop.is_set():
            g = ps[1].grad
            if g is not None:
                g.data = spare

    for p in ps:
        p.grad = torch.ones(n)
    opt.step()
    meddler = threading.Thread(target=meddle)
    meddler.start()
    try:
        for _ in range(12):
            for p in ps:
                p.grad = torch.ones(n)
            opt.step()
    finally:
        stop.set()
        meddler.join()
    report(finite=all(bool(torch.isfinite(p.detach()).all()) for p in ps), counts=opt._plans[0].plan.path_counts())
    """,
        timeout=600,
    )
    assert result["finite"] is True
    assert result["counts"]["one_call"] >= 1
