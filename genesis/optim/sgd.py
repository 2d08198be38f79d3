"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from ._validation import _value, check_non_negative
from .optimizer import Optimizer, required


class SGD(Optimizer):
    """torch.optim.SGD's update on the compiled core (SPEC section 4).

    ``g += wd * p``; with momentum ``b = g`` on the first step, then
    ``b = momentum * b + (1 - dampening) * g``; ``g = g + momentum * b`` (Nesterov) or ``b``;
    ``p -= lr * g``. ``lr`` is required. ``foreach`` and ``fused`` are accepted for torch
    compatibility: genesis always updates a whole group in one fused call.
    """

    _counts_steps = False

    def __init__(self, params, lr=required, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False, foreach=None, differentiable=False, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def _check_group(self, group):
        self._check_common(group)
        check_non_negative(group, "lr", "learning rate")
        check_non_negative(group, "momentum", "momentum value")
        check_non_negative(group, "weight_decay", "weight_decay value")
        if not 0.0 <= _value(group["dampening"]):
            raise ValueError(f"Invalid dampening value: {group['dampening']}")
        if group["nesterov"] and (_value(group["momentum"]) <= 0 or _value(group["dampening"]) != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _state_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _run(self, plan, group):
        plan.sgd(_value(group["lr"]), _value(group["momentum"]), _value(group["dampening"]),
                 _value(group["weight_decay"]), bool(group["nesterov"]), bool(group["maximize"]))
