"""Adagrad on the compiled core."""

from .. import _interop
from . import _quantized
from ._rules import RuleOptimizer
from ._sparse import like
from .optimizer import _new_state_array, as_float, precision_defaults


class Adagrad(RuleOptimizer, rule="adagrad"):
    """torch.optim.Adagrad's update.

    ``g += wd*p``; ``sum += g^2`` (``sum`` starts at ``initial_accumulator_value``);
    ``p -= lr / (1 + (t-1)*lr_decay) * g / (sqrt(sum) + eps)``. State: ``step``, ``sum``.
    As in torch, the constructor creates the state of every parameter (``step`` 0, ``sum``
    filled with ``initial_accumulator_value``), so a state_dict has torch's layout from the
    start; parameters of groups added later get theirs with their first step.

    ``sum`` always starts at the constructor's ``initial_accumulator_value``
    (``optimizer.defaults``): a param group's own value is kept in the group (and its
    state_dict) but never read, as in torch (docs/semantics.md#adagrads-initial-accumulator).

    torch sparse gradients (``nn.Embedding(sparse=True)``) update only their entries, as
    torch's Adagrad does (docs/semantics.md#sparse-gradients); with ``weight_decay`` they raise
    torch's RuntimeError.
    """

    _eager_state = True
    _supports_sparse = True

    def _initial_sum(self):
        """The value every ``sum`` starts at: the optimizer's default, whatever the group says
        (torch's Adagrad reads ``self.defaults["initial_accumulator_value"]``, in its
        constructor and for parameters of groups added later alike)."""
        return as_float(self.defaults["initial_accumulator_value"])

    def _option_source(self, group):
        # The core starts a fresh accumulator (a group added later) at the options' value.
        key = "initial_accumulator_value"
        default = self.defaults[key]
        return group if group.get(key) is default else {**group, key: default}

    def _check_sparse_grad(self, group, where):
        if as_float(group["weight_decay"]) != 0.0:
            raise RuntimeError(f"weight_decay option is not compatible with sparse gradients ({where})")

    def _sparse_rows(self, group):
        return True

    def _update_rows(self, group, param, grad):
        """torch's sparse Adagrad step, operation for operation (its numbers, bit for bit):
        the sum grows at the gradient's entries, and only they move."""
        state = self._state[param]  # internal reads and writes: no staleness notice (_state.py)
        if dict.get(state, "step") is None:  # a group added later, or state loaded without it
            dict.__setitem__(state, "step", _interop.new_step(param))
        if dict.get(state, "sum") is None:
            initial = param.new_empty(param.shape).fill_(self._initial_sum())
            dict.__setitem__(state, "sum", initial)
        step = dict.__getitem__(state, "step")
        step += 1
        clr = as_float(group["lr"], "lr") / (1 + (_interop.to_float(step) - 1) * as_float(group["lr_decay"]))
        if group["maximize"]:
            grad = -grad
        grad = grad.coalesce()  # the update is not linear: each entry must appear once
        indices, values = grad._indices(), grad._values()
        total = dict.__getitem__(state, "sum")
        # Built as torch's _make_sparse builds them: not flagged coalesced.
        total.add_(like(grad, indices, values.pow(2), is_coalesced=False))
        std = total.sparse_mask(grad)._values().sqrt_().add_(as_float(group["eps"]))
        param.add_(like(grad, indices, values / std, is_coalesced=False), alpha=-clr)

    def __init__(
        self,
        params,
        lr=1e-2,
        lr_decay=0,
        weight_decay=0,
        initial_accumulator_value=0,
        eps=1e-10,
        foreach=None,
        *,
        maximize=False,
        differentiable=False,
        fused=None,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                arr = _interop.core_view(_interop.array_of(p))
                code, _ = self._storage(group, arr)
                state = self.state[p]
                state["step"] = _interop.new_step(arr)
                if code == _interop.UINT8:  # 8-bit state: the initial value, quantized
                    state["sum"], state["sum_absmax"] = _quantized.filled(arr, self._initial_sum(), unsigned=True)
                    continue
                total = _new_state_array(p, arr, code)
                # Through the real view: a complex parameter's sum starts at init + init*j, as torch's.
                _interop.core_view(total)[...] = self._initial_sum()
                state["sum"] = total

    def share_memory(self):
        """Move every ``sum`` (and, with 8-bit state, its block scales) into shared memory, as
        torch's ``Adagrad.share_memory()``: processes forked afterwards (Hogwild training over
        a model after ``model.share_memory()``) then accumulate into one ``sum``. Each process
        keeps its own ``step``, as with torch. The arrays move to new memory, so the state is
        read through ``self.state`` (the next step re-checks the pointers it cached).
        NumPy state cannot be moved into shared memory in place: a TypeError, raised before
        any array moves."""
        names = ("sum", _quantized.absmax_name("sum"))
        arrays = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                arrays.extend(state[name] for name in names if name in state)
        for arr in arrays:
            if not _interop.is_torch(arr):
                raise TypeError(
                    f"Adagrad.share_memory() needs torch tensors; this optimizer's state is {type(arr).__name__} "
                    "(NumPy parameters), which cannot be moved into shared memory in place"
                )
        for arr in arrays:
            arr.share_memory_()
