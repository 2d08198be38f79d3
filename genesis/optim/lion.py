"""Lion on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class Lion(RuleOptimizer, rule="lion"):
    """Lion, EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms", Algorithm 2). torch has no Lion; the names follow its other optimizers.

    ``c = b1*m + (1-b1)*g``; ``p = p*(1 - lr*wd) - lr*sign(c)``; ``m = b2*m + (1-b2)*g``.
    Weight decay is decoupled. Lion's steps are as large as lr in every coordinate, so its lr
    is typically 3-10x smaller than AdamW's and its weight decay 3-10x larger. State:
    ``exp_avg`` (m); no step count.
    """

    def __init__(
        self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0, *, maximize=False, foreach=None, **precision
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
