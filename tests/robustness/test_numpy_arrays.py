"""NumPy parameters whose byte order or writeability changes after the plan was cached (issue:
memory and data safety, items 2 and 3). Before the fix, a big-endian gradient was read as
~4.6e-41 once the plan was cached, a big-endian parameter received 2.7e23, and read-only
memory was written. Each case must raise a clear error naming the array and change nothing.
Run in a child interpreter: a write to read-only memory backed by `bytes` can crash."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from child import run_case  # noqa: E402

_SETUP = """
import numpy as np, genesis
from genesis.nn import Parameter

def stepped(name="AdamW"):
    '''A parameter and its optimizer after one step (the plan is cached).'''
    p = Parameter(np.linspace(-1, 1, 64, dtype=np.float32))
    opt = getattr(genesis.optim, name)([p], lr=0.1)
    p.grad = np.ones(64, dtype=np.float32)
    opt.step()
    return p, opt

def outcome(opt, p):
    '''Step; report the error (type and message) and whether anything changed.'''
    before = p.data.copy()
    state = {k: np.array(v, copy=True) for k, v in opt.state[p].items()}
    try:
        opt.step()
        err = None
    except (TypeError, ValueError) as e:
        err = f"{type(e).__name__}: {e}"
    changed = not np.array_equal(p.data.astype(np.float64), before.astype(np.float64))
    changed |= any(not np.array_equal(np.asarray(v), state[k]) for k, v in opt.state[p].items())
    return dict(err=err, changed=bool(changed))
"""


def _check_refused(result, *words):
    assert result["changed"] is False, result
    assert result["err"] is not None, result
    for word in words:
        assert word in result["err"], result


def test_big_endian_gradient_after_caching():
    result = run_case(
        setup=_SETUP,
        source="""
    p, opt = stepped()
    p.grad = np.ones(64, dtype=">f4")
    report(**outcome(opt, p))
    """,
    )
    _check_refused(result, "ValueError", "gradient", "byte order")


def test_big_endian_parameter_after_caching():
    result = run_case(
        setup=_SETUP,
        source="""
    p, opt = stepped()
    p.data = p.data.astype(">f4")
    p.grad = np.ones(64, dtype=">f4")
    report(**outcome(opt, p))
    """,
    )
    _check_refused(result, "ValueError", "parameter 0 of param group 0", "byte order")


def test_parameter_made_read_only_after_caching():
    result = run_case(
        setup=_SETUP,
        source="""
    p, opt = stepped()
    p.data.flags.writeable = False
    p.grad = np.ones(64, dtype=np.float32)
    report(**outcome(opt, p))
    """,
    )
    _check_refused(result, "ValueError", "read-only")


def test_parameter_backed_by_immutable_bytes():
    result = run_case(
        setup=_SETUP,
        source="""
    p, opt = stepped()
    p.data = np.frombuffer(bytes(256), dtype=np.float32)
    p.grad = np.ones(64, dtype=np.float32)
    report(**outcome(opt, p))
    """,
    )
    _check_refused(result, "ValueError", "read-only")


@pytest.mark.parametrize("change", ["read_only", "big_endian", "dtype_view"])
def test_state_array_changed_after_caching(change):
    """A state array made read-only, replaced by a big-endian copy, or reinterpreted in place
    (`a.dtype = ...` keeps the buffer and changes what the bytes mean)."""
    result = run_case(
        setup=_SETUP,
        source=f"""
    p, opt = stepped()
    change = {change!r}
    if change == "read_only":
        opt.state[p]["exp_avg"].flags.writeable = False
    elif change == "big_endian":
        opt.state[p]["exp_avg"] = opt.state[p]["exp_avg"].astype(">f4")
    else:
        opt.state[p]["exp_avg"].dtype = np.int32
    p.grad = np.ones(64, dtype=np.float32)
    report(**outcome(opt, p))
    """,
    )
    _check_refused(result, "ValueError", "exp_avg")


def test_native_arrays_still_step_after_a_refusal():
    """Fixing the array lets training continue from where it was."""
    result = run_case(
        setup=_SETUP,
        source="""
    p, opt = stepped()
    p.grad = np.ones(64, dtype=">f4")
    first = outcome(opt, p)
    p.grad = p.grad.astype(np.float32)
    before = p.data.copy()
    opt.step()
    report(first=first["err"] is not None, moved=bool((p.data != before).all()),
           step=float(opt.state[p]["step"]))
    """,
    )
    assert result == {"first": True, "moved": True, "step": 2.0}
