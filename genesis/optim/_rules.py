"""The hand-off between a Python optimizer class and its element-wise rule in the core.

Each rule of include/genesis/rules/list.h is bound as ``_C.<Options>`` with its schema
(``fields()``: torch's param_group keys in order), its defaults, its state names and its step
counting, and as the ``GroupPlan`` method named after the rule. ``RuleOptimizer`` turns that
into the hooks of ``Optimizer``, so a rule's Python class is only its torch signature::

    class Adagrad(RuleOptimizer, rule="adagrad"):
        def __init__(self, params, lr=1e-2, ...):
            super().__init__(params, dict(lr=lr, ...))
"""

from .. import _C
from .optimizer import Optimizer, as_float

# rule name ("adam") -> its options class (_C.AdamOptions), in the core's order.
OPTIONS = {rule: getattr(_C, options) for rule, options in _C.RULES}


def _pair(key, value):
    try:
        ok = len(value) == 2
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"Invalid {key}: {value} (expected a pair)")
    return (as_float(value[0]), as_float(value[1]))


_CONVERT = {"float": lambda key, v: as_float(v), "bool": lambda key, v: bool(v), "pair": _pair}


def core_options(rule, group):
    """The core's options struct for a param group: every key of the rule's schema, by name."""
    cls = OPTIONS[rule]
    return cls(**{key: _CONVERT[kind](key, group[key]) for key, kind in cls.fields()})


class RuleOptimizer(Optimizer):
    """An Optimizer whose update is one element-wise rule of the core, named by the ``rule``
    class keyword. Everything rule-specific comes from the rule's schema."""

    _rule = None

    def __init_subclass__(cls, rule=None, **kwargs):
        super().__init_subclass__(**kwargs)
        if rule is not None:
            if rule not in OPTIONS:
                raise TypeError(f"{cls.__name__}: the core has no rule {rule!r}")
            cls._rule = rule
            cls._counts_steps = OPTIONS[rule].counts_steps

    def _options(self, group):
        return core_options(self._rule, group)

    def _state_names(self, group):
        return tuple(self._options(group).state_names())

    def _run(self, plan, group, control):
        getattr(plan, self._rule)(self._options(group), control)


def rule_classes():
    """name -> class of every optimizer defined by the rule modules (genesis/optim/<rule>.py,
    one per rule of the core's list, in its order), for genesis.optim to export."""
    import importlib

    out = {}
    for rule in OPTIONS:
        module = importlib.import_module(f"{__package__}.{rule}")
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, RuleOptimizer)
                    and value.__module__ == module.__name__):
                out[name] = value
    return out
