"""RAdam on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class RAdam(RuleOptimizer, rule="radam"):
    """torch.optim.RAdam's update (Liu et al. 2020).

    Adam's moments; ``rho_inf = 2/(1-b2) - 1``, ``rho_t = rho_inf - 2t*b2^t/(1-b2^t)``. While
    ``rho_t <= 5`` the step is ``p -= lr * m/(1-b1^t)``; after, it is rectified:
    ``p -= lr * m/(1-b1^t) * sqrt(1-b2^t)/(sqrt(v)+eps) * r_t``. Weight decay is added to the
    gradient, or with ``decoupled_weight_decay=True`` applied as ``p *= 1 - lr*wd``. State:
    ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
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
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay,
            differentiable=differentiable,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
