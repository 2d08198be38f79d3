"""The hand-off between a Python optimizer class and its element-wise rule in the core.

Each rule of include/genesis/rules/list.h is bound as ``_C.<Options>`` with its schema
(``fields()``: torch's param_group keys in order), its defaults, its state names and its step
counting, and as the ``GroupPlan`` method named after the rule. ``RuleOptimizer`` turns that
into the hooks of ``Optimizer``, so a rule's Python class is only its torch signature::

    class Adagrad(RuleOptimizer, rule="adagrad"):
        def __init__(self, params, lr=1e-2, ...):
            super().__init__(params, dict(lr=lr, ...))
"""

import math
from operator import is_

from .. import _C, _interop
from . import _device_lr
from .optimizer import Optimizer, _is_step_counter, as_float, loaded_number

# rule name ("adam") -> its options class (_C.AdamOptions), in the core's order.
OPTIONS = {rule: getattr(_C, options) for rule, options in _C.RULES}
# rule name -> its schema, (key, kind) pairs: fixed at build time, read once here instead of
# through a core call per group and step.
FIELDS = {rule: tuple(options.fields()) for rule, options in OPTIONS.items()}


def _pair(key, value, optional_first=False):
    """A pair of floats; with optional_first its first entry may be None (Adafactor's eps:
    None picks the parameter dtype's epsilon)."""
    try:
        ok = len(value) == 2
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"Invalid {key}: {value} (expected a pair)")
    first = None if optional_first and value[0] is None else as_float(value[0])
    return (first, as_float(value[1]))


_CONVERT = {
    "float": lambda key, v: as_float(v),
    "bool": lambda key, v: bool(v),
    "pair": _pair,
    "optional_pair": lambda key, v: _pair(key, v, optional_first=True),
}


def core_options(rule, group, host_lr=True):
    """The core's options struct for a param group: every key of the rule's schema, by name.
    ``host_lr=False`` leaves lr at 0 instead of reading it: for a CUDA tensor lr where its value
    does not matter (state layout) or the kernels read it on the device (_device_lr.py)."""
    return OPTIONS[rule](
        **{key: _CONVERT[kind](key, group[key] if host_lr or key != "lr" else 0.0) for key, kind in FIELDS[rule]}
    )


# rule name -> its schema's keys, to read a group's values in one C-level pass.
KEYS = {rule: tuple(key for key, _ in fields) for rule, fields in FIELDS.items()}
# Immutable values: the same object always holds the same value (a zero's sign included).
_IMMUTABLE = frozenset((float, int, bool, str, type(None)))


def _immutable(values):
    """Whether every value is an immutable plain Python value or a tuple of them (a list, a
    tensor or an array may change in place while the group holds the same object)."""
    for value in values:
        kind = type(value)
        if kind not in _IMMUTABLE and not (kind is tuple and all(type(v) in _IMMUTABLE for v in value)):
            return False
    return True


class RuleOptimizer(Optimizer):
    """An Optimizer whose update is one element-wise rule of the core, named by the ``rule``
    class keyword. Everything rule-specific comes from the rule's schema."""

    _rule = None
    # The core loads every gradient of the step through its gradient transform (NOTE:
    # [gradient transform]): the deferred clip and GradScaler's lazy unscale ride on it (_clip.py).
    _fused_grad_transform = True

    def __init_subclass__(cls, rule=None, **kwargs):
        super().__init_subclass__(**kwargs)
        if rule is not None:
            if rule not in OPTIONS:
                raise TypeError(f"{cls.__name__}: the core has no rule {rule!r}")
            cls._rule = rule
            cls._counts_steps = OPTIONS[rule].counts_steps
            # 8-bit state is a storage of the element-wise drivers; the reduction rules'
            # passes (and Adafactor's factored state) read their state as stored.
            cls._supports_8bit_state = not OPTIONS[rule].reduction
            # Element-wise updates are exact on any shard of a DTensor; reductions need whole tensors.
            cls._dtensors = "replicated" if OPTIONS[rule].reduction else "sharded"
            cls._dense_layouts = not OPTIONS[rule].reduction
            # The element-wise kernels substitute a device lr into the options (device_lr.cuh).
            cls._device_lr = not OPTIONS[rule].reduction and "lr" in dict(FIELDS[rule])

    def _option_source(self, group):
        """The mapping the core's options are read from: the group itself, except where torch
        reads a key from the optimizer's defaults instead (Adagrad's initial_accumulator_value)."""
        return group

    def _options(self, group):
        return core_options(self._rule, self._option_source(group))

    def _step_options(self, group, host_lr):
        """core_options of the group; inside step() built once per group (Optimizer.step's
        _options_memo: no user code runs there to change the hyperparameters in between)."""
        memo = self.__dict__.get("_options_memo")
        if memo is None:
            return core_options(self._rule, self._option_source(group), host_lr)
        key = (id(group), host_lr)
        options = memo.get(key)
        if options is None:
            options = memo[key] = self._kept_options(key, group, host_lr)
        return options

    def _kept_options(self, key, group, host_lr):
        """core_options of the group, kept from an earlier step while the group holds the very
        same immutable objects as its hyperparameters (the struct is never modified): a step of
        a model with many groups (layer-wise learning rates) builds none of them again unless a
        scheduler or the user set a value. Identity, not equality: 0.0 == -0.0, and a step with
        lr=-0.0 can differ from one with lr=0.0 in the sign of a zero parameter."""
        kept = self.__dict__.setdefault("_options_kept", {})
        source = self._option_source(group)
        values = tuple(map(source.get, KEYS[self._rule]))
        entry = kept.get(key)
        if entry is not None and all(map(is_, entry[0], values)):
            return entry[1]
        options = core_options(self._rule, source, host_lr)
        if _immutable(values):
            if key not in kept and len(kept) >= 2 * len(self.param_groups):
                # Keyed by the group's id: load_state_dict replaces every group dict, and each
                # would leave its entry behind for good. Entries of groups no longer in the
                # optimizer go; a new group that reuses a dead one's id finds its entry checked
                # by identity like any other.
                live = {id(g) for g in self.param_groups}
                for stale in [k for k in kept if k[0] not in live]:
                    del kept[stale]
            kept[key] = (values, options)
        else:
            kept.pop(key, None)
        return options

    def _layout_options(self, group):
        # The state layout never depends on lr: a CUDA tensor lr is not read back for it (a
        # host read each step, and impossible while a CUDA graph is being captured).
        return self._step_options(group, host_lr=not _interop.is_cuda(group.get("lr")))

    def _state_names(self, group):
        return tuple(self._layout_options(group).state_names())

    def _state_shapes(self, group, arr):
        # The rule's schema decides (RuleSpec::state_arrays): the parameter's shape for the
        # element-wise rules, Adafactor's row and column factors for matrices.
        return [(name, tuple(shape)) for name, shape in self._layout_options(group).state_arrays(list(arr.shape))]

    def _nonnegative_states(self, group):
        return tuple(self._layout_options(group).nonnegative_states())

    _one_call = True

    def _run_options(self, group):
        return self._step_options(group, host_lr=not _device_lr.uses_device_lr(self, group))

    def _run(self, plan, group, control):
        getattr(plan, self._rule)(self._run_options(group), control)

    # NOTE: [per-tensor scalars] (include/genesis/tensor_slots.h): NAdam's mu_product, ASGD's
    # eta and mu are 0-dim float32 arrays in a parameter's state, laid out like its step
    # counter (on the CPU, or on the parameter's CUDA device); the base class creates them and
    # hands them to the plan after the state arrays. The overrides below check and load them.
    def _scalars(self, group):
        return self._options(group).scalar_state()

    def _check_state(self, param, group, where):
        super()._check_state(param, group, where)
        if param not in self.state:
            return
        arr = _interop.array_of(param)
        for name, _ in self._layout_options(group).scalar_state():  # names only: no lr read
            value = self.state[param].get(name)
            if value is not None and not _is_step_counter(value, arr):
                raise ValueError(
                    f"state '{name}' of {where} must be a 0-dim float32 array on the CPU "
                    "(on the parameter's device for CUDA parameters)"
                )

    def _import_state(self, param, group, entries, key):
        names = [n for n, _ in self._scalars(group)]
        if not names or not isinstance(entries, dict):
            return super()._import_state(param, group, entries, key)
        out = super()._import_state(param, group, {k: v for k, v in entries.items() if k not in names}, key)
        arr = _interop.array_of(param)
        for name in names:
            if name in entries:
                value = loaded_number(entries[name], name, key)
                if not math.isfinite(value):
                    raise ValueError(f"state '{name}' of parameter {key} must be a finite number, got {value}")
                out[name] = _interop.new_step(arr, value)
        return out


def rule_classes():
    """name -> class of every optimizer defined by the rule modules (genesis/optim/<rule>.py,
    one per rule of the core's list, in its order), for genesis.optim to export."""
    import importlib

    out = {}
    for rule in OPTIONS:
        module = importlib.import_module(f"{__package__}.{rule}")
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, RuleOptimizer) and value.__module__ == module.__name__:
                out[name] = value
    return out
