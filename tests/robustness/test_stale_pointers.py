"""The cached fast path never trusts a pointer the user could have changed (issue: memory and
data safety; NOTE: [pinned storage] in csrc/python/bindings.cpp).

Each case runs in a child interpreter (tests/robustness/child.py): before the fix most of them
crashed the interpreter or silently computed float32 math on float16 memory. Where torch can do
the same thing, genesis must give torch's numbers; where torch refuses (a state dtype that no
longer matches), genesis must give the numbers of a fresh optimizer loaded with the same state,
bit for bit: the stale plan may not change the answer.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from child import run_case  # noqa: E402

torch = pytest.importorskip("torch")

# A fresh optimizer with the same state, stepped beside the one whose plan went stale.
_TWIN = """
import copy, torch, genesis

def twin_step(params, opt, cls, **kw):
    '''Copies of `params` (with their grads) in a new optimizer loaded with opt's state.'''
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for t, p in zip(twins, params):
        t.grad = None if p.grad is None else p.grad.detach().clone()
    fresh = cls(twins, **kw)
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    fresh.step()
    return twins, fresh

def same_bits(a, b):
    a, b = a.detach().reshape(-1), b.detach().reshape(-1)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    view = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
            torch.float64: torch.int64}[a.dtype]
    return bool(torch.equal(a.view(view), b.view(view)))
"""


@pytest.mark.parametrize("n", [65536, 8])
def test_parameter_dtype_changed_at_the_same_address(n):
    """`p.data = p.data.double(); p.data = p.data.half()` after a step: the new float16 storage
    may land where the float32 one was. The step must update float16 memory as float16."""
    result = run_case(
        setup=_TWIN,
        source=f"""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn({n}))
    opt = genesis.optim.AdamW([p], lr=1e-2)
    p.grad = torch.randn({n})
    opt.step()
    p.data = p.data.double()
    p.data = p.data.half()
    p.grad = torch.randn({n}).half()
    twins, _ = twin_step([p], opt, genesis.optim.AdamW, lr=1e-2)
    opt.step()
    report(dtype=str(p.dtype), finite=bool(torch.isfinite(p).all()), same=same_bits(p, twins[0]))
    """,
    )
    assert result == {"dtype": "torch.float16", "finite": True, "same": True}


def test_float16_view_of_float32_parameter():
    """`p.data = p.data.view(torch.float16)[:n]` keeps the data pointer and the element count:
    only the dtype says it is another array now."""
    result = run_case(
        setup=_TWIN,
        source="""
    torch.manual_seed(0)
    n = 4096
    p = torch.nn.Parameter(torch.randn(n) * 1e-3)
    opt = genesis.optim.AdamW([p], lr=1e-2)
    p.grad = torch.randn(n)
    opt.step()
    before = p.data_ptr()
    p.data = p.data.view(torch.float16)[:n]
    p.grad = torch.randn(n).half()
    twins, _ = twin_step([p], opt, genesis.optim.AdamW, lr=1e-2)
    opt.step()
    report(same_ptr=p.data_ptr() == before, same=same_bits(p, twins[0]))
    """,
    )
    assert result == {"same_ptr": True, "same": True}


def test_module_double_then_half():
    """`model.double(); model.half()` on an nn.Linear(512, 512) after a step."""
    result = run_case(
        setup=_TWIN,
        source="""
    torch.manual_seed(0)
    model = torch.nn.Linear(512, 512)
    opt = genesis.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 512)).sum().backward()
    opt.step()
    model.double()
    model.half()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    params = list(model.parameters())
    twins, _ = twin_step(params, opt, genesis.optim.AdamW, lr=1e-3)
    opt.step()
    report(same=[same_bits(p, t) for p, t in zip(params, twins)])
    """,
    )
    assert result == {"same": [True, True]}


@pytest.mark.parametrize("n", [65536, 8])
def test_state_storage_replaced_as_torch_users_do(n):
    """The "move optimizer state to a device" recipe, `v.data = v.data.clone()` for every state
    tensor: torch then updates the new tensors, so must genesis (the plan used to write into the
    freed ones). Parameters and state equal torch's after further steps."""
    result = run_case(f"""
    import torch, genesis
    torch.manual_seed(0)
    init = torch.randn({n})
    grads = [torch.randn({n}) for _ in range(4)]
    out = {{}}
    for lib in ("torch", "genesis"):
        p = torch.nn.Parameter(init.clone())
        module = torch.optim if lib == "torch" else genesis.optim
        opt = module.AdamW([p], lr=1e-2)
        p.grad = grads[0].clone()
        opt.step()
        for v in opt.state[p].values():
            v.data = v.data.clone()
        for g in grads[1:]:
            p.grad = g.clone()
            opt.step()
        out[lib] = (p.detach().clone(), {{k: v.clone() for k, v in opt.state[p].items()}})
    (pt, st), (pg, sg) = out["torch"], out["genesis"]
    report(param=bool(torch.allclose(pg, pt, rtol=1e-5, atol=1e-6)),
           state={{k: bool(torch.allclose(sg[k], st[k], rtol=1e-5, atol=1e-6)) for k in st}})
    """)
    assert result == {"param": True, "state": {"step": True, "exp_avg": True, "exp_avg_sq": True}}


def test_state_dtype_reinterpreted_in_place_is_refused():
    """A state tensor re-pointed at a view of another dtype (same address): the step must see it
    and refuse it (torch would fail too), changing nothing."""
    result = run_case("""
    import torch, genesis
    p = torch.nn.Parameter(torch.randn(64))
    opt = genesis.optim.Adam([p])
    p.grad = torch.randn(64)
    opt.step()
    before = p.detach().clone()
    v = opt.state[p]["exp_avg"]
    v.data = v.data.view(torch.int32)
    p.grad = torch.randn(64)
    try:
        opt.step()
        err = None
    except (TypeError, ValueError) as e:
        err = type(e).__name__ + ": " + str(e)
    report(err=err, unchanged=bool(torch.equal(p.detach(), before)))
    """)
    assert result["unchanged"] is True
    assert result["err"] is not None and "exp_avg" in result["err"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_gradient_repointed_to_another_dtype_is_refused(dtype):
    """`p.grad.data = p.grad.data.half()` after a step keeps the gradient object that torch
    checked when it was assigned, with memory of another dtype: read as float32, a float16
    gradient was read past its end (and the step silently computed garbage). Like torch's
    foreach and fused steps, genesis refuses it, before anything is modified; a gradient of the
    right dtype then steps as usual."""
    result = run_case(f"""
    import torch, genesis
    p = torch.nn.Parameter(torch.ones(4))
    opt = genesis.optim.SGD([p], lr=1.0)
    p.grad = torch.ones(4)
    opt.step()
    p.grad.data = torch.full((4,), 2.0, dtype=torch.{dtype})
    try:
        opt.step()
        err = None
    except TypeError as e:
        err = str(e)
    unchanged = p.tolist()
    p.grad = torch.full((4,), 2.0)
    opt.step()
    report(err=err, unchanged=unchanged, after=p.tolist())
    """)
    assert result["err"] is not None and "torch." + dtype in result["err"] and "torch.float32" in result["err"]
    assert result["unchanged"] == [0.0] * 4
    assert result["after"] == [-2.0] * 4


def test_parameter_shrunk_in_place_is_checked_again():
    """`p.data = p.data[:2]` keeps the data pointer and the dtype: only the element count says
    the parameter is smaller now. A stale gradient of the old size must then be refused as
    torch refuses it (a shape mismatch), not applied to memory the parameter no longer shows."""
    result = run_case("""
    import torch, genesis
    out = {}
    for lib in (torch.optim, genesis.optim):
        p = torch.nn.Parameter(torch.ones(4))
        opt = lib.SGD([p], lr=1.0)
        p.grad = torch.ones(4)
        opt.step()
        storage = p.untyped_storage()
        p.data = p.data[:2]
        try:
            opt.step()
            err = None
        except (RuntimeError, ValueError) as e:
            err = type(e).__name__
        whole = torch.empty(0).set_(storage).tolist()  # the four elements, hidden ones included
        p.grad = torch.full((2,), 2.0)
        opt.step()
        out[lib.__name__] = dict(err=err, whole=whole, after=p.tolist())
    report(**out)
    """)
    assert result["torch.optim"]["err"] == "RuntimeError"
    assert result["genesis.optim"]["err"] == "ValueError"
    for lib in ("torch.optim", "genesis.optim"):
        assert result[lib]["whole"] == [0.0] * 4
        assert result[lib]["after"] == [-2.0] * 2


# What the meddling thread does in the race below. grad_none drops the gradient's last
# reference only after `p.grad` has forgotten it: torch 2.13 releases the GIL while it frees a
# large tensor (THPVariable_clear, to munmap without it) and `p.grad = None` frees the old
# gradient before the attribute is cleared, so a thread that reads `p.grad` in that window gets a
# tensor over freed memory (torch.optim and torch's clip functions crash on it as well). Memory
# that the core reads is still freed under it by `del g` if the core does not pin it.
_MEDDLE = {
    "grad_none": "g = p.grad\np.grad = None\ndel g",
    "data_replaced": "p.data = torch.zeros(n)",
    "state_replaced": "for v in list(opt.state[p].values()):\n    v.data = v.data.clone()",
    # the gradient object stays, its memory is swapped out (and freed) under it
    "grad_data_replaced": "g = p.grad\nif g is not None:\n    g.data = torch.empty(n)",
}


@pytest.mark.parametrize("what", sorted(_MEDDLE))
def test_other_thread_changes_the_group_during_step(what):
    """Another thread that drops a gradient, re-points a parameter or a gradient or replaces
    state while step() or a clip runs (with the GIL released for a 64 MB parameter), or between
    the gathering of the gradients and the update, or between the clip's norm and its scaling,
    must not make the core touch freed memory (NOTE: [pinned storage], [read pins]). The
    outcome of such a race is unspecified, as in torch; the process must survive, each norm be
    that of the ones or of the swapped-in zeros (fresh pages), and the parameter stay finite.
    Before the read pins, grad_data_replaced crashed on every run. A short switch interval makes
    the other thread run often."""
    result = run_case(
        f"""
    import sys, threading, torch, genesis
    sys.setswitchinterval(1e-6)
    n = 1 << 24
    p = torch.nn.Parameter(torch.zeros(n))
    opt = genesis.optim.AdamW([p], lr=1e-3)
    stop = threading.Event()

    def meddle():
        while not stop.is_set():
            exec({_MEDDLE[what]!r})

    norms = []
    meddler = threading.Thread(target=meddle)
    p.grad = torch.ones(n)
    opt.step()
    meddler.start()
    try:
        for _ in range(12):
            try:
                p.grad = torch.ones(n)
                norms.append(float(genesis.nn.utils.clip_grad_norm_([p], 1.0)))
                genesis.nn.utils.clip_grad_value_([p], 0.5)
                p.grad = torch.ones(n)
                norms.append(float(opt.clip_grad_norm_(1.0)))
                opt.step()
                p.grad = torch.ones(n)
                opt.step()  # no pending clip holds the gradient here
            except (TypeError, ValueError, RuntimeError):
                pass  # a clear error is an acceptable outcome of the race; a crash is not
    finally:
        stop.set()
        meddler.join()
    report(norms_ok=all(v in (0.0, float(n) ** 0.5) for v in norms), finite=bool(torch.isfinite(p.detach()).all()))
    """,
        timeout=600,
    )
    assert result == {"norms_ok": True, "finite": True}


# Every way user code can reach a state tensor and re-point it; torch then uses the new tensors.
_REPOINT = {
    "values": "for v in opt.state[p].values(): v.data = v.data.clone()",
    "items": "for _, v in opt.state[p].items(): v.data = v.data.clone()",
    "getitem": "for k in list(opt.state[p]): opt.state[p][k].data = opt.state[p][k].data.clone()",
    "get": "opt.state[p].get('exp_avg').data = opt.state[p].get('exp_avg').data.clone()",
    "dict_copy": "for v in dict(opt.state[p]).values(): v.data = v.data.clone()",
    "unpacked": "for v in {**opt.state[p]}.values(): v.data = v.data.clone()",
    "state_dict": "for v in opt.state_dict()['state'][0].values():\n    v.data = v.data.clone() if v.dim() else v.data",
    "held_since_first_step": "held.data = held.data.clone()",
}


@pytest.mark.parametrize("how", sorted(_REPOINT))
def test_state_repointed_through_any_accessor(how):
    """The plan only re-checks state arrays after user code could have reached them (NOTE:
    [pinned storage]): whichever way the user got the tensor, genesis must use the new one."""
    result = run_case(f"""
    import torch, genesis
    torch.manual_seed(0)
    init = torch.randn(64)
    grads = [torch.randn(64) for _ in range(5)]
    out = {{}}
    for lib in ("torch", "genesis"):
        module = torch.optim if lib == "torch" else genesis.optim
        p = torch.nn.Parameter(init.clone())
        opt = module.Adam([p], lr=1e-2)
        p.grad = grads[0].clone()
        opt.step()
        held = opt.state[p]["exp_avg"]
        p.grad = grads[1].clone()
        opt.step()
        exec({_REPOINT[how]!r})
        del held
        for g in grads[2:]:
            p.grad = g.clone()
            opt.step()
        # The re-pointed tensors are the ones that were updated.
        out[lib] = {{k: dict.__getitem__(opt.state[p], k).clone() for k in ("exp_avg", "exp_avg_sq")}}
        out[lib]["param"] = p.detach().clone()
    report(**{{k: bool(torch.allclose(out["genesis"][k], out["torch"][k], rtol=1e-5, atol=1e-7))
              for k in out["torch"]}})
    """)
    assert result == {"exp_avg": True, "exp_avg_sq": True, "param": True}


def test_plain_training_loop_rechecks_no_state_per_step():
    """The reason for the exposure rule: a loop that never reads the state pays nothing per
    step for it, while a state tensor the user keeps is re-checked every step."""
    import genesis

    p = torch.nn.Parameter(torch.randn(8))
    opt = genesis.optim.AdamW([p])
    for _ in range(3):
        p.grad = torch.randn(8)
        opt.step()
    plan = opt._plans[0].plan
    assert plan.watched() == 0
    kept = opt.state[p]["exp_avg"]
    p.grad = torch.randn(8)
    opt.step()
    assert plan.watched() == 1
    del kept
    p.grad = torch.randn(8)
    opt.step()
    assert plan.watched() == 0
