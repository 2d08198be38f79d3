"""A plain float64 NumPy reference of genesis' update rules, written straight from the formulas
of SPEC section 4 (no fusing, no reordering tricks, no torch).

``ReferenceOptimizer`` mirrors an optimizer's param groups: it keeps its own float64 copy of every
parameter and of its state, and ``step(grads)`` applies one update to every parameter whose
gradient is not ``None``. The flag combinations every test suite runs through are listed here too
(``CONFIGS``), so that the reference tests and the torch parity tests cover the same cases.
"""

import inspect
import itertools

import numpy as np

import genesis
from genesis.optim._rules import OPTIONS, RuleOptimizer

# Every optimizer of genesis.optim that runs an element-wise rule of the core, in
# genesis.optim.__all__ order. Each needs its reference below (RULES, CONFIGS, RICH).
NAMES = [n for n in genesis.optim.__all__
         if isinstance(getattr(genesis.optim, n), type) and issubclass(getattr(genesis.optim, n), RuleOptimizer)]


def schema(name):
    """(param_group key, kind) of every hyperparameter the rule's core options take."""
    return OPTIONS[getattr(genesis.optim, name)._rule].fields()


def _defaults(name):
    """The optimizer's default for every key of its rule's schema, read from its signature
    (AdamW fixes decoupled_weight_decay, which its signature does not take). None: required."""
    cls = getattr(genesis.optim, name)
    sig = inspect.signature(cls.__init__).parameters
    fixed = {"decoupled_weight_decay": True} if name == "AdamW" else {}
    out = {}
    for key, _ in schema(name):
        if key in fixed:
            out[key] = fixed[key]
        else:
            default = sig[key].default
            out[key] = None if default is genesis.optim.optimizer.required else default
    return out


DEFAULTS = {name: _defaults(name) for name in NAMES}


def state_names(name, hp):
    """The per-element state a group with these hyperparameters keeps (besides step), as the
    rule's schema declares it (torch's names: checked against torch by the parity tests)."""
    keys = {key for key, _ in schema(name)}
    options = {k: v for k, v in full_hyperparameters(name, hp).items() if k in keys}
    return tuple(OPTIONS[getattr(genesis.optim, name)._rule](**options).state_names())


def counts_steps(name):
    return getattr(genesis.optim, name)._counts_steps


# ------------------------------------------------------------------------------ the rules
def sgd(p, g, state, lr, momentum, dampening, weight_decay, nesterov, maximize):
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum != 0:
        if "momentum_buffer" not in state:
            buf = g.copy()
        else:
            buf = momentum * state["momentum_buffer"] + (1.0 - dampening) * g
        state["momentum_buffer"] = buf
        g = g + momentum * buf if nesterov else buf
    return p - lr * g


def adam(p, g, state, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay):
    b1, b2 = betas
    g = -g if maximize else g
    t = state.get("step", 0.0) + 1.0
    state["step"] = t
    if decoupled_weight_decay:
        p = p * (1.0 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + weight_decay * p
    m = b1 * state.get("exp_avg", np.zeros_like(p)) + (1.0 - b1) * g
    v = b2 * state.get("exp_avg_sq", np.zeros_like(p)) + (1.0 - b2) * g * g
    state["exp_avg"], state["exp_avg_sq"] = m, v
    bc1 = 1.0 - b1 ** t
    bc2 = 1.0 - b2 ** t
    if amsgrad:
        v = np.maximum(state.get("max_exp_avg_sq", np.zeros_like(p)), v)
        state["max_exp_avg_sq"] = v
    denom = np.sqrt(v) / np.sqrt(bc2) + eps
    return p - (lr / bc1) * m / denom


def rmsprop(p, g, state, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    g = -g if maximize else g
    state["step"] = state.get("step", 0.0) + 1.0
    if weight_decay != 0:
        g = g + weight_decay * p
    v = alpha * state.get("square_avg", np.zeros_like(p)) + (1.0 - alpha) * g * g
    state["square_avg"] = v
    if centered:
        ga = alpha * state.get("grad_avg", np.zeros_like(p)) + (1.0 - alpha) * g
        state["grad_avg"] = ga
        avg = np.sqrt(v - ga * ga) + eps
    else:
        avg = np.sqrt(v) + eps
    if momentum > 0:
        buf = momentum * state.get("momentum_buffer", np.zeros_like(p)) + g / avg
        state["momentum_buffer"] = buf
        return p - lr * buf
    return p - lr * g / avg


RULES = {"SGD": sgd, "Adam": adam, "AdamW": adam, "RMSprop": rmsprop}


def full_hyperparameters(name, hp):
    """The optimizer's defaults updated with `hp` (SGD needs an lr)."""
    out = dict(DEFAULTS[name])
    out.update(hp)
    if out["lr"] is None:
        raise ValueError(f"{name} needs an lr")
    return out


class ReferenceOptimizer:
    """Float64 copies of the parameters of several groups, updated by the formulas above.

    groups: list of ``(list_of_arrays, hyperparameters)``; the arrays are copied to float64.
    """

    def __init__(self, name, groups):
        self.name = name
        self.rule = RULES[name]
        self.groups = [([np.array(a, dtype=np.float64) for a in arrays],
                         full_hyperparameters(name, hp)) for arrays, hp in groups]
        self.state = [[{} for _ in arrays] for arrays, _ in self.groups]

    def step(self, grads):
        """grads: per group, a list of arrays (or None for no gradient)."""
        for (params, hp), states, group_grads in zip(self.groups, self.state, grads):
            for i, g in enumerate(group_grads):
                if g is None:
                    continue
                params[i] = self.rule(params[i], np.asarray(g, dtype=np.float64), states[i], **hp)

    @property
    def params(self):
        return [params for params, _ in self.groups]


# --------------------------------------------------------------------- flag combinations
def _sgd_configs():
    out = []
    for momentum, dampening, nesterov, wd, maximize in itertools.product(
            (0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.1), (False, True)):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        out.append(dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=wd, maximize=maximize))
    return out


def _adam_configs(name):
    out = []
    for amsgrad, wd, maximize in itertools.product((False, True), (0.0, 0.1), (False, True)):
        out.append(dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, amsgrad=amsgrad, weight_decay=wd,
                        maximize=maximize))
    if name == "Adam":
        # Adam's own switch for decoupled decay (AdamW's rule).
        out += [dict(c, decoupled_weight_decay=True) for c in out if c["weight_decay"]]
    return out


def _rmsprop_configs():
    out = []
    for centered, momentum, wd, maximize in itertools.product(
            (False, True), (0.0, 0.5), (0.0, 0.1), (False, True)):
        out.append(dict(lr=0.01, alpha=0.9, eps=1e-6, centered=centered, momentum=momentum,
                        weight_decay=wd, maximize=maximize))
    return out


CONFIGS = {"SGD": _sgd_configs(), "Adam": _adam_configs("Adam"), "AdamW": _adam_configs("AdamW"),
           "RMSprop": _rmsprop_configs()}

# One configuration per optimizer with every option switched on (for the heavier tests).
RICH = {
    "SGD": dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.1),
    "Adam": dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, amsgrad=True, weight_decay=0.1),
    "AdamW": dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, amsgrad=True, weight_decay=0.1),
    "RMSprop": dict(lr=0.01, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.1),
}


def config_id(hp):
    """A short readable test id for a hyperparameter dict."""
    parts = []
    for key, value in hp.items():
        if key in ("lr", "betas", "eps", "alpha"):
            continue
        if value is True:
            parts.append(key)
        elif value not in (False, 0, 0.0):
            parts.append(f"{key}={value}")
    return "-".join(parts) or "plain"


def all_cases():
    """(optimizer name, hyperparameters) for every flag combination of every optimizer."""
    return [(name, hp) for name, configs in CONFIGS.items() for hp in configs]


def all_case_ids():
    return [f"{name}-{config_id(hp)}" for name, hp in all_cases()]
