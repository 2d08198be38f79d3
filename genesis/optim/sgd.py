"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from .. import _C
from .optimizer import Optimizer, as_float, precision_defaults


class SGD(Optimizer):
    """torch.optim.SGD's update on the compiled core (SPEC section 4).

    ``g += wd * p``; with momentum ``b = g`` on the first step, then
    ``b = momentum * b + (1 - dampening) * g``; ``g = g + momentum * b`` (Nesterov) or ``b``;
    ``p -= lr * g``. ``lr`` defaults to 1e-3, as in torch 2.13. ``foreach`` and ``fused`` are accepted for torch
    compatibility: genesis always updates a whole group in one fused call. Mixed-precision
    options (``master_weights``, ``state_dtype``, ``stochastic_rounding``, ``seed``): see
    ``genesis.optim.Optimizer``.
    """

    _counts_steps = False
    _supports_sparse = True

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False, foreach=None, differentiable=False, fused=None, **precision):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach,
                        differentiable=differentiable, fused=fused, **precision_defaults(precision))
        super().__init__(params, defaults)

    def _options(self, group):
        return _C.SgdOptions(lr=as_float(group["lr"]), momentum=as_float(group["momentum"]),
                             dampening=as_float(group["dampening"]),
                             weight_decay=as_float(group["weight_decay"]),
                             nesterov=bool(group["nesterov"]), maximize=bool(group["maximize"]))

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _run(self, plan, group, control):
        plan.sgd(self._options(group), control)
