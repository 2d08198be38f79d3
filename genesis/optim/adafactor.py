"""Adafactor on the compiled core."""

from .. import _interop
from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class Adafactor(RuleOptimizer, rule="adafactor"):
    """torch.optim.Adafactor's update (Shazeer & Stern 2018, with torch's use of lr and eps1),
    docs/semantics.md#adafactor. Per parameter tensor, at step t:

    ``w = t^beta2_decay``; ``rho = min(lr, 1/sqrt(t))``; ``alpha = max(eps2, RMS(p)) * rho``;
    ``p *= 1 - lr*wd``. Two or more dimensions (the last two factored, the others a batch):
    ``row_var = lerp(row_var, mean(g^2, -1), w)``, ``col_var = lerp(col_var, mean(g^2, -2), w)``,
    ``v = row_var * col_var / max(mean(row_var, -2), eps1)``; otherwise
    ``variance = lerp(variance, g^2, w)``, ``v = variance``. Then
    ``u = g / sqrt(max(v, eps1^2))`` and ``p -= alpha / max(1, RMS(u)/d) * u``. ``eps1=None``
    (``eps=(None, 1e-3)``) takes the parameter dtype's machine epsilon.

    State, as torch's (so state_dicts go both ways): ``step``; ``row_var`` (shape[-1] = 1) and
    ``col_var`` (shape[-2] = 1), or ``variance``. Sums are float64 in a fixed order, the same
    bits for any thread count. An empty parameter only advances its step (torch divides by
    its zero size). Complex parameters are refused, as torch refuses them.
    """

    def __init__(
        self,
        params,
        lr=1e-2,
        beta2_decay=-0.8,
        eps=(None, 1e-3),
        d=1.0,
        weight_decay=0.0,
        *,
        foreach=None,
        maximize=False,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            beta2_decay=beta2_decay,
            eps=eps,
            d=d,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)

    def _check_state(self, param, group, where):
        if _interop.is_torch(param) and param.is_complex():
            raise RuntimeError("Adafactor does not support complex parameters")
        super()._check_state(param, group, where)
