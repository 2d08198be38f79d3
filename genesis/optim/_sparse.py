"""Sparse gradients updated entry by entry (docs/semantics.md#sparse-gradients).

A torch sparse COO gradient (``nn.Embedding(sparse=True)``, ``EmbeddingBag``) holds a few rows
of a large table. torch's SGD without momentum and weight decay, and its Adagrad, update only
those entries, in time proportional to them; densifying such a gradient for the element-wise
core costs two passes over the whole table (about 130x torch's step for a 1M x 64 embedding
and 4096 rows on the CPU). So for those rules genesis updates the entries with torch's own
sparse operations, in torch's order: torch's numbers, bit for bit on the CPU (on CUDA the same
operations, whose order of adding repeated rows is the device's). A rule opts in with two
methods of its optimizer class:

- ``_sparse_rows(group)``: whether the group's update of a sparse gradient touches only its
  entries (SGD: momentum and weight decay 0; torch's SGD densifies otherwise too);
- ``_update_rows(group, param, grad)``: that update, given the gradient after the step's
  gradient transform (below).

Everything else with a sparse gradient (SGD with momentum, master weights, stochastic rounding,
8-bit or 16-bit state) goes through Optimizer._run_staged: the gradient densified (`densified`
below: into a buffer kept between steps), the core's update, the same numbers as on the dense
gradient.

The step's gradient transform (NOTE: [gradient transform] in include/genesis/update_element.h)
applies to the entries' values as the core applies it to dense gradients: GradScaler's 1/scale
(to each stored entry, as torch's unscale_ does), the deferred clip_grad_norm_ coefficient,
the clip_grad_value_ clamp (to each element's sum over repeated entries), in that order, each
product rounded to the gradient's dtype.
"""

import weakref

from .. import _interop


class StepInputs:
    """What a step hands the row updates besides the gradients: GradScaler's loss scale and
    inf flag (None without a scaler) and the pending clip (_clip.PendingClip or None)."""

    __slots__ = ("grad_scale", "found_inf", "clip")

    def __init__(self, grad_scale, found_inf, clip):
        self.grad_scale, self.found_inf, self.clip = grad_scale, found_inf, clip


def takes_rows(optimizer, group, param):
    """Whether `param` (with a sparse gradient) is updated entry by entry: its rule opts in for
    the group, and torch's operations on the parameter and its state are the whole update: no
    master copy to keep in step, no stochastic rounding, and state (if the rule has any) in the
    parameter's dtype."""
    if not optimizer._sparse_rows(group) or param.is_complex() or _interop.is_dtensor(param):
        return False
    state_code, master = optimizer._storage(group, _interop.array_of(param))
    if master or group.get("stochastic_rounding"):
        return False
    return not optimizer._state_names(group) or state_code == _interop.dtype_code(param)


def skipped(inputs):
    """Whether GradScaler found an inf/NaN: the row updates change nothing. A CUDA flag is read
    on the host here (one sync, on steps with row updates only); the dense kernels read it on
    the device."""
    return inputs.found_inf is not None and _interop.to_float(inputs.found_inf) != 0.0


def transformed(grad, inputs):
    """The sparse gradient with the step's gradient transform applied to its values (a new
    sparse tensor with the same indices, coalesced or not as it was), or `grad` itself when
    there is nothing to apply."""
    clip = inputs.clip
    inv = None
    if inputs.grad_scale is not None:
        scale = inputs.grad_scale
        inv = scale.double().reciprocal() if _interop.is_torch(scale) else 1.0 / _interop.to_float(scale)
    elif clip is not None and clip.inv_scale is not None:
        inv = clip.inv_scale  # a lazy unscale_, then a plain step()
    coef = None if clip is None else clip.coef
    limit = None if clip is None else clip.limit
    if inv is None and coef is None and limit is None:
        return grad
    values = grad._values()
    if inv is not None:
        values = values * (inv.to(device=values.device, dtype=values.dtype) if _interop.is_torch(inv) else inv)
    if coef is not None:
        values = values * (coef.to(device=values.device, dtype=values.dtype) if _interop.is_torch(coef) else coef)
    grad = like(grad, grad._indices(), values)
    if limit is not None:  # a clamp is not linear: it applies to each entry's summed value
        grad = grad.coalesce()
        grad = like(grad, grad._indices(), grad._values().clamp(-limit, limit))
    return grad


def like(grad, indices, values, is_coalesced=None):
    """A sparse COO tensor of `grad`'s size from entries taken from `grad` (valid indices: no
    invariant check, as torch's own optimizers build theirs), flagged coalesced as `grad` is
    unless told. The flag picks torch's kernel for adding it to a dense tensor, so the rules
    pass what torch's own code passes, for torch's bits."""
    torch = _interop.torch_module()
    flag = grad.is_coalesced() if is_coalesced is None else is_coalesced
    return torch.sparse_coo_tensor(indices, values, grad.size(), is_coalesced=flag, check_invariants=False)


def run(optimizer, group, params, inputs):
    """Update `params` of `group` (each with a sparse gradient the rule takes by rows)."""
    if not params or skipped(inputs):
        return
    torch = _interop.torch_module()
    with torch.no_grad():
        for p in params:
            optimizer._update_rows(group, p, transformed(p.grad, inputs))


def row_index(grad):
    """The entries of a coalesced sparse COO tensor as row numbers of its dense view
    (product of the sparse dimensions, *dense dimensions): several sparse dimensions address
    rows of that view, so their indices are linearized."""
    indices = grad._indices()
    rows = indices[0]
    for dim in range(1, grad.sparse_dim()):
        rows = rows * grad.shape[dim] + indices[dim]
    return rows


def densified(optimizer, param, grad):
    """`grad` (sparse) as a dense tensor of `param`'s shape, for the core's dense update.

    The dense tensor is a buffer kept per parameter between steps (dropped with the
    parameter): the rows the previous step wrote are zeroed and this step's coalesced entries
    copied in, O(entries) work. torch's to_dense() instead allocates and zeroes a fresh
    table-sized tensor every step, which the system then maps and unmaps: on a 1M x 64 float32
    table that was about three quarters of SGD-with-momentum's step
    (docs/performance.md#sparse-gradients). The numbers are to_dense()'s of the coalesced
    gradient: each element's summed value."""
    torch = _interop.torch_module()
    kept = optimizer.__dict__.setdefault("_sparse_dense", {})  # id(param) -> [weakref, buffer, rows]
    grad = grad.coalesce()
    entry = kept.get(id(param))
    if (
        entry is None
        or entry[0]() is not param
        or entry[1].shape != grad.shape
        or entry[1].dtype != grad.dtype
        or entry[1].device != grad.device
    ):
        entry = [weakref.ref(param), torch.zeros(grad.shape, dtype=grad.dtype, device=grad.device), None]
        kept[id(param)] = entry
        weakref.finalize(param, kept.pop, id(param), None)  # the buffer goes with its parameter
    _, dense, written = entry
    table = dense.view((-1,) + tuple(grad.shape[grad.sparse_dim() :]))
    if written is not None:
        table.index_fill_(0, written, 0)
    rows = row_index(grad)
    table.index_copy_(0, rows, grad._values())
    entry[2] = rows
    return dense
