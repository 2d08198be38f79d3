"""A plain float64 NumPy reference of genesis' update rules, written straight from the formulas
of docs/semantics.md#update-rules (no fusing, no reordering tricks, no torch).

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

# Every optimizer of genesis.optim that runs a rule of the core (element-wise or reduction), in
# genesis.optim.__all__ order. Each needs its reference below (RULES, CONFIGS, RICH).
NAMES = [
    n
    for n in genesis.optim.__all__
    if isinstance(getattr(genesis.optim, n), type) and issubclass(getattr(genesis.optim, n), RuleOptimizer)
]

# The element-wise ones among them: those whose state may be stored in 8 bits.
ELEMENTWISE_NAMES = [n for n in NAMES if getattr(genesis.optim, n)._supports_8bit_state]


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


def state_shapes(name, hp, shape):
    """{name: shape} of the state arrays a parameter of `shape` keeps (besides step and the
    per-tensor scalars), as the rule's schema declares them: the parameter's shape, except
    Adafactor's row and column factors (torch's names and layout: checked against torch by the
    parity tests)."""
    return {n: tuple(s) for n, s in _core_options(name, hp).state_arrays(list(shape))}


def state_names(name, hp, shape=(1,)):
    """The state arrays' names for a parameter of `shape` (default: a 1-D one), in slot order."""
    return tuple(state_shapes(name, hp, shape))


def scalar_names(name, hp):
    """The per-tensor 0-dim float32 state (NAdam's mu_product, ASGD's eta and mu)."""
    return tuple(n for n, _ in _core_options(name, hp).scalar_state())


def _core_options(name, hp):
    keys = {key for key, _ in schema(name)}
    options = {k: v for k, v in full_hyperparameters(name, hp).items() if k in keys}
    return OPTIONS[getattr(genesis.optim, name)._rule](**options)


def counts_steps(name):
    return getattr(genesis.optim, name)._counts_steps


def skip_without_torch_twin(name):
    """Skip a test that compares with torch.optim's class of the same name where torch has
    none (Lion: its reference follows the paper instead)."""
    import pytest
    import torch

    if not hasattr(torch.optim, name):
        pytest.skip(f"torch.optim has no {name}")


def torch_class(name):
    """torch.optim's class of this name, as the parity tests run it. torch's Adafactor divides
    by a parameter's size, so an empty parameter raises ZeroDivisionError; genesis only
    advances its step (docs/semantics.md#adafactor), and so does the twin returned here: every
    other parameter goes through torch's own step untouched."""
    import torch

    cls = getattr(torch.optim, name)
    if name != "Adafactor":
        return cls

    class Adafactor(cls):
        @torch.no_grad()
        def step(self, closure=None):
            empty = [p for g in self.param_groups for p in g["params"] if p.grad is not None and p.numel() == 0]
            grads = [p.grad for p in empty]
            for p in empty:
                p.grad = None
            try:
                loss = super().step(closure)
            finally:
                for p, g in zip(empty, grads):
                    p.grad = g
            for p in empty:
                state = self.state[p]
                if not state:  # torch's layout, as its _init_group creates it
                    state["step"] = torch.tensor(0.0)
                    if p.dim() > 1:
                        state["row_var"] = p.new_zeros(p.shape[:-1] + (1,))
                        state["col_var"] = p.new_zeros(p.shape[:-2] + (1,) + p.shape[-1:])
                    else:
                        state["variance"] = torch.zeros_like(p)
                state["step"] += 1
            return loss

    return Adafactor


def float32_twin_hp(name, hp, dtype):
    """The hyperparameters that make a float32 run compute what a run on `dtype` parameters
    does: Adafactor's eps1=None is the parameter dtype's machine epsilon (torch's rule), so the
    float32 twin of a 16-bit run is given that epsilon explicitly."""
    if name != "Adafactor":
        return hp
    import torch

    hp = full_hyperparameters(name, hp)
    eps1, eps2 = hp["eps"]
    return dict(hp, eps=(torch.finfo(dtype).eps if eps1 is None else eps1, eps2))


def eager_state(name):
    """Whether the optimizer creates every parameter's state in its constructor, as torch's
    does for this rule (Adagrad): a parameter that never gets a gradient has state then."""
    return getattr(getattr(genesis.optim, name), "_eager_state", False)


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


def _adam_prelude(p, g, state, lr, weight_decay, maximize, decoupled_weight_decay):
    """The opening the Adam family shares: negate g to maximize, count the step, and apply
    weight decay (to p when decoupled, else as L2 into g). Returns (p, g, t)."""
    g = -g if maximize else g
    t = state.get("step", 0.0) + 1.0
    state["step"] = t
    if decoupled_weight_decay:
        p = p * (1.0 - lr * weight_decay)
    elif weight_decay != 0:
        g = g + weight_decay * p
    return p, g, t


def _adam_moments(p, g, state, b1, b2):
    """m_t = b1 m + (1 - b1) g and v_t = b2 v + (1 - b2) g^2, stored in state."""
    m = b1 * state.get("exp_avg", np.zeros_like(p)) + (1.0 - b1) * g
    v = b2 * state.get("exp_avg_sq", np.zeros_like(p)) + (1.0 - b2) * g * g
    state["exp_avg"], state["exp_avg_sq"] = m, v
    return m, v


def adam(p, g, state, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay):
    b1, b2 = betas
    p, g, t = _adam_prelude(p, g, state, lr, weight_decay, maximize, decoupled_weight_decay)
    m, v = _adam_moments(p, g, state, b1, b2)
    bc1 = 1.0 - b1**t
    bc2 = 1.0 - b2**t
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


def adagrad(p, g, state, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize):
    g = -g if maximize else g
    t = state.get("step", 0.0) + 1.0
    state["step"] = t
    if weight_decay != 0:
        g = g + weight_decay * p
    s = state.get("sum", np.full_like(p, initial_accumulator_value)) + g * g
    state["sum"] = s
    return p - lr / (1.0 + (t - 1.0) * lr_decay) * g / (np.sqrt(s) + eps)


def adadelta(p, g, state, lr, rho, eps, weight_decay, maximize):
    g = -g if maximize else g
    state["step"] = state.get("step", 0.0) + 1.0
    if weight_decay != 0:
        g = g + weight_decay * p
    v = rho * state.get("square_avg", np.zeros_like(p)) + (1.0 - rho) * g * g
    u = state.get("acc_delta", np.zeros_like(p))
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
    state["square_avg"] = v
    state["acc_delta"] = rho * u + (1.0 - rho) * delta * delta
    return p - lr * delta


def adamax(p, g, state, lr, betas, eps, weight_decay, maximize):
    b1, b2 = betas
    g = -g if maximize else g
    t = state.get("step", 0.0) + 1.0
    state["step"] = t
    if weight_decay != 0:
        g = g + weight_decay * p
    m = b1 * state.get("exp_avg", np.zeros_like(p)) + (1.0 - b1) * g
    u = np.maximum(b2 * state.get("exp_inf", np.zeros_like(p)), np.abs(g) + eps)
    state["exp_avg"], state["exp_inf"] = m, u
    return p - lr / (1.0 - b1**t) * m / u


def radam(p, g, state, lr, betas, eps, weight_decay, maximize, decoupled_weight_decay):
    b1, b2 = betas
    p, g, t = _adam_prelude(p, g, state, lr, weight_decay, maximize, decoupled_weight_decay)
    m, v = _adam_moments(p, g, state, b1, b2)
    bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2**t / bc2
    if rho_t > 5.0:
        r = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return p - lr * m / bc1 * r * np.sqrt(bc2) / (np.sqrt(v) + eps)
    return p - lr * m / bc1


def rprop(p, g, state, lr, etas, step_sizes, maximize):
    etaminus, etaplus = etas
    g = -g if maximize else g
    state["step"] = state.get("step", 0.0) + 1.0
    prev = state.get("prev", np.zeros_like(p))
    size = state.get("step_size", np.full_like(p, lr))
    product = g * prev
    size = np.clip(
        size * np.where(product > 0, etaplus, np.where(product < 0, etaminus, 1.0)), step_sizes[0], step_sizes[1]
    )
    g = np.where(product < 0, 0.0, g)
    state["prev"], state["step_size"] = g, size
    return p - np.sign(g) * size


def nadam(p, g, state, lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize):
    b1, b2 = betas
    p, g, t = _adam_prelude(p, g, state, lr, weight_decay, maximize, decoupled_weight_decay)
    mu = b1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1.0) * momentum_decay))
    # torch keeps the product as a float32 tensor: rounded at every step, as genesis does
    product = float(np.float32(state.get("mu_product", 1.0) * np.float32(mu)))
    state["mu_product"] = product
    m, v = _adam_moments(p, g, state, b1, b2)
    denom = np.sqrt(v / (1.0 - b2**t)) + eps
    return p - lr * (1.0 - mu) / (1.0 - product) * g / denom - lr * mu_next / (1.0 - product * mu_next) * m / denom


def asgd(p, g, state, lr, lambd, alpha, t0, weight_decay, maximize):
    g = -g if maximize else g
    t = state.get("step", 0.0) + 1.0
    state["step"] = t
    eta, mu = state.get("eta", float(np.float32(lr))), state.get("mu", 1.0)
    if weight_decay != 0:
        g = g + weight_decay * p
    p = p * (1.0 - lambd * eta) - eta * g
    ax = state.get("ax", np.zeros_like(p))
    state["ax"] = p.copy() if mu == 1.0 else ax + mu * (p - ax)
    # torch keeps eta and mu as float32 tensors
    state["eta"] = float(np.float32(lr / (1.0 + lambd * lr * t) ** alpha))
    state["mu"] = float(np.float32(1.0 / max(1.0, t - t0)))
    return p


def lion(p, g, state, lr, betas, weight_decay, maximize):
    """Chen et al. 2023, Algorithm 2 (Lion), line by line."""
    b1, b2 = betas
    g = -g if maximize else g
    m = state.get("exp_avg", np.zeros_like(p))
    c = b1 * m + (1.0 - b1) * g
    p = p - lr * (np.sign(c) + weight_decay * p)
    state["exp_avg"] = b2 * m + (1.0 - b2) * g
    return p


def lamb(p, g, state, lr, betas, eps, weight_decay, bias_correction, adam_w_mode, grad_averaging, use_nvlamb, maximize):
    """You et al. 2019, Algorithm 2 (LAMB) for one layer, with phi the identity, and apex
    FusedLAMB's switches: grad_averaging (m = b1 m + g when off), adam_w_mode=False (weight
    decay added to the gradient, not to the update), bias_correction, and the trust ratio only
    where weight_decay != 0 unless use_nvlamb (the paper: always); ratio 1 if a norm is 0."""
    b1, b2 = betas
    g = -g if maximize else g
    t = state["step"] = state.get("step", 0) + 1
    if not adam_w_mode:
        g = g + weight_decay * p
    m = b1 * state.get("exp_avg", np.zeros_like(p)) + ((1.0 - b1) if grad_averaging else 1.0) * g
    v = b2 * state.get("exp_avg_sq", np.zeros_like(p)) + (1.0 - b2) * g * g
    state["exp_avg"], state["exp_avg_sq"] = m, v
    m_hat = m / (1.0 - b1**t) if bias_correction else m
    v_hat = v / (1.0 - b2**t) if bias_correction else v
    r = m_hat / (np.sqrt(v_hat) + eps)
    if adam_w_mode:
        r = r + weight_decay * p
    p_norm, r_norm = np.linalg.norm(p.ravel()), np.linalg.norm(r.ravel())
    trust = p_norm / r_norm if (use_nvlamb or weight_decay != 0) and p_norm > 0 and r_norm > 0 else 1.0
    return p - lr * trust * r


def adafactor(p, g, state, lr, beta2_decay, eps, d, weight_decay, maximize):
    """torch.optim.Adafactor's documented algorithm (Shazeer & Stern 2018 with torch's lr and
    eps1), the last two dimensions factored. eps1 None is the parameter dtype's epsilon, which
    the reference (all float64) does not know: float32's is used; with the tests' gradients
    (no zero rows) an eps1 below 1e-6 never binds, so either dtype's gives the same numbers."""
    eps1, eps2 = eps
    if eps1 is None:
        eps1 = float(np.finfo(np.float32).eps)
    g = -g if maximize else g
    t = state["step"] = state.get("step", 0) + 1
    if p.size == 0:  # torch divides by the size; genesis only counts the step
        if p.ndim >= 2:
            state.setdefault("row_var", np.zeros(p.shape[:-1] + (1,)))
            state.setdefault("col_var", np.zeros(p.shape[:-2] + (1,) + p.shape[-1:]))
        else:
            state.setdefault("variance", np.zeros_like(p))
        return p
    w = t**beta2_decay
    rho = min(lr, 1.0 / np.sqrt(t))
    alpha = max(eps2, np.sqrt(np.mean(p * p))) * rho
    if weight_decay != 0:  # as torch: lr = inf (the paper's rho_t = 1 / sqrt(t)) decays nothing
        p = p * (1.0 - lr * weight_decay)
    if p.ndim >= 2:
        row = state.get("row_var", np.zeros(p.shape[:-1] + (1,)))
        col = state.get("col_var", np.zeros(p.shape[:-2] + (1,) + p.shape[-1:]))
        row = row + w * (np.mean(g * g, axis=-1, keepdims=True) - row)
        col = col + w * (np.mean(g * g, axis=-2, keepdims=True) - col)
        state["row_var"], state["col_var"] = row, col
        v = row * col / np.maximum(np.mean(row, axis=-2, keepdims=True), eps1)
    else:
        var = state.get("variance", np.zeros_like(p))
        v = state["variance"] = var + w * (g * g - var)
    u = g / np.sqrt(np.maximum(v, eps1 * eps1))
    return p - alpha / max(1.0, np.sqrt(np.mean(u * u)) / d) * u


# Rules whose step is the sign of a state-dependent quantity times a step size (no
# magnitude): rounding the state can flip a step.
SIGN_UPDATES = {"Lion": True, "Rprop": True}

RULES = {
    "SGD": sgd,
    "Adam": adam,
    "AdamW": adam,
    "RMSprop": rmsprop,
    "Adagrad": adagrad,
    "Adadelta": adadelta,
    "Adamax": adamax,
    "NAdam": nadam,
    "RAdam": radam,
    "ASGD": asgd,
    "Rprop": rprop,
    "Lion": lion,
    "LAMB": lamb,
    "Adafactor": adafactor,
}


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
        self.groups = [
            ([np.array(a, dtype=np.float64) for a in arrays], full_hyperparameters(name, hp)) for arrays, hp in groups
        ]
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
        (0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.1), (False, True)
    ):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        out.append(
            dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=wd, maximize=maximize)
        )
    return out


def _adam_configs(name):
    out = []
    for amsgrad, wd, maximize in itertools.product((False, True), (0.0, 0.1), (False, True)):
        out.append(dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, amsgrad=amsgrad, weight_decay=wd, maximize=maximize))
    if name == "Adam":
        # Adam's own switch for decoupled decay (AdamW's rule).
        out += [dict(c, decoupled_weight_decay=True) for c in out if c["weight_decay"]]
    return out


def _rmsprop_configs():
    out = []
    for centered, momentum, wd, maximize in itertools.product((False, True), (0.0, 0.5), (0.0, 0.1), (False, True)):
        out.append(
            dict(lr=0.01, alpha=0.9, eps=1e-6, centered=centered, momentum=momentum, weight_decay=wd, maximize=maximize)
        )
    return out


def _flags(base, **choices):
    """base updated with every combination of `choices` (key -> tuple of values)."""
    keys = list(choices)
    return [dict(base, **dict(zip(keys, values))) for values in itertools.product(*choices.values())]


CONFIGS = {
    "SGD": _sgd_configs(),
    "Adam": _adam_configs("Adam"),
    "AdamW": _adam_configs("AdamW"),
    "RMSprop": _rmsprop_configs(),
    "Adagrad": _flags(
        dict(lr=0.05, eps=1e-10),
        lr_decay=(0.0, 0.01),
        weight_decay=(0.0, 0.1),
        initial_accumulator_value=(0.0, 0.5),
        maximize=(False, True),
    ),
    "Adadelta": _flags(dict(lr=0.5, rho=0.8, eps=1e-6), weight_decay=(0.0, 0.1), maximize=(False, True)),
    "Adamax": _flags(dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6), weight_decay=(0.0, 0.1), maximize=(False, True)),
    # betas[1] = 0.8 rectifies from step 6 on (rho_t > 5), so 20+ steps run both branches.
    "RAdam": _flags(
        dict(lr=0.01, betas=(0.8, 0.8), eps=1e-6),
        weight_decay=(0.0, 0.1),
        decoupled_weight_decay=(False, True),
        maximize=(False, True),
    ),
    "NAdam": _flags(
        dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, momentum_decay=0.05),
        weight_decay=(0.0, 0.1),
        decoupled_weight_decay=(False, True),
        maximize=(False, True),
    ),
    # t0 = 5: the average switches from copying p to averaging after step 6.
    "ASGD": _flags(
        dict(lr=0.05, lambd=0.01, alpha=0.75), t0=(1e6, 5.0), weight_decay=(0.0, 0.1), maximize=(False, True)
    ),
    # Tight step-size bounds so that both clamps are reached within the test's steps.
    "Rprop": _flags(
        dict(lr=0.01), etas=((0.5, 1.2), (0.3, 1.5)), step_sizes=((1e-6, 50.0), (0.005, 0.02)), maximize=(False, True)
    ),
    "Lion": _flags(dict(lr=0.01, betas=(0.8, 0.95)), weight_decay=(0.0, 0.5), maximize=(False, True)),
    "LAMB": _flags(
        dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6),
        weight_decay=(0.0, 0.1),
        adam_w_mode=(True, False),
        use_nvlamb=(False, True),
        maximize=(False, True),
    )
    + [dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, bias_correction=False, grad_averaging=False)],
    "Adafactor": _flags(dict(lr=0.05), weight_decay=(0.0, 0.1), maximize=(False, True))
    + [dict(lr=0.5, beta2_decay=-0.5, eps=(1e-3, 1e-2), d=1.5)],
}

# One configuration per optimizer with every option switched on (for the heavier tests).
RICH = {
    "SGD": dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.1),
    "Adam": dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, amsgrad=True, weight_decay=0.1),
    "AdamW": dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, amsgrad=True, weight_decay=0.1),
    "RMSprop": dict(lr=0.01, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.1),
    "Adagrad": dict(lr=0.05, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5),
    "Adadelta": dict(lr=0.5, rho=0.8, eps=1e-6, weight_decay=0.1),
    "Adamax": dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
    "RAdam": dict(lr=0.01, betas=(0.8, 0.8), eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True),
    "Rprop": dict(lr=0.01, etas=(0.3, 1.5), step_sizes=(0.005, 0.02)),
    "NAdam": dict(
        lr=0.01, betas=(0.8, 0.95), eps=1e-6, momentum_decay=0.05, weight_decay=0.1, decoupled_weight_decay=True
    ),
    "ASGD": dict(lr=0.05, lambd=0.01, alpha=0.75, t0=5.0, weight_decay=0.1),
    "Lion": dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.5),
    "LAMB": dict(
        lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, adam_w_mode=False, grad_averaging=False, use_nvlamb=True
    ),
    "Adafactor": dict(lr=0.05, beta2_decay=-0.6, eps=(1e-3, 1e-2), d=1.2, weight_decay=0.1),
}


def config_id(hp):
    """A short readable test id for a hyperparameter dict."""
    parts = []
    for key, value in hp.items():
        if key in ("lr", "betas", "eps", "alpha", "rho"):
            continue
        if value is True:
            parts.append(key)
        elif value not in (False, 0, 0.0):
            parts.append(f"{key}={value}")
    return "-".join(parts) or "plain"


def all_cases():
    """(optimizer name, hyperparameters) for every flag combination of every optimizer."""
    return [(name, hp) for name in NAMES for hp in CONFIGS[name]]


def all_case_ids():
    return [f"{name}-{config_id(hp)}" for name, hp in all_cases()]


# ------------------------------------------------------------------------------------ Muon
# Muon is not an element-wise rule (its step orthogonalizes each matrix), so it is not in
# RULES/NAMES: tests/test_muon.py drives it with the reference and flag combinations below.
def round_bfloat16(x):
    """Round float64 values to bfloat16's 8 significant bits (ties to even), as float64:
    written from the format's definition (frexp), independently of genesis's bit trick."""
    mantissa, exponent = np.frexp(x)
    return np.ldexp(np.round(mantissa * 256.0) / 256.0, exponent)


def newton_schulz(u, ns_coefficients, ns_steps, eps, bfloat16):
    """torch.optim.Muon's quintic Newton-Schulz iteration in float64; with `bfloat16`, every
    intermediate result is rounded to bfloat16, as torch's bfloat16 kernels round theirs."""
    r = round_bfloat16 if bfloat16 else (lambda v: v)
    a, b, c = ns_coefficients
    x = r(np.array(u, dtype=np.float64))
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = r(x / max(r(np.linalg.norm(x)), r(eps)))
    for _ in range(ns_steps):
        gram = r(x @ x.T)
        poly = r(b * gram + c * (gram @ gram))
        x = r(a * x + poly @ x)
    return x.T if tall else x


def muon(
    p, g, state, lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, bfloat16=False
):
    """torch.optim.Muon (torch 2.13 docs and source): B = lerp(B, g, 1 - momentum),
    U = lerp(g, B, momentum) if nesterov else B, O = NS(U),
    p = p (1 - lr wd) - lr * ratio(shape) * O."""
    buf = state.get("momentum_buffer", np.zeros_like(p))
    buf = buf + (1.0 - momentum) * (g - buf)
    state["momentum_buffer"] = buf
    u = g + momentum * (buf - g) if nesterov else buf
    o = newton_schulz(u, ns_coefficients, ns_steps, eps, bfloat16)
    rows, cols = p.shape
    if adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * np.sqrt(max(rows, cols))
    else:
        ratio = np.sqrt(max(1.0, rows / cols))
    return p * (1.0 - lr * weight_decay) - lr * ratio * o


MUON_DEFAULTS = dict(
    lr=1e-3,
    weight_decay=0.1,
    momentum=0.95,
    nesterov=True,
    ns_coefficients=(3.4445, -4.7750, 2.0315),
    eps=1e-7,
    ns_steps=5,
    adjust_lr_fn=None,
)
# Every flag; momentum 0.3 takes lerp's other branch (weight 1 - momentum >= 0.5).
MUON_CONFIGS = _flags(
    dict(lr=0.02),
    nesterov=(True, False),
    weight_decay=(0.0, 0.1),
    momentum=(0.95, 0.3),
    adjust_lr_fn=(None, "original", "match_rms_adamw"),
)
MUON_CONFIGS += [
    dict(lr=0.02, ns_steps=3, ns_coefficients=(3.4, -4.7, 2.0)),
    dict(lr=0.02, ns_steps=0),
    dict(lr=0.02, eps=1e-3),
]
MUON_RICH = dict(
    lr=0.02,
    weight_decay=0.1,
    momentum=0.9,
    nesterov=True,
    adjust_lr_fn="match_rms_adamw",
    ns_steps=6,
    ns_coefficients=(3.4, -4.7, 2.0),
)


# ------------------------------------------------------------------------ 8-bit state maps
# The maps of include/genesis/quantized.h (NOTE: [8-bit state maps]), written again in NumPy
# float32/uint32 arithmetic, operation for operation, so that the codes must agree bit for bit.
QUANT_BLOCK = 256
_U32 = np.uint32


def _map_constants(unsigned):
    bias = 31 if unsigned else 15
    return bias, (255 if unsigned else 127)


def encode_codes(x, unsigned):
    """Normalized float32 values -> codes (round to nearest, ties to even; saturating)."""
    bias, max_mag = _map_constants(unsigned)
    u = np.ascontiguousarray(x, dtype=np.float32).view(_U32)
    a = u & _U32(0x7FFFFFFF)
    with np.errstate(over="ignore"):
        normal = ((a + _U32(0x7FFFF) + ((a >> _U32(20)) & _U32(1))) >> _U32(20)) - _U32((127 - bias) << 3)
        anchor = _U32((128 - bias + 20) << 23)
        subnormal = (a.view(np.float32) + anchor.view(np.float32)).view(_U32) - anchor
    mag = np.minimum(np.where(a < _U32((128 - bias) << 23), subnormal, normal), _U32(max_mag))
    if unsigned:
        return np.where(u >> _U32(31), _U32(0), mag).astype(np.uint8)
    return (((u >> _U32(24)) & _U32(0x80)) | mag).astype(np.uint8)


def decode_codes(c, unsigned):
    """Codes -> normalized float32 values (exact)."""
    bias, max_mag = _map_constants(unsigned)
    mag = np.asarray(c).astype(_U32) & _U32(max_mag)
    normal = ((mag + _U32((127 - bias) << 3)) << _U32(20)).view(np.float32)
    step = np.array((127 - bias - 2) << 23, dtype=_U32).view(np.float32)
    v = np.where(mag >> _U32(3), normal, (mag & _U32(7)).astype(np.float32) * step).astype(np.float32)
    if not unsigned:
        v = (v.view(_U32) | ((np.asarray(c).astype(_U32) & _U32(0x80)) << _U32(24))).view(np.float32)
    return v


def _blocks(x):
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    return [x[i : i + QUANT_BLOCK] for i in range(0, x.size, QUANT_BLOCK)]


def block_absmax(block):
    """The NaN-propagating largest magnitude (the integer maximum of the magnitude bits)."""
    return np.max(block.view(_U32) & _U32(0x7FFFFFFF)).view(np.float32)


def quant_factor(absmax):
    absmax = np.float32(absmax)
    return np.float32(1.875) / absmax if absmax >= np.finfo(np.float32).tiny else np.float32(0)


def quantize(x, unsigned):
    """(codes, absmax) of a float32 array, block by block."""
    codes, scales = [], []
    for block in _blocks(x):
        a = block_absmax(block)
        with np.errstate(invalid="ignore"):
            codes.append(encode_codes(block * quant_factor(a), unsigned))
        scales.append(a)
    return np.concatenate(codes) if codes else np.zeros(0, np.uint8), np.array(scales, dtype=np.float32)


def dequantize(codes, absmax, unsigned):
    codes = np.asarray(codes).reshape(-1)
    out = [
        decode_codes(codes[i * QUANT_BLOCK : (i + 1) * QUANT_BLOCK], unsigned) * (np.float32(a) / np.float32(1.875))
        for i, a in enumerate(np.asarray(absmax, dtype=np.float32))
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)
