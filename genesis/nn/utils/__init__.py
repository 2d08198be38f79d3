"""Gradient utilities: clip_grad_norm_ and clip_grad_value_, and clip_grad_norm_'s two halves,
get_total_norm and clip_grads_with_norm_ (as in torch.nn.utils)."""

from .clip_grad import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]
