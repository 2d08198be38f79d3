"""SparseAdam (torch.optim.SparseAdam's update, names, defaults, errors and state layout):
Adam applied only to the rows that a sparse gradient holds."""

import contextlib
import math

import numpy as np

from .. import _interop
from ._sparse import row_index
from .optimizer import Optimizer, as_float


class SparseAdam(Optimizer):
    """torch.optim.SparseAdam: Adam on the entries a sparse gradient holds; the moments and
    values of every other entry stay as they are. Each step, per parameter, with ``rows``
    the gradient's (coalesced) indices::

        m[rows] += (1 - b1) * (g - m[rows]);   v[rows] += (1 - b2) * (g^2 - v[rows])
        p[rows] -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m[rows] / (sqrt(v[rows]) + eps)

    ``t`` counts the steps in which the parameter had a gradient (an empty one included, which
    changes nothing else). State: ``step`` (an int), ``exp_avg``, ``exp_avg_sq``.

    Gradients:

    - torch parameters: a sparse COO tensor of the parameter's shape, such as
      ``nn.Embedding(sparse=True)`` produces (duplicate indices are summed). A dense gradient
      raises torch's RuntimeError. CPU and CUDA (the same torch operations on either).
    - ``genesis.nn.Parameter`` (NumPy has no sparse arrays): a pair ``(indices, values)``, with
      ``indices`` an integer array of shape ``(n,)`` choosing rows of the parameter (entries
      along its first axis) and ``values`` of shape ``(n, *param.shape[1:])`` and the
      parameter's dtype; repeated indices are summed. A plain array raises the same
      RuntimeError as a dense torch gradient.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        as_float(lr, "lr")  # a tensor lr of more than one element: torch's ValueError
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize)
        _check_hyperparameters(defaults)
        if not _interop.is_parameter(params) and not isinstance(params, (set, frozenset)):
            params = list(params)  # the base class refuses a lone tensor or a set itself
            _refuse_sparse_params(params)
        super().__init__(params, defaults)

    # GradScaler: torch's unscales the gradients (sparse ones too) itself for optimizers without
    # this flag. The genesis one hands any genesis optimizer the scale to divide by
    # (grad_scale) and its inf check (found_inf): this step refuses the first and honours the
    # second (see step()).
    _step_supports_amp_scaling = False

    def _check_group(self, group):
        _check_hyperparameters(group)

    def zero_grad(self, set_to_none=True):
        """As Optimizer.zero_grad; a NumPy parameter's (indices, values) gradient becomes an
        empty pair when not set to None, as a zeroed sparse tensor holds no entries."""
        pairs = []
        for group in self.param_groups:
            for p in group["params"]:
                if isinstance(p.grad, tuple):
                    pairs.append(p)
                    p.grad = None
        super().zero_grad(set_to_none)
        if not set_to_none:
            for p in pairs:
                p.grad = (np.zeros(0, np.int64), np.zeros((0,) + p.data.shape[1:], p.data.dtype))

    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` (optional) is called first,
        with autograd enabled, and its value returned."""
        loss = None
        if closure is not None:
            torch = _interop.torch_module()
            if torch is None:
                loss = closure()
            else:
                with torch.enable_grad():
                    loss = closure()
        if getattr(self, "grad_scale", None) is not None:
            raise RuntimeError(
                "SparseAdam does not unscale gradients inside step(): call "
                "scaler.unscale_(optimizer) before scaler.step(optimizer)"
            )
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) != 0.0:
            return loss  # GradScaler found an inf/NaN gradient: skip the step
        # Check every gradient before anything changes.
        work = []
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    rows, values = _sparse_rows(p, p.grad, f"parameter {i} of param group {gi}")
                    work.append((group, p, rows, values))
        torch = _interop.torch_module()
        with torch.no_grad() if torch is not None else contextlib.nullcontext():
            for group, p, rows, values in work:
                self._update(group, p, rows, values)
        return loss

    def _update(self, group, param, rows, values):
        arr = _interop.array_of(param)
        state = self.state[param]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = _interop.zeros_like(arr)
            state["exp_avg_sq"] = _interop.zeros_like(arr)
        state["step"] += 1
        if _interop.numel(values) == 0:
            return  # an empty gradient: only the step count moves, as in torch
        beta1, beta2 = (as_float(b, "betas") for b in group["betas"])
        eps, step = as_float(group["eps"], "eps"), state["step"]
        if group["maximize"]:
            values = -values
        # Views with the gradient's rows along the first axis (the parameters are contiguous).
        row_shape = (-1,) + tuple(values.shape[1:])
        exp_avg = state["exp_avg"].reshape(row_shape)
        exp_avg_sq = state["exp_avg_sq"].reshape(row_shape)
        table = arr.reshape(row_shape)

        # old += (1 - b) * (new - old): the same rounding as torch's SparseAdam. In-place
        # arithmetic on the gathered rows keeps the temporaries to a few row-sized buffers.
        m_old, v_old = _gather(exp_avg, rows), _gather(exp_avg_sq, rows)
        m = values - m_old
        m *= 1 - beta1
        m += m_old
        v = values * values
        v -= v_old
        v *= 1 - beta2
        v += v_old
        _put(exp_avg, rows, m)
        _put(exp_avg_sq, rows, v)
        denom = _sqrt(v)
        denom += eps
        m /= denom
        # With a tensor lr the step size is computed in the tensor's precision, as torch does.
        m *= -as_float(group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step), "lr")
        _add(table, rows, m)

    # ------------------------------------------------------------------------- state_dict
    # torch keeps SparseAdam's step as a Python int; so does this class, in its state_dict too.
    def state_dict(self):
        packed = super().state_dict()
        packed["state"] = {key: _int_step(entries) for key, entries in packed["state"].items()}
        return packed

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for entries in self.state.values():
            if "step" in entries:
                entries["step"] = int(_interop.to_float(entries["step"]))


def _int_step(entries):
    entries = dict(entries)
    if "step" in entries:
        entries["step"] = int(_interop.to_float(entries["step"]))
    return entries


# Row access: index_select/index_copy_/index_add_ are torch's fast paths for whole rows (several
# times faster than advanced indexing); NumPy's fancy indexing is its own. The rows are unique.
def _gather(table, rows):
    return table[rows] if isinstance(table, np.ndarray) else table.index_select(0, rows)


def _put(table, rows, values):
    if isinstance(table, np.ndarray):
        table[rows] = values
    else:
        table.index_copy_(0, rows, values)


def _add(table, rows, values):
    if isinstance(table, np.ndarray):
        table[rows] += values
    else:
        table.index_add_(0, rows, values)


def _sqrt(x):
    return np.sqrt(x) if isinstance(x, np.ndarray) else x.sqrt()


def _check_hyperparameters(group):
    lr, eps, betas = group["lr"], group["eps"], group["betas"]
    if not 0.0 < lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 < eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas} (expected a pair)")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")


def _refuse_sparse_params(params):
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    sparse, complex_ = [], []
    for gi, group in enumerate(groups):
        members = group.get("params", []) if isinstance(group, dict) else []
        if _interop.is_parameter(members):
            members = [members]
        for i, p in enumerate(members):
            if _interop.is_torch(p) and p.is_sparse:
                sparse.append([gi, i])
            if _interop.is_torch(p) and p.is_complex():
                complex_.append([gi, i])
    if sparse:
        raise ValueError(f"Sparse params at indices {sparse}: SparseAdam requires dense parameter tensors")
    if complex_:
        raise ValueError(f"Complex params at indices {complex_}: SparseAdam does not support complex parameters")


_DENSE_ERROR = "SparseAdam does not support dense gradients, please consider Adam instead"


def _sparse_rows(param, grad, where):
    """The gradient as (rows, values): unique row indices along the first axis of the
    parameter's row view and the summed values of those rows. Raises before anything is
    changed if the gradient does not fit the parameter."""
    arr = _interop.array_of(param)
    if _interop.is_torch(arr):
        if not _interop.is_torch(grad):
            raise TypeError(f"the gradient of {where} is a {type(grad).__name__}, but the parameter is a tensor")
        if not grad.is_sparse:
            raise RuntimeError(_DENSE_ERROR)
        if grad.shape != arr.shape or grad.dtype != arr.dtype or grad.device != arr.device:
            raise ValueError(
                f"the gradient of {where} is {tuple(grad.shape)} {grad.dtype} on {grad.device}, "
                f"but the parameter is {tuple(arr.shape)} {arr.dtype} on {arr.device}"
            )
        _interop.check_sparse_indices(grad, f"the gradient of {where}")
        grad = grad.coalesce()  # the update is not linear: each row must appear once
        return row_index(grad), grad._values()
    if isinstance(grad, np.ndarray):
        raise RuntimeError(_DENSE_ERROR + " (a NumPy parameter's sparse gradient is a pair (row indices, row values))")
    if not (isinstance(grad, tuple) and len(grad) == 2):
        raise TypeError(f"the gradient of {where} must be a pair (row indices, row values), got {type(grad).__name__}")
    indices, values = np.asarray(grad[0]), np.asarray(grad[1])
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"the row indices of {where}'s gradient must be a 1-d integer array, "
            f"got shape {indices.shape} of {indices.dtype}"
        )
    if values.dtype != arr.dtype or values.shape != indices.shape + arr.shape[1:]:
        raise ValueError(
            f"the row values of {where}'s gradient must have shape "
            f"{indices.shape + arr.shape[1:]} and dtype {arr.dtype}, got "
            f"{values.shape} of {values.dtype}"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= arr.shape[0]):
        raise ValueError(f"the row indices of {where}'s gradient must be in [0, {arr.shape[0]})")
    rows, position = np.unique(indices, return_inverse=True)
    summed = np.zeros((rows.size,) + values.shape[1:], dtype=values.dtype)
    np.add.at(summed, position, values)
    return rows, summed
