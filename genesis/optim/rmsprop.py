"""RMSprop (centered, with momentum) on the compiled core."""

from .. import _C
from .optimizer import Optimizer, as_float, precision_defaults


class RMSprop(Optimizer):
    """torch.optim.RMSprop's update (SPEC section 4).

    ``v = alpha*v + (1-alpha)*g^2``; centered: ``ga = alpha*ga + (1-alpha)*g`` and
    ``avg = sqrt(v - ga^2) + eps``, else ``avg = sqrt(v) + eps``; with momentum
    ``b = momentum*b + g/avg; p -= lr*b``, else ``p -= lr*g/avg``. State: ``step``,
    ``square_avg``, ``grad_avg`` (centered), ``momentum_buffer`` (momentum > 0).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, **precision):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable,
                        **precision_defaults(precision))
        super().__init__(params, defaults)

    def _options(self, group):
        return _C.RmspropOptions(lr=as_float(group["lr"]), alpha=as_float(group["alpha"]),
                                 eps=as_float(group["eps"]),
                                 weight_decay=as_float(group["weight_decay"]),
                                 momentum=as_float(group["momentum"]),
                                 centered=bool(group["centered"]), maximize=bool(group["maximize"]))

    def _state_names(self, group):
        names = ("square_avg",)
        if group["centered"]:
            names += ("grad_avg",)
        if group["momentum"] > 0:
            names += ("momentum_buffer",)
        return names

    def _run(self, plan, group, control):
        plan.rmsprop(self._options(group), control)
