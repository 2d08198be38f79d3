"""genesis.set_num_threads is one count for the whole process (as torch.set_num_threads), and a
process forked after genesis ran a team of threads runs on one thread instead of hanging (NOTE:
[threads and fork] in csrc/cpu/threads.cpp). The fork cases run in a child interpreter
(tests/robustness/child.py), whose forked grandchild is killed if it hangs."""

import os
import sys
import threading

import pytest

import genesis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from child import run_case  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

# Forks after `parent_step` (a genesis step of `parent_numel` elements on two threads); the
# grandchild reports its thread count and whether more threads are refused, steps a parameter of
# 2^20 elements and saves it; the child compares that with the same step of its own.
FORK_CASE = """
import os, shutil, signal, tempfile, time
import numpy as np
import genesis

def adamw_step(numel):
    p = genesis.nn.Parameter(np.linspace(-1.0, 1.0, numel, dtype=np.float32))
    p.grad = np.cos(np.arange(numel, dtype=np.float32))
    opt = genesis.optim.AdamW([p], lr=1e-2, weight_decay=0.1)
    opt.step()
    opt.step()
    return p.data.copy()

genesis.set_num_threads(2)
adamw_step(PARENT_NUMEL)
out = tempfile.mkdtemp()
pid = os.fork()
if pid == 0:
    try:
        threads = genesis.get_num_threads()
        try:
            genesis.set_num_threads(2)
            refused = ""
        except RuntimeError as e:
            refused = str(e)
        np.save(os.path.join(out, "p.npy"), adamw_step(1 << 20))
        with open(os.path.join(out, "info.txt"), "w") as f:
            f.write(f"{threads}\\n{refused}")
        os._exit(0)
    except BaseException:
        os._exit(3)
deadline = time.monotonic() + 120
status = None
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    shutil.rmtree(out, ignore_errors=True)
    report(hung=True)
    raise SystemExit(0)
threads, refused = open(os.path.join(out, "info.txt")).read().split("\\n", 1)
same = bool(np.array_equal(np.load(os.path.join(out, "p.npy")), adamw_step(1 << 20)))
shutil.rmtree(out)
report(hung=False, status=status, threads=int(threads), refused=refused, same=same)
"""


def test_a_child_forked_after_a_team_runs_on_one_thread_instead_of_hanging():
    got = run_case(FORK_CASE.replace("PARENT_NUMEL", str(1 << 20)), timeout=300)
    assert got["hung"] is False and got["status"] == 0
    assert got["threads"] == 1
    assert "forked" in got["refused"] and "spawn" in got["refused"]
    assert got["same"]  # one thread gives the same bits as two


def test_a_child_forked_before_any_team_keeps_its_threads():
    got = run_case(FORK_CASE.replace("PARENT_NUMEL", "16"), timeout=300)  # below the parallel threshold
    assert got["hung"] is False and got["status"] == 0
    assert got["threads"] == 2 and got["refused"] == ""
    assert got["same"]


def test_the_thread_count_is_one_for_the_whole_process():
    """Set in one Python thread, seen (and used) in another, as torch.set_num_threads."""
    before = genesis.get_num_threads()
    seen = []
    try:
        genesis.set_num_threads(1)
        worker = threading.Thread(target=lambda: (seen.append(genesis.get_num_threads()), genesis.set_num_threads(3)))
        worker.start()
        worker.join()
        assert seen == [1]
        assert genesis.get_num_threads() == 3
    finally:
        genesis.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2])
def test_fewer_than_one_thread_is_refused(bad):
    before = genesis.get_num_threads()
    with pytest.raises(ValueError, match="at least 1"):
        genesis.set_num_threads(bad)
    with pytest.raises(ValueError, match="at least 1"):
        genesis._C.set_num_threads(bad)  # the core checks too (the C++ API's callers)
    assert genesis.get_num_threads() == before


# Hogwild with Adagrad, as torch's Adagrad.share_memory() allows: the parent steps once, moves
# the model and the optimizer's sums into shared memory, and forks a grandchild that takes three
# steps; the parent then sees the grandchild's parameters and sums, keeps its own step count, and
# steps once more. Run with torch's Adagrad and genesis's (float32 and 8-bit sums), and compared
# with one process taking the grandchild's steps itself.
HOGWILD_CASE = """
import os, signal, time
import torch
import genesis

# torch's own thread pool does not survive fork either (its step hangs in the grandchild when
# the parent ran a parallel region), so torch runs on one thread here, as Hogwild examples do.
torch.set_num_threads(1)

def grads(model, k):
    g = torch.Generator().manual_seed(k)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)

def run(cls, share, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(100, 80)  # 8,000 weights: above the 8-bit state's threshold
    opt = cls(model.parameters(), lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1, **kw)
    grads(model, 0)
    opt.step()
    if not share:  # the grandchild's steps taken here instead
        for k in (1, 2, 3):
            grads(model, k)
            opt.step()
    else:
        model.share_memory()
        opt.share_memory()
        pid = os.fork()
        if pid == 0:
            try:
                for k in (1, 2, 3):
                    grads(model, k)
                    opt.step()
                os._exit(0)
            except BaseException:
                os._exit(3)
        deadline = time.monotonic() + 120
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            time.sleep(0.02)
        assert status == 0, status
    state = opt.state[model.weight]
    seen = [model.weight.detach().clone()] + [state[k].clone() for k in sorted(state) if "sum" in k]
    step_before = float(state["step"])
    grads(model, 4)
    opt.step()  # the parent's own step count
    return seen, step_before, model.weight.detach().clone()

out = {}
for name, cls, kw in (
    ("torch", torch.optim.Adagrad, {}),
    ("genesis", genesis.optim.Adagrad, {}),
    ("genesis8", genesis.optim.Adagrad, {"state_dtype": "int8"}),
):
    shared, alone = run(cls, True, **kw), run(cls, False, **kw)
    if shared is None:
        report(hung=name)
        raise SystemExit(0)
    out[name] = dict(
        steps=(shared[1], alone[1]),
        sees_child=all(torch.equal(a, b) for a, b in zip(shared[0], alone[0])),
        shared=shared,
    )
report(
    hung=None,
    steps={k: v["steps"] for k, v in out.items()},
    sees_child={k: v["sees_child"] for k, v in out.items()},
    vs_torch=float((out["genesis"]["shared"][2] - out["torch"]["shared"][2]).abs().max()),
    moved_8bit=float((out["genesis8"]["shared"][2] - out["genesis8"]["shared"][0][0]).abs().max()),
)
"""


def test_adagrad_share_memory_lets_forked_processes_share_the_sums_as_torch():
    pytest.importorskip("torch")
    got = run_case(HOGWILD_CASE, timeout=300)
    assert got["hung"] is None
    # torch: the parent sees the grandchild's parameters and sums, and keeps its own step (1, not 4)
    assert got["steps"] == {name: [1.0, 4.0] for name in ("torch", "genesis", "genesis8")}
    assert got["sees_child"] == {"torch": True, "genesis": True, "genesis8": True}
    # the parent's own step after the grandchild's, with its own step count: torch's numbers
    assert got["vs_torch"] <= 1e-6
    assert got["moved_8bit"] > 0
