"""Adam and AdamW (with AMSGrad) on the compiled core."""

from .. import _interop
from ._rules import RuleOptimizer
from .optimizer import precision_defaults


class Adam(RuleOptimizer, rule="adam"):
    """torch.optim.Adam's update (docs/semantics.md#update-rules).

    ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g^2``; with amsgrad ``v_max = max(v_max, v)``
    replaces v below; ``p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)``. Weight decay
    is added to the gradient, or, with ``decoupled_weight_decay=True`` (AdamW), applied to the
    parameter as ``p *= 1 - lr*wd``. State: ``step``, ``exp_avg``, ``exp_avg_sq`` and
    ``max_exp_avg_sq`` (amsgrad only).
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        amsgrad=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        fused=None,
        decoupled_weight_decay=False,
        **precision,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
            **precision_defaults(precision),
        )
        super().__init__(params, defaults)

    def _check_group(self, group):
        # torch's Adam and AdamW (only they) check tensor lr and betas against their foreach
        # implementation first; genesis has none, but refuses what torch refuses.
        torch = _interop.torch_module()
        if torch is not None:
            untraceable = group.get("foreach") and not group.get("capturable")
            if isinstance(group.get("lr"), torch.Tensor) and untraceable:
                raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
            betas = group.get("betas")
            if isinstance(betas, (tuple, list)) and len(betas) == 2:
                tensors = [isinstance(b, torch.Tensor) for b in betas]
                if tensors[0] != tensors[1]:
                    raise ValueError("betas must be either both floats or both Tensors")
                if tensors[0] and untraceable:
                    raise ValueError("betas[0] as a Tensor is not supported for capturable=False and foreach=True")
        super()._check_group(group)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01): ``p *= 1 - lr*wd`` before the Adam
    update, the gradient itself is not changed. Loading an Adam state_dict keeps the decoupled
    decay, as torch's AdamW does."""

    _fixed_options = {"decoupled_weight_decay": True}

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
        foreach=None,
        capturable=False,
        differentiable=False,
        fused=None,
        **precision,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            **precision,
        )
