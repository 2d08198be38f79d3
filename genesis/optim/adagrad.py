"""Adagrad on the compiled core."""

from .. import _interop
from . import _quantized
from ._rules import RuleOptimizer
from .optimizer import _new_state_array, as_float, precision_defaults


class Adagrad(RuleOptimizer, rule="adagrad"):
    """torch.optim.Adagrad's update.

    ``g += wd*p``; ``sum += g^2`` (``sum`` starts at ``initial_accumulator_value``);
    ``p -= lr / (1 + (t-1)*lr_decay) * g / (sqrt(sum) + eps)``. State: ``step``, ``sum``.
    As in torch, the constructor creates the state of every parameter (``step`` 0, ``sum``
    filled with ``initial_accumulator_value``), so a state_dict has torch's layout from the
    start; parameters of groups added later get theirs with their first step.
    """

    _eager_state = True

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
                    state["sum"], state["sum_absmax"] = _quantized.filled(
                        arr, as_float(group["initial_accumulator_value"]), unsigned=True
                    )
                    continue
                total = _new_state_array(p, arr, code)
                total += as_float(group["initial_accumulator_value"])
                state["sum"] = total
