"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from ._rules import RuleOptimizer
from .optimizer import as_float, precision_defaults


class SGD(RuleOptimizer, rule="sgd"):
    """torch.optim.SGD's update on the compiled core (docs/semantics.md#update-rules).

    ``g += wd * p``; with momentum ``b = g`` on the first step, then
    ``b = momentum * b + (1 - dampening) * g``; ``g = g + momentum * b`` (Nesterov) or ``b``;
    ``p -= lr * g``. ``lr`` defaults to 1e-3, as in torch 2.13. ``foreach`` and ``fused`` are accepted for torch
    compatibility: genesis always updates a whole group in one fused call. Mixed-precision
    options (``master_weights``, ``state_dtype``, ``stochastic_rounding``, ``seed``): see
    ``genesis.optim.Optimizer``.
    """

    # torch sparse gradients: without momentum and weight decay only their entries are updated
    # (torch's param.add_(grad, alpha=-lr), _sparse.py); otherwise they are densified, as the
    # update touches every element anyway.
    _supports_sparse = True

    def _sparse_rows(self, group):
        return as_float(group["momentum"]) == 0.0 and as_float(group["weight_decay"]) == 0.0

    def _update_rows(self, group, param, grad):
        param.add_(-grad if group["maximize"] else grad, alpha=-as_float(group["lr"], "lr"))

    def __init__(
        self,
        params,
        lr=1e-3,
        momentum=0,
        dampening=0,
        weight_decay=0,
        nesterov=False,
        *,
        maximize=False,
        foreach=None,
        differentiable=False,
        fused=None,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
