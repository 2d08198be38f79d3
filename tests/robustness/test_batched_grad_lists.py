"""Gradient lists described through a guard (NOTE: [batched gradient lists] in
csrc/python/bindings.cpp): once genesis's clip functions have seen two lists of the same
description, a later list of the same dtypes, sizes and device is checked with one torch guard
instead of a dozen calls per tensor. The guard may never accept what the per-call checks would
describe differently, nor miss a change. Each case clips three lists (the third through the
guard), then changes one thing in the fourth, then clips two more; the numbers and errors must
be the same with the guard on and off (GENESIS_TENSOR_FACTS), and torch's (where torch takes
the gradients). Each runs in a child interpreter (tests/robustness/child.py): a stale pointer may
crash it.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from child import ODD_TENSORS, facts_prelude, run_case  # noqa: E402

torch = pytest.importorskip("torch")

# What is done to the parameters `ps` (their gradients: n elements each, the last one empty)
# before the fourth clip; `mode` is the context the clip runs in.
_CHANGES = {
    "nothing": "pass",
    "grad_none": "ps[3].grad = None",
    "grad_float64": "ps[3] = torch.nn.Parameter(ps[3].detach().double())\nps[3].grad = torch.randn(n).double()",
    "grad_data_float16": "ps[3].grad.data = ps[3].grad.data.half()",
    "grad_data_shrunk": "ps[3].grad.data = ps[3].grad.data[: n // 2].clone()",
    "grad_data_offset_view": "ps[3].grad.data = torch.randn(n + 1)[1:]",
    "grad_data_strided": "ps[3].grad.data = torch.randn(2 * n)[::2]",
    "grad_of_a_subclass": "ps[3].grad = ps[3].grad.as_subclass(Sub)",
    "grad_requires_grad": "ps[3].grad = ps[3].grad.detach().clone().requires_grad_()",
    "grad_negated": "ps[3].grad = torch._neg_view(ps[3].grad.clone())",
    "empty_grad_float64": "ps[5].grad.data = torch.empty(0, dtype=torch.float64)",
    "in_function_mode": "mode = Passthrough()",
}

_OPS = {
    "clip_grad_norm_": "lib.clip_grad_norm_(ps, 1.0)",
    "clip_grad_value_": "lib.clip_grad_value_(ps, 0.5)",
    "get_total_norm": "lib.get_total_norm([p.grad for p in ps if p.grad is not None])",
}

# Child source: `paths` records which path each list genesis's clips described took (the core's
# BufferList.batched; None where the core refused the list as a whole).
_RECORD_PATHS = """
from genesis.nn.utils import clip_grad

paths = []
_plain = clip_grad._plain_buffers
def _recording(grads, writeable):
    buffers = _plain(grads, writeable)
    paths.append(None if buffers is None else buffers.batched)
    return buffers
clip_grad._plain_buffers = _recording
"""

_SETUP = (
    ODD_TENSORS
    + _RECORD_PATHS
    + """
import contextlib, genesis

def run(lib, op, change, n=33):
    results = []
    for call in range(6):
        torch.manual_seed(call)
        ps = [torch.nn.Parameter(torch.zeros(n)) for _ in range(5)] + [torch.nn.Parameter(torch.zeros(0))]
        for p in ps:
            p.grad = torch.randn(p.numel()) * 2
        # exec() cannot rebind a function's locals: the change runs in its own namespace.
        scope = dict(globals(), ps=ps, n=n, mode=contextlib.nullcontext())
        if call == 3:
            exec(change, scope)
        mode = scope["mode"]
        try:
            with mode:
                out = eval(op)
            out = None if out is None else float(out)
            results.append([out] + [p.grad.tolist() if p.grad is not None else None for p in ps])
        except (TypeError, ValueError, RuntimeError) as e:
            results.append(type(e).__name__ + ": " + str(e))
    return results
"""
)


@pytest.mark.parametrize("change", sorted(_CHANGES))
def test_changed_gradient_list_is_described_as_without_the_guard(change):
    results = {}
    for facts in ("on", "off"):
        results[facts] = run_case(
            setup=facts_prelude(facts) + _SETUP,
            source=f"""
    out = {{}}
    for op, code in {_OPS!r}.items():
        paths.clear()
        got = run(genesis.nn.utils, code, {_CHANGES[change]!r})
        out[op] = dict(got=got, want=run(torch.nn.utils, code, {_CHANGES[change]!r}), paths=list(paths))
    report(**out)
    """,
        )
    for op in _OPS:
        on, off = results["on"][op], results["off"][op]
        # Bit for bit the same with the guard on and off, errors included.
        assert on["got"] == off["got"], op
        # torch's numbers (torch rounds a float16 gradient's norm to float16 before it joins
        # the total).
        rel = 2e-3 if "float16" in change else 1e-5
        for got, want in zip(on["got"], on["want"]):
            assert not isinstance(got, str), got
            if isinstance(want, str):  # torch's foreach kernels refuse negative views
                assert change == "grad_negated" and "negation" in want
                continue
            for g, w in zip(got, want):
                if g is None or w is None:
                    assert g is w
                else:
                    assert g == pytest.approx(w, rel=rel, abs=1e-6), op
        # The guard was used: by the third list of the same description (the first op's; the
        # later ops find it kept), and on every later one when nothing changes.
        assert off["paths"].count(True) == 0
        assert on["paths"][2] is True
        if change == "nothing":
            first = op == next(iter(_OPS))
            assert on["paths"] == [not first] * 2 + [True] * 4
        if change == "in_function_mode":
            assert on["paths"][3] is False  # a mode's Python code may run on tensor methods


def test_guard_kept_per_description():
    """Lists of several descriptions (a model clipped group by group) each keep their guard; a
    fifth description evicts the oldest."""
    result = run_case(
        """
    import torch, genesis
    from genesis import _C

    genesis.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.zeros(1))], 1.0)  # registers torch
    def batched(sizes):
        grads = [torch.randn(s) for s in sizes]
        b = _C.BufferList(grads, False, True)
        want = float(torch.linalg.vector_norm(torch.cat(grads).double()))
        assert abs(b.norm(2.0) - want) <= 1e-12 * want
        return b.batched
    shapes = [[3, 4], [5], [3, 4, 6], [7, 7], [9]]
    first = [[batched(s) for _ in range(3)] for s in shapes[:4]]
    again = [batched(s) for s in shapes[:4]]
    report(first=first, again=again, fifth=[batched(shapes[4]) for _ in range(3)],
           after=[batched(s) for s in shapes[:4]])
    """
    )
    assert result["first"] == [[False, False, True]] * 4
    assert result["again"] == [True] * 4
    assert result["fifth"] == [False, False, True]
    assert result["after"] == [False, True, True, True]  # the oldest was evicted


def test_alternating_descriptions_take_their_guards():
    """Call sites that alternate lists of different descriptions (a clip per param group, a norm
    for logging) each get their guard once their description comes back, not only when the same
    description comes twice in a row."""
    result = run_case(
        """
    import torch, genesis
    from genesis import _C

    genesis.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.zeros(1))], 1.0)  # registers torch
    paths = []
    for _ in range(3):
        for sizes in ([3, 4], [5], [6, 7, 8]):
            paths.append(_C.BufferList([torch.randn(s) for s in sizes], False, True).batched)
    report(paths=paths)
    """
    )
    assert result["paths"] == [False] * 6 + [True] * 3


def test_gradients_swapped_by_another_thread_while_a_guarded_list_is_clipped():
    """Another thread swapping the memory of a gradient while guarded lists of it are described
    and clipped (with the GIL released for 64 MB gradients) must leave the process alive and
    every norm one of the two possible values (NOTE: [read pins]: the guard's path pins what it
    reads as the per-call path does). The outcome of the race is unspecified, as in torch."""
    result = run_case(
        setup=_RECORD_PATHS,
        source="""
    import sys, threading, torch, genesis
    sys.setswitchinterval(1e-6)
    n = 1 << 24
    ps = [torch.nn.Parameter(torch.zeros(n)) for _ in range(2)]
    stop = threading.Event()
    spare = torch.zeros(n)

    def meddle():
        while not stop.is_set():
            g = ps[1].grad
            if g is not None:
                g.data = spare

    norms = []
    for p in ps:
        p.grad = torch.ones(n)
    genesis.nn.utils.clip_grad_norm_(ps, 1.0)
    meddler = threading.Thread(target=meddle)
    meddler.start()
    try:
        for _ in range(12):
            for p in ps:
                p.grad = torch.ones(n)
            norms.append(float(genesis.nn.utils.clip_grad_norm_(ps, 1.0)))
            genesis.nn.utils.clip_grad_value_(ps, 0.5)
    finally:
        stop.set()
        meddler.join()
    # the norm of one or of two gradients of ones, as float32 (the gradients' dtype)
    possible = [torch.tensor(float(k * n) ** 0.5).item() for k in (1, 2)]
    report(norms_ok=all(v in possible for v in norms), batched=True in paths)
    """,
        timeout=600,
    )
    assert result == {"norms_ok": True, "batched": True}
