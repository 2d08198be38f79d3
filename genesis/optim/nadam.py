"""NAdam on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class NAdam(RuleOptimizer, rule="nadam"):
    """torch.optim.NAdam's update (Dozat 2016).

    ``mu_t = b1*(1 - 0.5*0.96^(t*momentum_decay))``; ``mu_product *= mu_t``; Adam's moments;
    ``denom = sqrt(v/(1-b2^t)) + eps``;
    ``p -= lr*(1-mu_t)/(1-mu_product) * g/denom + lr*mu_{t+1}/(1-mu_product*mu_{t+1}) * m/denom``.
    Weight decay is added to the gradient, or with ``decoupled_weight_decay=True`` applied as
    ``p *= 1 - lr*wd``. State: ``step``, ``mu_product`` (a 0-dim float32 array, like step),
    ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
