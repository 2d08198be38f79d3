"""Adamax on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class Adamax(RuleOptimizer, rule="adamax"):
    """torch.optim.Adamax's update.

    ``g += wd*p``; ``m = b1*m + (1-b1)*g``; ``u = max(b2*u, |g| + eps)``;
    ``p -= lr / (1 - b1^t) * m / u``. State: ``step``, ``exp_avg``, ``exp_inf``.
    """

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        foreach=None,
        *,
        maximize=False,
        differentiable=False,
        capturable=False,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
