"""L-BFGS (torch.optim.LBFGS's algorithm, names, defaults and state layout).

Unlike the element-wise rules, L-BFGS works on all parameters at once as one flat vector: it
keeps the last ``history_size`` steps ``s`` and gradient changes ``y`` and turns the gradient
into a search direction with the two-loop recursion, then moves along it with a fixed step or
a strong-Wolfe line search. The flat vectors are single contiguous arrays of the parameters'
library, dtype and device, so every dot product and axpy is one library call (BLAS on the CPU,
one kernel on CUDA); a call into genesis's core would add nothing there. Scalars (dot
products, ``ro``, ``H_diag``) stay 0-dim values of the parameters' dtype, which keeps float32
runs rounding exactly as torch's do.
"""

import contextlib

import numpy as np

from .. import _interop
from .optimizer import Optimizer, as_float


# ----------------------------------------------------------------------------- flat vectors
# All parameters seen as one flat vector, in two implementations with the same small
# interface: torch tensors (CPU or CUDA) and NumPy arrays (genesis.nn.Parameter).
class _TorchVectors:
    """Flat vectors of torch tensors; a complex parameter takes part as its real view (two
    elements per value), as in torch."""

    def __init__(self, params):
        self.params = params
        self.torch = _interop.torch_module()

    def no_grad(self):
        return self.torch.no_grad()

    def evaluate(self, closure):
        """Call the user's closure with autograd enabled (step() itself runs without it)."""
        with self.torch.enable_grad():
            return closure()

    def flat_grad(self):
        """All gradients concatenated: a missing gradient counts as zeros, a sparse one is
        densified (as torch does)."""
        pieces = []
        for p in self.params:
            grad = p.grad
            if grad is None:
                real = _interop.real_view(p)
                pieces.append(real.new_zeros(real.numel()))
            elif grad.is_sparse:
                pieces.append(_interop.real_view(grad.to_dense()).view(-1))
            else:
                pieces.append(_interop.real_view(grad).view(-1))
        return self.torch.cat(pieces, 0)

    def add_to_params(self, step, direction):
        """params += step * direction, parameter by parameter (in place)."""
        offset = 0
        for p in self.params:
            real = _interop.real_view(p)
            n = real.numel()
            real.add_(direction[offset : offset + n].view_as(real), alpha=step)
            offset += n

    def save_params(self):
        return [p.clone(memory_format=self.torch.contiguous_format) for p in self.params]

    def restore_params(self, saved):
        for p, values in zip(self.params, saved):
            p.copy_(values)

    def clone(self, v):
        return v.clone(memory_format=self.torch.contiguous_format)

    @staticmethod
    def axpy(y, a, x):
        """y += a * x in place."""
        y.add_(x, alpha=a)

    @staticmethod
    def sqrt(x):
        return x.sqrt()

    @staticmethod
    def assign(dst, src):
        dst.copy_(src)

    def import_value(self, value, like):
        """A loaded state value (tensor or array) as a new tensor of `like`'s dtype and device."""
        if not isinstance(value, self.torch.Tensor):
            value = self.torch.as_tensor(np.asarray(value))
        return value.detach().to(device=like.device, dtype=like.dtype, copy=True)


class _NumpyVectors:
    """Flat vectors of NumPy arrays (genesis.nn.Parameter holds its values in ``.data``)."""

    def __init__(self, params):
        self.params = params

    @staticmethod
    def no_grad():
        return contextlib.nullcontext()

    @staticmethod
    def evaluate(closure):
        return closure()

    def flat_grad(self):
        pieces = []
        for i, p in enumerate(self.params):
            if p.grad is None:
                pieces.append(np.zeros(p.data.size, dtype=p.data.dtype))
            else:
                _interop.check_grad(p, p.grad, f"parameter {i} of param group 0")
                pieces.append(p.grad.reshape(-1))
        return np.concatenate(pieces)

    def add_to_params(self, step, direction):
        offset = 0
        for p in self.params:
            n = p.data.size
            p.data += step * direction[offset : offset + n].reshape(p.data.shape)
            offset += n

    def save_params(self):
        return [p.data.copy() for p in self.params]

    def restore_params(self, saved):
        for p, values in zip(self.params, saved):
            np.copyto(p.data, values)

    @staticmethod
    def clone(v):
        return v.copy()

    @staticmethod
    def axpy(y, a, x):
        y += a * x

    @staticmethod
    def sqrt(x):
        return np.sqrt(x)

    @staticmethod
    def assign(dst, src):
        np.copyto(dst, src)

    @staticmethod
    def import_value(value, like):
        """A loaded state value as a NumPy value of `like`'s dtype: an array, or a NumPy scalar
        for a 0-dim value (what the algorithm's own dot products give)."""
        if _interop.is_torch(value):
            value = value.detach().cpu()
            if value.dtype == _interop.torch_module().bfloat16:
                value = value.float()
            value = value.numpy()
        value = np.array(value, dtype=like.dtype)
        return value[()] if value.ndim == 0 else value


def _vectors_for(params):
    """The flat-vector implementation for these parameters (all of one library)."""
    kinds = {_interop.is_torch(p) for p in params}
    if len(kinds) > 1:
        raise ValueError("all parameters must be of one library: torch tensors or genesis.nn.Parameter, not both")
    return _TorchVectors(params) if kinds == {True} else _NumpyVectors(params)


# ------------------------------------------------------------------------------ line search
def _cubic_minimum(x1, f1, g1, x2, f2, g2, sqrt, bounds=None):
    """The minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1 and g2, clamped
    to ``bounds`` (default: the interval between x1 and x2); the middle of the bounds when the
    cubic has no minimum. Standard two-point cubic interpolation (Nocedal & Wright, eq. 3.59)."""
    if bounds is None:
        bounds = (x1, x2) if x1 <= x2 else (x2, x1)
    low, high = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    discriminant = d1**2 - g1 * g2
    if discriminant < 0:
        return (low + high) / 2.0
    d2 = sqrt(discriminant)
    # Written from the farther-right point, so that the subtraction is between like terms.
    if x1 <= x2:
        minimum = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        minimum = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(minimum, low), high)


class _Trial:
    """One point of the line search: step t, loss f, flat gradient g, slope gtd = g . d."""

    __slots__ = ("t", "f", "g", "gtd")

    def __init__(self, t, f, g, gtd):
        self.t, self.f, self.g, self.gtd = t, f, g, gtd


def _strong_wolfe(evaluate, sqrt, d, start, t, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """A step along ``d`` satisfying the strong Wolfe conditions (Nocedal & Wright, algorithms
    3.5 and 3.6), starting from the trial step ``t``. ``start`` is the point t = 0;
    ``evaluate(t)`` returns (loss, flat gradient) at params + t*d and leaves the parameters as
    they were. Each evaluation returns a new gradient vector and nothing here changes one in
    place, so trials can share them. Returns (loss, gradient, t, evaluations)."""
    f0, slope0 = start.f, start.gtd
    d_norm = abs(d).max()

    def sufficient_decrease(trial):
        return not trial.f > (f0 + c1 * trial.t * slope0)

    def curvature(trial):
        return abs(trial.gtd) <= -c2 * slope0

    def trial_at(step):
        f, g = evaluate(step)
        return _Trial(step, f, g, g.dot(d))

    current = trial_at(t)
    evals, iters = 1, 0
    # Phase 1: grow the step until an interval [low, high] is known to hold an acceptable one.
    previous = _Trial(0, f0, start.g, slope0)
    bracket, done = None, False
    while iters < max_ls:
        if not sufficient_decrease(current) or (iters > 1 and current.f >= previous.f):
            bracket = [previous, current]
            break
        if curvature(current):
            bracket, done = [current], True
            break
        if current.gtd >= 0:
            bracket = [previous, current]
            break
        t = _cubic_minimum(
            previous.t,
            previous.f,
            previous.gtd,
            current.t,
            current.f,
            current.gtd,
            sqrt,
            bounds=(current.t + 0.01 * (current.t - previous.t), current.t * 10),
        )
        previous, current = current, trial_at(t)
        evals += 1
        iters += 1
    if iters == max_ls:
        bracket = [_Trial(0, f0, start.g, None), current]

    # Phase 2 ("zoom"): shrink the interval by cubic interpolation; bracket[low] is always its
    # point with the lower loss.
    low, high = (0, 1) if bracket[0].f <= bracket[-1].f else (1, 0)
    insufficient_progress = False
    while not done and iters < max_ls:
        a, b = bracket
        if abs(b.t - a.t) * d_norm < tolerance_change:
            break
        t = _cubic_minimum(a.t, a.f, a.gtd, b.t, b.f, b.gtd, sqrt)
        # A trial too close to an end of the interval makes little progress: if that happens
        # twice in a row, or the trial is at or beyond an end, move it 10% of the width inside.
        right, left = max(a.t, b.t), min(a.t, b.t)
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if insufficient_progress or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        trial = trial_at(t)
        evals += 1
        iters += 1
        if not sufficient_decrease(trial) or trial.f >= bracket[low].f:
            bracket[high] = trial
            low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
        else:
            if curvature(trial):
                done = True
            elif trial.gtd * (bracket[high].t - bracket[low].t) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = trial
    best = bracket[low]
    return best.f, best.g, best.t, evals


# ------------------------------------------------------------------------------- optimizer
# The state entries that hold flat vectors (one or a list of them), as torch names them.
_VECTOR_STATE = ("d", "prev_flat_grad", "old_dirs", "old_stps")


class LBFGS(Optimizer):
    """torch.optim.LBFGS: limited-memory BFGS with an optional strong-Wolfe line search.

    ``step(closure)`` requires a closure that recomputes the loss and the gradients and
    returns the loss; it runs up to ``max_iter`` iterations and ``max_eval`` closure calls
    (default ``max_iter * 5 // 4``), and stops early when the largest gradient magnitude is
    at most ``tolerance_grad`` or when the step or the change of the loss is below
    ``tolerance_change``. ``line_search_fn`` is None (steps of length ``lr``; the first one
    scaled by ``min(1, 1/|g|_1)``) or ``"strong_wolfe"``. One param group only.

    Parameters are torch tensors (CPU or CUDA; the closure runs with autograd enabled) or
    ``genesis.nn.Parameter`` NumPy arrays, all of one library; the closure fills in each
    ``.grad`` (a missing gradient counts as zeros). Memory: ``history_size + 1`` extra copies
    of the parameters, plus a few more.

    State (torch's layout, all under the first parameter): ``func_evals``, ``n_iter``, ``d``,
    ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss`` and
    ``al``; the vectors are flat arrays of the parameters' library, the scalars 0-dim ones.
    """

    def __init__(
        self,
        params,
        lr=1,
        max_iter=20,
        max_eval=None,
        tolerance_grad=1e-7,
        tolerance_change=1e-9,
        history_size=100,
        line_search_fn=None,
    ):
        if not 0.0 <= as_float(lr, "lr"):  # a tensor lr of more than one element: torch's ValueError
            raise ValueError(f"Invalid learning rate: {lr}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(
            lr=lr,
            max_iter=max_iter,
            max_eval=max_eval,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            history_size=history_size,
            line_search_fn=line_search_fn,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        _vectors_for(self.param_groups[0]["params"])  # one library

    # GradScaler: torch's unscales the gradients itself for optimizers without this flag. The
    # genesis one hands any genesis optimizer the scale to divide by (grad_scale) and its inf
    # check (found_inf): this step refuses the first and honours the second (see step()).
    _step_supports_amp_scaling = False

    def _check_group(self, group):
        lr = group["lr"]
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")

    def step(self, closure):
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss the closure gave at the
        starting point."""
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        if not callable(closure):
            raise TypeError(
                "LBFGS.step() needs a closure that recomputes the loss and the "
                f"gradients and returns the loss, got {type(closure).__name__}"
            )
        group = self.param_groups[0]
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise RuntimeError("only 'strong_wolfe' is supported")
        if getattr(self, "grad_scale", None) is not None:
            raise RuntimeError(
                "LBFGS does not unscale gradients inside step(): call "
                "scaler.unscale_(optimizer) before scaler.step(optimizer)"
            )
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) != 0.0:
            return None  # GradScaler found an inf/NaN gradient: skip the step
        vectors = _vectors_for(group["params"])
        with vectors.no_grad():
            return self._minimize(vectors, group, closure)

    def _minimize(self, vectors, group, closure):
        lr = as_float(group["lr"], "lr")
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]

        state = self.state[group["params"][0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = vectors.evaluate(closure)
        loss = float(orig_loss)
        evals = 1
        state["func_evals"] += 1
        flat_grad = vectors.flat_grad()
        if abs(flat_grad).max() <= tolerance_grad:
            return orig_loss  # already optimal

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag, prev_flat_grad = state.get("H_diag"), state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # The direction: steepest descent at first, then the two-loop recursion over the
            # history of (s, y) pairs, which multiplies -g by the inverse-Hessian estimate.
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)
                if ys > 1e-10:  # keep the pair only where the curvature is positive
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / y.dot(y)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = -flat_grad
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    vectors.axpy(q, -al[i], old_dirs[i])
                d = r = q * H_diag
                for i in range(len(old_dirs)):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    vectors.axpy(r, al[i] - be_i, old_stps[i])

            if prev_flat_grad is None:
                prev_flat_grad = vectors.clone(flat_grad)
            else:
                vectors.assign(prev_flat_grad, flat_grad)
            prev_loss = loss

            # The step length: lr, the first one scaled down to at most a unit L1 move.
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / abs(flat_grad).sum()) * lr
            else:
                t = lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break  # not a descent direction any more

            if group["line_search_fn"] is not None:
                loss, flat_grad, t, ls_evals = self._line_search(
                    vectors, closure, d, t, loss, flat_grad, gtd, max_eval - evals
                )
                vectors.add_to_params(t, d)
            else:
                vectors.add_to_params(t, d)
                ls_evals = 0
                # The last iteration does not re-evaluate: with stochastic losses the value
                # would be of no use, and the next step() evaluates anyway.
                if n_iter != max_iter:
                    loss = float(vectors.evaluate(closure))
                    flat_grad = vectors.flat_grad()
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals

            if n_iter == max_iter or evals >= max_eval:
                break
            if abs(flat_grad).max() <= tolerance_grad:
                break
            if abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break  # no progress

        state["d"] = d
        state["t"] = t
        state["old_dirs"] = old_dirs
        state["old_stps"] = old_stps
        state["ro"] = ro
        state["H_diag"] = H_diag
        state["prev_flat_grad"] = prev_flat_grad
        state["prev_loss"] = prev_loss
        return orig_loss

    @staticmethod
    def _line_search(vectors, closure, d, t, loss, flat_grad, gtd, max_ls):
        start_params = vectors.save_params()

        def evaluate(step):
            vectors.add_to_params(step, d)
            f = float(vectors.evaluate(closure))
            g = vectors.flat_grad()
            vectors.restore_params(start_params)
            return f, g

        return _strong_wolfe(evaluate, vectors.sqrt, d, _Trial(0, loss, flat_grad, gtd), t, max_ls=max_ls)

    # ------------------------------------------------------------------------- state_dict
    def load_state_dict(self, state_dict):
        """Load a state_dict of this class or of torch.optim.LBFGS (the state is global, kept
        under the first parameter). Vectors and 0-dim scalars are copied into the parameters'
        library, dtype and device; counts stay Python numbers. Everything is validated before
        the optimizer changes."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        group, saved = self.param_groups[0], saved_groups[0]
        params = group["params"]
        if len(saved["params"]) != len(params):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )
        new_group = {k: v for k, v in saved.items() if k != "params"}
        for name, default in self.defaults.items():
            new_group.setdefault(name, default)
        new_group["params"] = params
        self._check_group(new_group)

        vectors = _vectors_for(params)
        # Flat vectors count a complex parameter's real view (two elements per value), as torch.
        numel = sum(_interop.numel(_interop.real_view(_interop.array_of(p))) for p in params)
        param_of = dict(zip(saved["params"], params))
        new_state = {}
        for key, entries in state_dict["state"].items():
            if key not in param_of:
                continue
            if not isinstance(entries, dict):
                raise ValueError(f"state of parameter {key} must be a dict, got {type(entries).__name__}")
            like = _interop.real_view(_interop.array_of(param_of[key]))
            imported = {name: _import_value(vectors, value, like) for name, value in entries.items()}
            _check_vector_lengths(imported, numel)
            new_state[param_of[key]] = imported

        self.param_groups = [new_group]
        for p in list(self.state.keys()):
            del self.state[p]
        for p, entries in new_state.items():
            self.state[p] = entries


def _import_value(vectors, value, like):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_import_value(vectors, v, like) for v in value]
    return vectors.import_value(value, like)


def _check_vector_lengths(state, numel):
    """A loaded state's flat vectors must have one element per element of the parameters."""
    for name in _VECTOR_STATE:
        value = state.get(name)
        for v in value if isinstance(value, list) else [value]:
            if v is not None and tuple(v.shape) != (numel,):
                raise ValueError(
                    f"state '{name}' holds a vector of shape {tuple(v.shape)}, but the "
                    f"parameters have {numel} elements in all"
                )
