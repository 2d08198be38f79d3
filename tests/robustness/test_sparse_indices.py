"""A sparse gradient whose indices point outside its parameter (torch builds such a tensor on
request, with check_invariants=False, and torch's own dense += sparse then writes past the
table's memory) is refused with a ValueError before anything changes, by every optimizer that
takes sparse gradients and on each of their paths (row update, densified, SparseAdam), on the
first step and on one after the plans are cached. Each
case runs in a child interpreter (tests/robustness/child.py): a missed check would write to
memory the step was not handed."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from child import run_case  # noqa: E402

pytest.importorskip("torch")

CASES = {
    "SGD rows": "genesis.optim.SGD(params, lr=0.1)",
    "SGD densified": "genesis.optim.SGD(params, lr=0.1, momentum=0.9)",
    "Adagrad rows": "genesis.optim.Adagrad(params, lr=0.1)",
    "SparseAdam": "genesis.optim.SparseAdam(params)",
}


@pytest.mark.parametrize("index", [100_000_000, -3, "second dim"])
def test_out_of_range_sparse_indices_are_refused_before_anything(index):
    bad = (
        "torch.tensor([[1, 2], [0, 7]])"  # a fully sparse gradient: column 7 of 3
        if index == "second dim"
        else f"torch.tensor([[1, {index}]])"
    )
    values = "torch.ones(2)" if index == "second dim" else "torch.ones(2, 3)"
    report = run_case(
        f"""
        import itertools, warnings, torch, genesis
        warnings.filterwarnings("ignore")
        out = {{}}
        for (case, make), warm in itertools.product({CASES!r}.items(), (False, True)):
            good = torch.nn.Parameter(torch.randn(5, 3))
            table = torch.nn.Parameter(torch.randn(4, 3))
            params = [good, table]
            opt = eval(make)
            if warm:  # a step that caches the plans first
                for p in params:
                    p.grad = torch.sparse_coo_tensor(torch.tensor([[0, 1]]), torch.ones(2, 3), p.shape)
                opt.step()
            steps = [float(opt.state[p]["step"]) for p in params if "step" in opt.state[p]]
            good.grad = torch.sparse_coo_tensor(torch.tensor([[0, 4]]), torch.ones(2, 3), (5, 3))
            table.grad = torch.sparse_coo_tensor({bad}, {values}, (4, 3), check_invariants=False)
            before = [p.detach().clone() for p in params]
            try:
                opt.step()
                error = None
            except ValueError as e:
                error = str(e)
            out[f"{{case}}, warm={{warm}}"] = dict(
                error=error,
                unchanged=all(torch.equal(p.detach(), b) for p, b in zip(params, before)),
                steps_unchanged=steps == [float(opt.state[p]["step"]) for p in params if "step" in opt.state[p]],
            )
        report(**out)
        """
    )
    assert len(report) == 2 * len(CASES)
    for case, found in report.items():
        assert found["error"] is not None and "indices outside its shape (4, 3)" in found["error"], case
        assert "parameter 1 of param group 0" in found["error"], case
        assert found["unchanged"], case
        assert found["steps_unchanged"], case
