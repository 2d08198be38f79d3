"""Adadelta on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class Adadelta(RuleOptimizer, rule="adadelta"):
    """torch.optim.Adadelta's update.

    ``g += wd*p``; ``v = rho*v + (1-rho)*g^2``; ``d = sqrt(u + eps) / sqrt(v + eps) * g``;
    ``u = rho*u + (1-rho)*d^2``; ``p -= lr*d``. State: ``step``, ``square_avg`` (v),
    ``acc_delta`` (u).
    """

    def __init__(
        self,
        params,
        lr=1.0,
        rho=0.9,
        eps=1e-6,
        weight_decay=0,
        foreach=None,
        *,
        capturable=False,
        maximize=False,
        differentiable=False,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=capturable,
            foreach=foreach,
            differentiable=differentiable,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
