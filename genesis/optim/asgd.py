"""ASGD on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class ASGD(RuleOptimizer, rule="asgd"):
    """torch.optim.ASGD's update (averaged SGD, Polyak & Juditsky 1992).

    ``g += wd*p``; ``p = p*(1 - lambd*eta) - eta*g``; the average ``ax = p`` while ``mu == 1``,
    else ``ax += mu*(p - ax)``; then ``eta = lr/(1 + lambd*lr*t)^alpha`` and
    ``mu = 1/max(1, t - t0)``. State: ``step``, ``eta``, ``mu`` (0-dim float32 arrays, like
    step) and ``ax``.
    """

    def __init__(
        self,
        params,
        lr=1e-2,
        lambd=1e-4,
        alpha=0.75,
        t0=1e6,
        weight_decay=0,
        foreach=None,
        maximize=False,
        differentiable=False,
        capturable=False,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            lambd=lambd,
            alpha=alpha,
            t0=t0,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
