"""RMSprop (centered, with momentum) on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class RMSprop(RuleOptimizer, rule="rmsprop"):
    """torch.optim.RMSprop's update (docs/semantics.md#update-rules).

    ``v = alpha*v + (1-alpha)*g^2``; centered: ``ga = alpha*ga + (1-alpha)*g`` and
    ``avg = sqrt(v - ga^2) + eps``, else ``avg = sqrt(v) + eps``; with momentum
    ``b = momentum*b + g/avg; p -= lr*b``, else ``p -= lr*g/avg``. State: ``step``,
    ``square_avg``, ``grad_avg`` (centered), ``momentum_buffer`` (momentum > 0).
    """

    def __init__(
        self,
        params,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0,
        momentum=0,
        centered=False,
        capturable=False,
        foreach=None,
        maximize=False,
        differentiable=False,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
