"""Rprop on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class Rprop(RuleOptimizer, rule="rprop"):
    """torch.optim.Rprop's update.

    Per element, the step size (``lr`` at first) is multiplied by ``etas[1]`` when g keeps the
    sign of the previous gradient, by ``etas[0]`` when it flips (and g then counts as 0), and
    clamped to ``step_sizes``; ``p -= sign(g) * step_size``. State: ``step``, ``prev``,
    ``step_size``.
    """

    def __init__(
        self,
        params,
        lr=1e-2,
        etas=(0.5, 1.2),
        step_sizes=(1e-6, 50),
        *,
        capturable=False,
        foreach=None,
        maximize=False,
        differentiable=False,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            etas=etas,
            step_sizes=step_sizes,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
