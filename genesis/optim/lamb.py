"""LAMB on the compiled core."""

from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class LAMB(RuleOptimizer, rule="lamb"):
    """LAMB, layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep
    Learning: Training BERT in 76 minutes"), with apex's ``FusedLAMB`` semantics and names.
    torch has no LAMB. Per parameter tensor:

    ``m = b1*m + (1-b1)*g`` (``grad_averaging=False``: ``b1*m + g``); ``v = b2*v + (1-b2)*g^2``;
    ``u = (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + wd*p``; ``p -= lr * (||p|| / ||u||) * u``,
    the trust ratio being 1 when either norm is 0. ``adam_w_mode=False`` adds ``wd*p`` to the
    gradient instead of the update; ``bias_correction=False`` drops the ``1-b^t`` terms.

    As apex, the trust ratio is applied only in groups with ``weight_decay != 0`` unless
    ``use_nvlamb=True`` (the paper applies it everywhere: pass ``use_nvlamb=True`` for the
    paper's algorithm in groups without weight decay). apex's optional global gradient-norm
    clipping (``max_grad_norm``) is not part of the step: clip with
    ``genesis.nn.utils.clip_grad_norm_`` before it. The norms are exact float64 sums in a fixed
    order (docs/semantics.md#lamb): the same bits for any thread count. State: ``step``,
    ``exp_avg``, ``exp_avg_sq``.
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.01,
        *,
        bias_correction=True,
        adam_w_mode=True,
        grad_averaging=True,
        use_nvlamb=False,
        maximize=False,
        foreach=None,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            bias_correction=bias_correction,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            adam_w_mode=adam_w_mode,
            grad_averaging=grad_averaging,
            use_nvlamb=use_nvlamb,
            maximize=maximize,
            foreach=foreach,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)
