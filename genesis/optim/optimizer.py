"""The Optimizer base class: param groups, lazily created state, state_dict, and the per-step
hand-off of whole groups to the compiled core (docs/semantics.md#the-optimizer-interface)."""

import contextlib
import copy
import math
import numbers
import warnings
from itertools import accumulate, chain

import numpy as np

from .. import _C, _cuda_array, _interop
from . import _base, _clip, _device_lr, _differentiable, _quantized, _sparse
from ._base import HOOK_TABLES, Base, init_hook_tables, with_step_hooks
from ._state import _OptimizerState, _ParamState


class _RequiredParameter:
    """Marks a hyperparameter that has no default (SGD's lr)."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class _CachedPlan:
    """A compiled GroupPlan plus what it was built for; any difference means a rebuild."""

    __slots__ = (
        "plan",
        "layout",
        "version",
        "exposure",
        "cuda_device",
        "inv_scale",
        "found_inf",
        "staged",
        "lr",
        "shards",
        "inference",
        "torch",
    )

    def __init__(self, params, layout, version):
        self.plan = _C.GroupPlan(params)
        self.layout = layout
        self.version = version
        self.exposure = None  # Optimizer._exposure when the plan last checked its state arrays
        self.staged = set()  # indices of parameters updated through staging copies
        self.inference = False  # an admitted parameter is an inference tensor (_interop.check_not_inference)
        self.cuda_device = cuda_device_of(params)
        # CUDA groups: the device tensor holding 1/scale that the last step's kernels read,
        # kept until the next step so the launch never sees freed memory.
        self.inv_scale = None
        self.found_inf = None  # likewise, GradScaler's flag copied to the group's device
        self.lr = None  # likewise, a capturable group's lr tensor (_device_lr.control)
        self.shards = None  # the group's DTensor parameters' _ShardPlan, built at their first step
        # Only torch tensors take the one-call step (Optimizer._step_in_one_call): a NumPy group
        # does not try it every step.
        self.torch = all(map(_interop.is_torch, params))


class _ShardPlan:
    """A GroupPlan over the shards of a group's DTensor parameters (NOTE: [DTensor parameters]
    in genesis/_interop.py), kept across steps like the group's own plan: the core sees each
    shard as a plain tensor whose gradient is set, for the step only, to the shard of the
    parameter's gradient. Rebuilt when a shard object changes (FSDP2 re-sharding, to_empty)
    and whenever the optimizer's state was exposed: its held arrays are the shards of the
    state DTensors, which a user replacing a state DTensor does not touch."""

    __slots__ = ("indices", "sources", "shards", "plan", "exposure")

    def __init__(self, params, indices, sources, exposure):
        self.indices = indices  # the DTensor parameters' indices in the group
        self.sources = sources  # their shard objects (_interop.shard_object), for identity checks
        # The core's arrays: views of the shards of our own, so that setting their .grad for a
        # step never touches the DTensors' internals.
        self.shards = [_interop.local_of(params[i]).detach() for i in indices]
        self.plan = _C.GroupPlan(self.shards)
        self.exposure = exposure


def cuda_device_of(params):
    """The CUDA device of a group's parameters (one device per group, checked when the group
    is added), or None for a CPU group."""
    for p in params:
        arr = _interop.array_of(p)
        if _interop.is_cuda(arr):
            return arr.device
    return None


@contextlib.contextmanager
def _grad_enabled():
    torch = _interop.torch_module()
    if torch is None:
        yield
    else:
        with torch.enable_grad():
            yield


def as_float(x, name="hyperparameter"):
    """A hyperparameter as a Python float. Numbers and one-element tensors/arrays are accepted,
    as torch accepts them; anything else (a string, None) is a TypeError naming it, instead of
    being converted."""
    if type(x) is float:  # the common case, without the numbers.Real ABC check
        return x
    if isinstance(x, numbers.Real):
        return float(x)
    if hasattr(x, "item") and hasattr(x, "shape"):
        size = int(np.prod(x.shape))
        if size != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        value = x.item()
        if isinstance(value, numbers.Real):
            return float(value)
    raise TypeError(f"{name} must be a number, got {type(x).__name__} {x!r}")


# Mixed-precision options (docs/mixed-precision.md). They join a group's hyperparameters only
# when the user sets them, so plain use keeps torch's exact param_group layout.
PRECISION_OPTIONS = ("master_weights", "state_dtype", "stochastic_rounding", "seed", "min_8bit_size")
_HALF_CODES = (_interop.FLOAT16, _interop.BFLOAT16)


def precision_defaults(options):
    """Validate the mixed-precision keyword arguments of an optimizer's constructor."""
    unknown = set(options) - set(PRECISION_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return dict(options)


_PLAIN_STEP = _C.StepControl()
# How often step() re-admits parameters that change while it prepares them (see _admit_all).
_ADMIT_ATTEMPTS = 4


def _where(group_index, param_index):
    return f"parameter {param_index} of param group {group_index}"


class Optimizer(Base):
    """Base class of the genesis optimizers, with torch.optim.Optimizer's interface.

    Mixed precision (docs/mixed-precision.md), per optimizer or per param group; these keys
    appear in a group only when given, so plain use keeps torch's exact param_group layout:

    - float16/bfloat16 parameters compute in float32 registers and round once on store; their
      state is float32 unless ``state_dtype`` says otherwise.
    - ``master_weights=True``: a float32 ``state["master_param"]`` is what the rule updates;
      the 16-bit parameter receives its rounded value (no precision is lost across steps).
    - ``state_dtype="bfloat16"`` (or ``"float32"``, or a torch/NumPy dtype): halves the state's
      memory at the cost of ~3 significant digits in the moments; fine for the first moment,
      noticeably noisier for Adam's second moment on long runs. float16 state is refused (a
      squared gradient overflows or underflows it).
    - ``state_dtype="int8"``: blockwise 8-bit state (docs/low-bit-state.md), about 1 byte per
      element instead of 4: uint8 codes in ``state[name]`` plus float32 block scales in
      ``state[name + "_absmax"]``. Tensors below ``min_8bit_size`` elements (default 4096)
      (and empty ones) keep float32 state. ``float32_state_dict()`` returns the state as float32.
    - ``stochastic_rounding=True`` (with ``seed``): bfloat16 parameters without master weights
      round each update stochastically, from a counter-based generator keyed by (seed,
      parameter index, ``group["stochastic_rounding_step"]``), so tiny updates accumulate in
      expectation instead of being rounded away. The group's other parameters round to nearest.

    Where torch is importable this class is a ``torch.optim.Optimizer`` (see _base.py), so
    torch's schedulers, SWALR, GradScaler and distributed helpers accept it; hooks
    (``register_step_pre_hook`` and the rest, and torch's global optimizer hooks) run around
    genesis steps as around torch's. Parameters may be given with names
    (``model.named_parameters()`` or ``(name, p)`` pairs in a group); the names are kept in the
    group's ``param_names`` and in state_dict(), as torch 2.13 does.

    A subclass declares its state for a group (``_state_names``), whether it counts steps
    (``_counts_steps``), how to validate a group's hyperparameters (``_check_group``) and how to
    call the core (``_run``). Everything else, including state_dict compatibility with torch,
    lives here.
    """

    _counts_steps = True
    _supports_sparse = False  # torch sparse gradients (SGD: densified, as the numbers equal)
    # Hyperparameters a subclass always has, whatever a loaded state_dict says (AdamW keeps
    # decoupled weight decay when it loads an Adam state_dict, as torch's AdamW does).
    _fixed_options = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = with_step_hooks(cls.__dict__["step"])

    def _patch_step_function(self):
        """torch's base would wrap step() in its profiler hook on every call; genesis's step
        hooks are installed once per class instead (see _base.with_step_hooks)."""

    def __init__(self, params, defaults):
        self.defaults = defaults
        init_hook_tables(self)
        self._version = 0
        self._exposure = 0
        self._plans = []
        self._state = _OptimizerState(self)
        self.param_groups = []
        # Hyperparameters are checked before the parameters are looked at, as torch does.
        if not any(v is required for v in defaults.values()):
            self._check_group(dict(defaults))
        if _interop.is_parameter(params):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"Tensors or dicts, but got {_interop.typename(params)}"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a "
                "list instead."
            )
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)
        self._warned_capturable_if_run_uncaptured = True

    # ----------------------------------------------------------------------------- state
    @property
    def state(self):
        return self._state

    @state.setter
    def state(self, value):
        state = _OptimizerState(self)
        for param, entries in value.items():
            dict.__setitem__(state, param, _ParamState(self, entries))
        self._state = state
        self._state_changed()

    def _state_changed(self):
        self._version += 1

    def _state_exposed(self):
        self._exposure += 1

    # Pickling and copy.deepcopy (as torch optimizers allow): the compiled plans hold raw
    # pointers, so they are left out and rebuilt on the next step. Hooks are kept, as torch does.
    def __getstate__(self):
        state = {
            "defaults": self.defaults,
            "param_groups": self.param_groups,
            "state": {p: dict(s) for p, s in self._state.items()},
        }
        for name in HOOK_TABLES:
            state[name] = getattr(self, name)
        return state

    def __setstate__(self, saved):
        self.defaults = saved["defaults"]
        self.param_groups = saved["param_groups"]
        for name in HOOK_TABLES:
            if name in saved:
                setattr(self, name, saved[name])
        init_hook_tables(self)
        self._version = 0
        self._exposure = 0
        self._plans = []
        self.state = saved["state"]
        self._has_dtensors = any(_interop.any_dtensor(g["params"]) for g in self.param_groups)

    # ------------------------------------------------------------------------ param groups
    def add_param_group(self, param_group):
        """Add a group of parameters with its own hyperparameters (missing ones take the
        optimizer's defaults). Validated like the constructor, before anything changes; as in
        torch, the dict given becomes the group. Parameters may be ``(name, param)`` pairs."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        group = dict(param_group)
        params = group["params"]
        if _interop.is_parameter(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a "
                "list instead."
            )
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            group["param_names"] = names
        group_index = len(self.param_groups)
        if group.get("differentiable", self.defaults.get("differentiable")):
            _differentiable.check_params(params, f"param group {group_index}")
        for i, p in enumerate(params):
            _interop.check_param_type(
                p, _where(group_index, i), differentiable=bool(self.defaults.get("differentiable"))
            )
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        for name, value in self._fixed_options.items():
            group[name] = value
        self._check_group(group)
        for i, p in enumerate(params):
            self._check_dtensor(p, group, _where(group_index, i))
        if _interop.any_dtensor(params):
            self._has_dtensors = True  # GradScaler unscales them eagerly (_clip.supports_lazy_unscale)
        # One device per group: a step's skip flag and stream then belong to the whole group.
        devices = {_interop.device_of(_interop.array_of(p)) for p in params}
        devices.discard("meta")  # materialized later (to_empty), checked at the first step
        cuda_kinds = {
            _interop.library_of(_interop.array_of(p)) for p in params if _interop.on_cuda(_interop.array_of(p))
        }
        if len(cuda_kinds) > 1:  # each launches on its own library's stream
            raise ValueError(
                f"a param group mixes CUDA arrays of several libraries ({', '.join(sorted(cuda_kinds))}); "
                "use one group per library"
            )
        if len(devices) > 1:
            raise ValueError(
                "a param group holds parameters on several devices "
                f"({', '.join(sorted(devices))}); use one group per device"
            )
        # capturable=True: step() launches only device work on torch's current stream and reads
        # nothing back (step counters on the device, GradScaler's values too, a CUDA tensor lr:
        # _device_lr.py), so a CUDA graph can capture it.
        if group.get("capturable") and "cpu" in devices:
            raise ValueError("capturable=True needs CUDA parameters (a CUDA graph captures only device work)")
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            # As torch; the compiled plan updates such a parameter once per step.
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; "
                "in future, this will cause an error; "
                "see github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )
        seen = set()
        for g in self.param_groups:
            seen.update(id(p) for p in g["params"])
            if ("param_names" in group) != ("param_names" in g):
                text = "with names" if "param_names" in group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {text} to the optimizer"
                )
        if any(i in seen for i in ids):
            raise ValueError("some parameters appear in more than one parameter group")
        group["params"] = params
        param_group.clear()
        param_group.update(group)
        self.param_groups.append(param_group)

    def _dense_ok(self, group):
        """Whether this group's parameters may be updated in a dense layout of their own
        (channels_last: NOTE: [dense layouts] in csrc/python/bindings.cpp): element-wise rules
        without 8-bit state (whose blocks follow the logical order)."""
        if not self._dense_layouts:
            return False
        wanted = group.get("state_dtype")
        return wanted is None or _interop.dtype_code_of_name(wanted) != _interop.UINT8

    def _check_dtensor(self, param, group, where):
        """NOTE: [DTensor parameters] (_interop.py): which DTensors this optimizer's update is
        exact on, checked when a parameter is added and when its state is created."""
        if not _interop.is_dtensor(param):
            return
        wanted = group.get("state_dtype")
        if wanted is not None and _interop.dtype_code_of_name(wanted) == _interop.UINT8:
            raise ValueError(
                f"{where} is a DTensor; 8-bit state (state_dtype='int8') is not supported for DTensor "
                "parameters (its block scales follow the local shard, which a distributed checkpoint "
                "cannot reshard)"
            )
        if self._dtensors == "sharded":
            return
        if self._dtensors is None:
            raise TypeError(f"{where} is a DTensor; {type(self).__name__} does not update DTensor parameters")
        if _interop.is_sharded(param):
            raise ValueError(
                f"{where} is a DTensor with placements {tuple(param.placements)}; {type(self).__name__}'s update "
                "reduces over whole tensors, so it takes replicated DTensors only "
                "(genesis.distributed.ZeroOptimizer shards it by whole tensors)"
            )

    def _check_group(self, group):
        """Raise ValueError for invalid hyperparameters (the core's checks, shared with the C++
        API) or for torch options genesis does not implement."""
        if group.get("differentiable"):
            _differentiable.check_group(self, group)
        if "lr" in group:
            as_float(group["lr"], "lr")  # a string is a TypeError, as in torch; not converted
        _check_torch_flags(group)
        if group.get("capturable") and group.get("stochastic_rounding"):
            raise ValueError(
                "capturable=True cannot be combined with stochastic_rounding: the "
                "rounding stream advances on the host, so every replay of a captured "
                "step would draw the same bits"
            )
        _C.validate(self._options(group))
        if group.get("state_dtype") is not None:
            code = _interop.dtype_code_of_name(group["state_dtype"])
            if code == _interop.UINT8 and not self._supports_8bit_state:
                raise ValueError(
                    f"state_dtype='int8' is not supported by {type(self).__name__}; "
                    f"8-bit state is for the element-wise rules (docs/low-bit-state.md)"
                )
        if "min_8bit_size" in group:
            _quantized.check_min_size(group["min_8bit_size"])
        seed = group.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")

    def _storage(self, group, arr):
        """(state dtype code, master weights?) for a parameter of this group: float32 state
        for 16-bit parameters unless the group asks for another state_dtype; a float32
        master copy only for 16-bit parameters of groups with master_weights."""
        code = _interop.dtype_code(arr)
        wanted = group.get("state_dtype")
        if wanted is None:
            state = _interop.FLOAT32 if code in _HALF_CODES else code
        else:
            state = _interop.dtype_code_of_name(wanted)
        if state == _interop.UINT8:
            state = _quantized.storage(group, code, arr, bool(self._state_names(group)))
        if not _C.supported_storage(code, state):
            raise ValueError(
                f"state_dtype {_interop.CODE_NAMES[state]} is not supported for {_interop.CODE_NAMES[code]} parameters"
            )
        return state, bool(group.get("master_weights")) and code in _HALF_CODES

    def _control(self, group, cached, grad_scale, found_inf, clip=None):
        """The step's mixed-precision inputs for the core: GradScaler's 1/scale, the pending
        clip (NOTE: [deferred clip]), and the stochastic rounding stream (its counter, kept in
        the group so that a resumed run draws the same bits, advances after every step that
        ran: see step())."""
        rounding = bool(group.get("stochastic_rounding"))
        cuda = cached.cuda_device
        if grad_scale is None and not rounding and cuda is None and clip is None:
            return _PLAIN_STEP
        counter = group.get("stochastic_rounding_step", 0) if rounding else 0
        device = {}
        if cuda is not None:
            torch = _interop.torch_module()
            device["stream"] = torch.cuda.current_stream(cuda).cuda_stream
            if found_inf is not None and _interop.is_cuda(found_inf):  # a host flag was read in step()
                # On the group's device as float32, as torch's fused optimizers do (the scaler's
                # flag may live on another GPU); a device-to-device copy, no host sync.
                cached.found_inf = found_inf.to(device=cuda, dtype=torch.float32).reshape(())
                device["found_inf_ptr"] = cached.found_inf.data_ptr()
            if _device_lr.uses_device_lr(self, group):
                device.update(_device_lr.control(group, cached))
            if grad_scale is not None:
                # The kernels read 1/scale from device memory: computed there from a device
                # scale (no sync, moved to the group's device), or filled from a host one.
                if _interop.is_cuda(grad_scale):
                    inv = grad_scale.to(device=cuda).double().reciprocal().float().reshape(())
                else:
                    inv = torch.full((), 1.0 / as_float(grad_scale), dtype=torch.float32, device=cuda)
                cached.inv_scale = inv
                device["grad_scale_ptr"] = inv.data_ptr()
        inv_scale = 1.0
        if grad_scale is not None and cuda is None:
            inv_scale = 1.0 / as_float(grad_scale)
        elif clip is not None and clip.inv_scale is not None:  # unscale_, then a plain step()
            inv_scale = clip.inv_scale
        if clip is not None:
            device.update(clip.control(cuda))
        return _C.StepControl(
            grad_scale=inv_scale,
            stochastic_rounding=rounding,
            seed=int(group.get("seed", 0)),
            counter=counter,
            **device,
        )

    # -------------------------------------------------------------------- deferred clipping
    def clip_grad_norm_(self, max_norm, norm_type=2.0, error_if_nonfinite=False):
        """``torch.nn.utils.clip_grad_norm_`` over this optimizer's gradients, applied by the
        next ``step()`` instead of by a pass of its own (docs/mixed-precision.md#fused-clipping).

        Computes the total norm of every gradient of every group in one deterministic pass
        (norm types 1, 2, any p > 0 and ``inf`` in the core; 0, negative, ``-inf`` as torch
        computes them) and returns it exactly as ``genesis.nn.utils.clip_grad_norm_`` would
        (after a GradScaler ``unscale_``: the norm of the unscaled gradients). The coefficient
        ``min(max_norm / (total + 1e-6), 1)`` is kept and multiplied into each gradient by the
        next update as it loads it; for float32/float64 gradients the step gives the same bits
        as ``unscale_``, ``genesis.nn.utils.clip_grad_norm_``, ``step()``.

        ``p.grad`` is never written: between this call and the step, and after the step, it
        holds the gradients as they were before the clip (still multiplied by the loss scale
        if a GradScaler's ``unscale_`` is pending), not the clipped values torch would leave.
        ``zero_grad()`` and ``step()`` discard the pending clip; if the gradients change in
        between (another backward, an in-place edit), ``step()`` raises RuntimeError rather
        than clip them by a coefficient computed for others. Calling it twice before a step is
        a RuntimeError (coefficients do not compose), as is calling it after
        ``clip_grad_value_``. ``error_if_nonfinite`` raises before anything is recorded."""
        return _clip.clip_grad_norm(self, max_norm, norm_type, error_if_nonfinite)

    def clip_grad_value_(self, clip_value):
        """``torch.nn.utils.clip_grad_value_`` over this optimizer's gradients, applied by the
        next ``step()``: each gradient element is clamped to ``[-clip_value, clip_value]`` as the
        update loads it (after 1/scale and any ``clip_grad_norm_`` coefficient). ``clip_value``
        must be >= 0; calling it twice clamps to the smaller bound. As with
        ``clip_grad_norm_``, ``p.grad`` keeps its unclamped values before and after the step."""
        _clip.clip_grad_value(self, clip_value)

    # ------------------------------------------------------------------------------- step
    def zero_grad(self, set_to_none=True):
        """Clear the gradients: set them to None (default) or zero them in place. A pending
        clip_grad_norm_/clip_grad_value_ (or lazy GradScaler unscale_) is discarded."""
        if _base.profiling():  # torch's profiler region and name (_base.profiling)
            with _base.record_function(f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"):
                return self._zero_grad(set_to_none)
        return self._zero_grad(set_to_none)

    def _zero_grad(self, set_to_none):
        _clip.discard(self)
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                elif _interop.is_torch(grad):
                    if grad.grad_fn is not None:
                        grad.detach_()
                    else:
                        grad.requires_grad_(False)
                    grad.zero_()
                else:
                    grad.fill(0)

    # GradScaler protocol: before step() a scaler may set `grad_scale` (the loss scale, to
    # divide the gradients by inside the fused update) and `found_inf` (non-zero: skip the step,
    # changing nothing). genesis.amp.GradScaler always does so for a genesis optimizer.
    # torch.amp.GradScaler does only where this says True, and frameworks read it too: Lightning
    # then skips its unscale_ before clipping and refuses to clip at all, since the gradients
    # stay scaled until the step. So it says what it says for torch's optimizer built with the
    # same arguments: True only for `fused=True` (docs/mixed-precision.md#torchs-gradscaler).
    @property
    def _step_supports_amp_scaling(self):
        return bool(self.defaults.get("fused"))

    # Whether state_dtype="int8" (docs/low-bit-state.md) applies to this optimizer's state.
    _supports_8bit_state = True
    # Whether the kernels can read a capturable group's CUDA tensor lr on the device (_device_lr.py).
    _device_lr = False
    # Which DTensor parameters the update is exact on (NOTE: [DTensor parameters]): "sharded"
    # (any placements: element-wise rules), "replicated" (whole-tensor reductions), or None.
    _dtensors = None
    # Whether the update is element-wise, so that it may walk a densely laid out parameter
    # (channels_last) and its gradient and state in memory order (NOTE: [dense layouts]).
    _dense_layouts = False
    # Whether a group's update is the plan's rule method alone (_run_options names its options),
    # so that a step may gather and update every group in one core call (_step_in_one_call).
    _one_call = False

    def step(self, closure=None):
        """One update of every parameter that has a gradient. If ``closure`` is given it is
        called first (with gradients enabled) and its return value is returned."""
        loss = None
        if closure is not None:
            with _grad_enabled():
                loss = closure()
        clip = _clip.take(self)  # this step's deferred clip, if any; never a later step's
        found_inf = getattr(self, "found_inf", None)
        # On the host the flag decides here; a CUDA flag is read by the kernels (no sync).
        if found_inf is not None and not _interop.is_cuda(found_inf) and as_float(found_inf) != 0.0:
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        if grad_scale is not None or found_inf is not None:
            _check_scaler_groups(self.param_groups)
        # differentiable=True groups run torch's autograd-traceable update (_differentiable.py);
        # every group is validated before any is updated.
        traced = {}
        for gi, group in enumerate(self.param_groups):
            if group.get("differentiable"):
                traced[gi] = _differentiable.prepare(self, group, gi)
            elif _interop.is_cuda(group.get("lr")):
                _device_lr.check(self, group, gi, cuda_device_of(group["params"]))
        if traced and clip is not None:
            raise TypeError(
                "a deferred clip_grad_norm_/clip_grad_value_ cannot apply to "
                "differentiable=True groups (they run torch's traceable update); "
                "use genesis.nn.utils.clip_grad_norm_ on the parameters instead"
            )
        if traced and found_inf is not None and as_float(found_inf) != 0.0:
            return loss  # a device flag, read on the host: only on this uncommon path
        # No user code runs from here to the end of the step, so the core's options struct of a
        # group, built from its hyperparameters for _prepare's state layout, serves its update
        # too (RuleOptimizer._step_options); outside a step every call builds its own.
        self._options_memo = {}
        try:
            if not traced and self._step_in_one_call(grad_scale, found_inf, clip):
                return loss
            self._prepare()
            self._clip_in_flight = clip  # a CUDA coefficient must outlive the launches reading it
            first_index = None
            for gi, (cached, group) in enumerate(zip(self._plans, self.param_groups)):
                if gi in traced:
                    traced[gi](grad_scale)
                    continue
                control = self._control(group, cached, grad_scale, found_inf, clip)
                self._run(cached.plan, group, control)
                if cached.staged:
                    if first_index is None:
                        first_index = list(accumulate((len(g["params"]) for g in self.param_groups), initial=0))
                    inputs = _sparse.StepInputs(grad_scale, found_inf, clip)
                    self._run_staged(cached, group, control, first_index[gi], inputs)
                if group.get("stochastic_rounding"):
                    group["stochastic_rounding_step"] = group.get("stochastic_rounding_step", 0) + 1
        finally:
            self._options_memo = None
        return loss

    def _step_in_one_call(self, grad_scale, found_inf, clip):
        """The step of every group through one core call, _C.run_plans (NOTE: [one-call step] in
        csrc/python/bindings.cpp), when every group has its cached plan and nothing about it
        needs Python (staged or DTensor parameters, inference tensors). False when the step has
        to take the checked path (_prepare, then a core call per group), nothing changed."""
        plans, groups = self._plans, self.param_groups
        if not self._one_call or len(plans) != len(groups):
            return False
        work = []
        for cached, group in zip(plans, groups):
            params = group["params"]
            if (
                cached is None
                or not cached.torch
                or cached.version != self._version
                or cached.staged
                or cached.shards is not None
                or cached.inference
                or type(params) is not list
                or cached.layout != self._layout(group)
            ):
                return False
            control = self._control(group, cached, grad_scale, found_inf, clip)
            work.append((cached.plan, params, cached.exposure != self._exposure, self._run_options(group), control))
        self._clip_in_flight = clip  # a CUDA coefficient must outlive the launches reading it
        if not _C.run_plans(work):
            return False
        for cached, group in zip(plans, groups):
            cached.exposure = self._exposure
            if group.get("stochastic_rounding"):
                group["stochastic_rounding_step"] = group.get("stochastic_rounding_step", 0) + 1
        return True

    def _layout(self, group):
        """What a group's cached plan was built for besides its parameters: its state names and
        storage options (a difference means a new plan)."""
        return (
            self._state_names(group),
            group.get("state_dtype"),
            bool(group.get("master_weights")),
            group.get("min_8bit_size"),
        )

    def _run_options(self, group):
        """The options object of the plan's rule method for this group (with _one_call)."""
        raise NotImplementedError

    def _options(self, group):
        """The core's option struct for a group's hyperparameters."""
        raise NotImplementedError

    def _scalars(self, group):
        """(name, initial value) of the rule's per-tensor scalars for this group (NAdam's
        mu_product, ASGD's eta and mu: 0-dim float32 state laid out like the step counter, whose
        pointers follow the state arrays'; see NOTE: [per-tensor scalars]); none by default."""
        return ()

    def _state_names(self, group):
        """Names of the per-element state arrays for this group, in the core's slot order."""
        raise NotImplementedError

    def _state_shapes(self, group, arr):
        """(name, shape) of each state array of the parameter whose core array is `arr`, in the
        core's slot order: the parameter's shape unless the rule says otherwise (Adafactor's
        row and column factors)."""
        return [(name, tuple(arr.shape)) for name in self._state_names(group)]

    def _nonnegative_states(self, group):
        """Names of the state arrays the rule never makes negative (8-bit state stores them
        with the unsigned map, NOTE: [non-negative states]); none by default."""
        return ()

    def _run(self, plan, group, control):
        """Call the core's update for one gathered group with the step's _C.StepControl."""
        raise NotImplementedError

    # Sparse gradients (_sparse.py): whether the group's update of one touches only its entries,
    # that update, and what the rule refuses about one (raised before anything is modified).
    def _sparse_rows(self, group):
        return False

    def _update_rows(self, group, param, grad):
        raise NotImplementedError

    def _check_sparse_grad(self, group, where):
        pass

    def _prepare(self):
        """Gather every group's gradients into its cached plan (self._plans) before any update
        runs, so that a bad gradient anywhere raises before any parameter or state is touched."""
        groups = self.param_groups
        if len(self._plans) != len(groups):
            self._plans = [None] * len(groups)
        pending = []
        for gi, group in enumerate(groups):
            if group.get("differentiable"):
                continue  # updated by torch's implementation (see step)
            params = group["params"]
            if type(params) is not list:  # the user may have set a tuple (torch iterates it)
                params = group["params"] = list(params)
            layout = self._layout(group)
            cached = self._plans[gi]
            missing = None
            if cached is not None and cached.version == self._version and cached.layout == layout:
                exposed = cached.exposure != self._exposure
                missing = cached.plan.gather(params, exposed)  # None: the parameters changed
            if missing is None:
                cached = self._plans[gi] = _CachedPlan(params, layout, self._version)
                missing = cached.plan.gather(params)
            cached.exposure = self._exposure
            if cached.inference:  # admitted inside inference mode: is this step still inside it?
                for i, p in enumerate(params):
                    if p.grad is not None:
                        _interop.check_not_inference(_interop.array_of(p), _where(gi, i))
            if missing:
                pending.append((gi, group, cached, missing))
            for i in cached.staged:  # their gradients, checked before any group updates
                grad = params[i].grad
                if grad is not None and _interop.is_torch(grad):
                    where = _where(gi, i)
                    _interop.check_not_negated(grad, f"the gradient of {where}")
                    if grad.is_sparse:
                        _interop.check_grad(params[i], grad, where, sparse_ok=self._supports_sparse)
                        self._check_sparse_grad(group, where)
            if cached.shards is not None:  # DTensor gradients, checked before any group updates
                for i in cached.shards.indices:
                    if params[i].grad is not None:
                        _interop.check_dtensor_grad(params[i], params[i].grad, _where(gi, i))
        if pending:
            self._admit_all(pending)

    def _admit_all(self, pending):
        """Validate, create state for and admit every pending parameter, then gather again.
        Validation runs for all of them before any state is created: a failure leaves nothing
        changed. Another thread may change a parameter between the admission and the gather
        (NOTE: [pinned storage]); that is retried a few times, then reported."""
        for _ in range(_ADMIT_ATTEMPTS):
            for gi, group, _cached, missing in pending:
                for i in missing:
                    p = group["params"][i]
                    where = _where(gi, i)
                    _interop.check_param(p, where)
                    _interop.check_grad(p, p.grad, where, sparse_ok=self._supports_sparse)
                    if _interop.is_torch(p.grad) and p.grad.is_sparse:
                        self._check_sparse_grad(group, where)
                    self._check_dtensor(p, group, where)
                    self._check_state(p, group, where)
            first_index = list(accumulate((len(g["params"]) for g in self.param_groups), initial=0))
            for gi, group, cached, missing in pending:
                for i in missing:
                    p = group["params"][i]
                    if _interop.needs_staging(p, self._dense_ok(group)):
                        cached.plan.stage(i, True)
                        cached.staged.add(i)
                    else:
                        self._admit(cached.plan, i, p, _interop.array_of(p), group, first_index[gi] + i)
                    if _interop.is_inference(p):
                        cached.inference = True
                cached.cuda_device = cuda_device_of(group["params"])  # a parameter may have moved
            still = []
            for gi, group, cached, _ in pending:
                missing = cached.plan.gather(group["params"])
                if missing is None:
                    raise RuntimeError(
                        f"the parameter list of param group {gi} changed while "
                        "step() was preparing it (another thread?)"
                    )
                if missing:
                    still.append((gi, group, cached, missing))
            if not still:
                return
            pending = still
        raise RuntimeError(
            f"parameters of param group {pending[0][0]} kept changing while step() "
            "was preparing them (is another thread modifying them?)"
        )

    def _check_state(self, param, group, where):
        """Existing state must match the parameter (it may have been loaded or replaced): same
        library, shape, device and contiguity, of the state dtype (master_param: float32)."""
        if param not in self._state:
            return
        arr = _interop.core_view(_interop.array_of(param))
        state_code, master = self._storage(group, arr)
        state = self._state[param]
        shapes = dict(self._state_shapes(group, arr))
        shape = tuple(arr.shape)
        expected = {name: (state_code, shapes[name]) for name in shapes}
        if state_code == _interop.UINT8:  # 8-bit state: codes, and their block scales
            for name in shapes:
                scale = _quantized.absmax_name(name)
                expected[scale] = (_interop.FLOAT32, (_quantized.blocks(_interop.numel(arr)),))
                if (dict.get(state, name) is None) != (dict.get(state, scale) is None):
                    raise ValueError(
                        f"state '{name}' of {where} has 8-bit codes or block scales ('{scale}') without the other"
                    )
        if master:
            expected["master_param"] = (_interop.FLOAT32, shape)
        for name, (code, shape) in expected.items():
            value = dict.get(state, name)
            if value is None:
                continue
            _interop.check_dtensor_state(value, param, f"state '{name}' of {where}")
            value = _interop.core_view(value)
            if (
                _interop.library_of(value) != _interop.library_of(arr)
                or tuple(value.shape) != shape
                or _interop.dtype_code(value) != code
                or _interop.device_of(value) != _interop.device_of(arr)
                or not (
                    _interop.is_contiguous(value)
                    or (_interop.dense_strides(value) and tuple(value.shape) == tuple(arr.shape))
                )
            ):
                raise ValueError(
                    f"state '{name}' of {where} does not match the parameter (library, "
                    f"shape and device must be equal, the memory contiguous or dense, dtype "
                    f"{_interop.CODE_NAMES[code]})"
                )
            if not _interop.is_torch(value):
                _interop.check_native(value, f"state '{name}' of {where}")
                if not _interop.is_writeable(value):
                    raise ValueError(f"state '{name}' of {where} is a read-only array")
        step = state.get("step")
        if self._counts_steps and step is not None and not _is_step_counter(step, arr):
            raise ValueError(
                f"state 'step' of {where} must be a 0-dim float32 array on the CPU "
                "(on the parameter's device for CUDA parameters)"
            )

    def _admit(self, plan, index, param, arr, group, uid):
        """Create missing state for `param` (internal writes: no staleness notice) and hand
        its pointers to entry `index` of `plan`, with `arr` as the array the core updates (the
        parameter's own, or a staging copy). A stateless rule (SGD without momentum) gets no
        state entry at all, as in torch. State arrays have the parameter's shape (and, for
        complex parameters, its complex dtype, as torch's); the core sees their real views.
        `uid` numbers the parameter within the optimizer: it keys the parameter's stochastic
        rounding stream."""
        arr = _interop.core_view(arr)
        shapes = dict(self._state_shapes(group, arr))
        names = tuple(shapes)
        state_code, master = self._storage(group, arr)
        state_arrays, scalars, step, master_param, fresh, absmax = [], [], None, None, False, []
        if names or self._counts_steps or master:
            state = self._state[param]
            for name in names:
                if dict.get(state, name) is None:
                    dict.__setitem__(state, name, _new_state_array(param, arr, state_code, shapes[name]))
                    if state_code == _interop.UINT8:
                        dict.__setitem__(state, _quantized.absmax_name(name), _quantized.new_absmax(arr))
                    fresh = True
            state_arrays = [_interop.core_view(_in_layout_of(state, n, arr)) for n in names]
            if state_code == _interop.UINT8:
                absmax = [dict.__getitem__(state, _quantized.absmax_name(n)) for n in names]
            for name, initial in self._scalars(group):
                if dict.get(state, name) is None:
                    dict.__setitem__(state, name, _interop.new_step(arr, initial))
                scalars.append(dict.__getitem__(state, name))
            if self._counts_steps:
                if "step" not in state:
                    dict.__setitem__(state, "step", _interop.new_step(arr))
                step = dict.__getitem__(state, "step")
            elif names and _interop.on_cuda(arr):
                step = self._applied_steps_counter(param, dict.__getitem__(state, names[0]), fresh)
            if master:
                if dict.get(state, "master_param") is None:
                    master_param = _interop.copy_into_like(arr, arr, _interop.FLOAT32, keep_layout=True)
                    dict.__setitem__(state, "master_param", _interop.shaped_like(param, master_param))
                master_param = _interop.core_view(_in_layout_of(state, "master_param", arr))
        plan.admit(
            index,
            arr,
            state_arrays,
            scalars,
            state_code,
            step,
            master_param,
            fresh,
            uid,
            _interop.on_cuda(arr),
            state_numel=[_interop.numel(a) for a in state_arrays],
            shape=list(arr.shape),
            absmax=absmax,
            strides=_interop.dense_strides(arr),
        )

    def _run_staged(self, cached, group, control, first_index, inputs):
        """Update the group's staged parameters (complex, strided, or with a strided or sparse
        gradient: see _interop.needs_staging) with the same rule and state. A sparse gradient
        that the rule updates entry by entry goes to _sparse.run (`inputs`: the step's scaler
        and clip); every other parameter goes through a contiguous real array (the parameter's
        own memory where it already is one), and strided ones are copied back. A few
        microseconds per parameter, on a path torch users rarely take."""
        torch = _interop.torch_module()
        works, writebacks, order = [], [], []
        dtensors, rows = [], []
        for i in sorted(cached.staged):
            p = group["params"][i]
            if _interop.is_dtensor(p):
                dtensors.append(i)
                continue
            if p.grad is None:
                continue
            if p.grad.is_sparse and _sparse.takes_rows(self, group, p):
                rows.append(p)
                continue
            view = _interop.core_view(p.detach())
            dense = self._dense_ok(group) and _interop.dense_strides(view) is not None
            work = view if view.is_contiguous() or dense else view.contiguous()
            grad = _interop.core_view(_sparse.densified(self, p, p.grad) if p.grad.is_sparse else p.grad)
            if grad.stride() != work.stride() and not (grad.is_contiguous() and work.is_contiguous()):
                grad = torch.empty_like(work).copy_(grad)  # the work's layout, which the core walks
            work.grad = grad
            works.append(work)
            order.append((i, p))
            if work is not view:
                writebacks.append((view, work))
            if not _interop.needs_staging(p, self._dense_ok(group)):  # the fast path takes it next step
                cached.plan.stage(i, False)
                cached.staged.discard(i)
        if dtensors:
            self._run_shards(cached, group, control, first_index, dtensors)
        _sparse.run(self, group, rows, inputs)
        if not works:
            return
        plan = _C.GroupPlan(works)
        for k, (i, p) in enumerate(order):
            self._admit(plan, k, p, works[k], group, first_index + i)
        if plan.gather(works, True):
            raise RuntimeError("genesis internal error: staged parameters could not be prepared")
        self._run(plan, group, control)
        with torch.no_grad():
            for view, work in writebacks:
                view.copy_(work)

    def _run_shards(self, cached, group, control, first_index, indices):
        """Update the group's DTensor parameters (`indices`) through their shards (_ShardPlan).
        A gradient laid out otherwise than its parameter is redistributed first (a collective,
        as DTensor's own operations would do); the shards' gradients are cleared again after the
        update, so no reference to them outlives the step."""
        params = group["params"]
        sources = [_interop.shard_object(params[i]) for i in indices]
        plan = cached.shards
        if (
            plan is None
            or plan.indices != indices
            or plan.exposure != self._exposure
            or any(a is not b for a, b in zip(plan.sources, sources))
        ):
            plan = cached.shards = _ShardPlan(params, indices, sources, self._exposure)
        shards = plan.shards
        try:
            for i, shard in zip(indices, shards):
                grad = params[i].grad
                if grad is not None:
                    if not _interop.same_distribution(grad, params[i]):
                        grad = grad.redistribute(params[i].device_mesh, params[i].placements)
                    grad = _interop.shard_object(grad)
                    grad = grad if grad.is_contiguous() else grad.contiguous()
                shard.grad = grad
            missing = plan.plan.gather(shards, True)
            if missing is None:
                raise RuntimeError("genesis internal error: the shard plan does not match its shards")
            gi = next(k for k, g in enumerate(self.param_groups) if g is group)
            for k in missing:  # first step, or state exposed: validated, then (re)admitted
                self._check_state(params[indices[k]], group, _where(gi, indices[k]))
            for k in missing:
                self._admit(plan.plan, k, params[indices[k]], shards[k], group, first_index + indices[k])
            if missing and plan.plan.gather(shards, True):
                raise RuntimeError("genesis internal error: DTensor shards could not be prepared")
            self._run(plan.plan, group, control)
            # The plan advanced the shards' version counters; a DTensor keeps its own
            # (NOTE: [version counters] in csrc/python/bindings.cpp).
            _interop.advance_versions([params[i] for i, shard in zip(indices, shards) if shard.grad is not None])
        finally:
            for shard in shards:
                shard.grad = None

    def _applied_steps_counter(self, param, buffer, fresh):
        """For a CUDA parameter of a rule that counts no steps (SGD): a hidden 0-dim float32
        device counter of the steps applied since its state was created. The kernels decide
        the first step from it (0: the momentum buffer starts as the gradient), so a first step
        that GradScaler skips on the device leaves the next one first, which the host cannot
        know without a sync. Kept while the state array it describes is the same one; not part
        of the state_dict (torch's SGD has no step)."""
        counters = self.__dict__.setdefault("_applied_steps", {})
        entry = counters.get(param)
        if entry is None or entry[0] is not buffer:
            entry = counters[param] = (buffer, _interop.new_step(buffer, 0.0 if fresh else 1.0))
        return entry[1]

    # ------------------------------------------------------------------------- state_dict
    def state_dict(self):
        """``{"state": {index: {name: value}}, "param_groups": [...]}`` in torch's layout
        (indices count the parameters of every group in order; ``param_names`` is kept for
        groups built from named parameters). Arrays are the live state (no copy); ``step`` is a
        0-dim float32 tensor for torch parameters (a copy, so that an optimizer loading it
        cannot alias this one's counter) and a Python float for NumPy parameters. State-dict
        pre and post hooks run as in torch."""
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        index_of, groups, start = {}, [], 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                index_of.setdefault(id(p), i)
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {}
        for p, entries in self._state.items():
            if id(p) not in index_of:
                continue
            state[index_of[id(p)]] = {k: (_export_step(v) if k == "step" else v) for k, v in entries.items()}
        state_dict = {"state": state, "param_groups": groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def float32_state_dict(self, state_dict=None):
        """``state_dict()`` with every 8-bit state array (``state_dtype="int8"``) dequantized to
        float32, without the block scales and without the 8-bit group options: what
        torch.optim (or an optimizer with float32 state) loads, or for analysis. The same as
        ``state_dict()`` for an optimizer without 8-bit state.

        ``state_dict``, if given, is converted instead of a new ``state_dict()``: one this
        optimizer made, e.g. inside a state-dict post hook, which is how a caller that takes
        ``state_dict()`` itself (torch.distributed.checkpoint's ``get_state_dict`` of an FSDP1
        model) gets float32 state: ``opt.register_state_dict_post_hook(lambda opt, sd:
        opt.float32_state_dict(sd))`` (docs/distributed.md#fsdp1)."""
        if state_dict is None:
            state_dict = self.state_dict()
        elif (
            not isinstance(state_dict, dict)
            or not isinstance(state_dict.get("param_groups"), list)
            or not isinstance(state_dict.get("state"), dict)
            or [len(g.get("params", ())) if isinstance(g, dict) else None for g in state_dict["param_groups"]]
            != [len(g["params"]) for g in self.param_groups]
        ):
            raise ValueError(
                "float32_state_dict(state_dict): state_dict must be a state_dict() of this optimizer "
                "(the same param groups, each with as many parameters)"
            )
        groups, state = [], dict(state_dict["state"])
        for group, packed in zip(self.param_groups, state_dict["param_groups"]):
            packed = dict(packed)
            if (
                packed.get("state_dtype") is not None
                and _interop.dtype_code_of_name(packed["state_dtype"]) == _interop.UINT8
            ):
                packed.pop("state_dtype")
                packed.pop("min_8bit_size", None)
            groups.append(packed)
            names, unsigned = self._state_names(group), self._nonnegative_states(group)
            for index, p in zip(packed["params"], group["params"]):
                if index in state:
                    arr = _interop.local_of(_interop.array_of(p))
                    state[index] = _quantized.float32_entries(state[index], names, unsigned, arr)
        return {**state_dict, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load state saved by ``state_dict()`` (of genesis or torch). Load-state-dict pre hooks
        may replace what is loaded; then everything is validated and converted, and the
        optimizer changes only if all of it succeeds; then the post hooks run. State arrays are
        copied onto each parameter's device and cast to its dtype; ``step`` stays a count."""
        if not isinstance(state_dict, dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(self.param_groups, saved_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )
        param_of = dict(
            zip(
                chain.from_iterable(s["params"] for s in saved_groups),
                chain.from_iterable(g["params"] for g in self.param_groups),
            )
        )
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new_group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            for name, default in self.defaults.items():
                if default is not required:
                    new_group.setdefault(name, default)
            new_group.update(self._fixed_options)
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            new_group["params"] = group["params"]
            self._check_group(new_group)
            new_groups.append(new_group)
        group_of = {id(p): g for g in new_groups for p in g["params"]}
        new_state = {}
        for key, entries in state_dict["state"].items():
            if key not in param_of:
                continue
            param = param_of[key]
            new_state[param] = self._import_state(param, group_of[id(param)], entries, key)
        self.param_groups = new_groups
        self.state = new_state
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _import_state(self, param, group, entries, key):
        if not isinstance(entries, dict):
            raise ValueError(f"state of parameter {key} must be a dict, got {type(entries).__name__}")
        arr = _interop.array_of(param)
        core = _interop.core_view(arr)
        state_code, _ = self._storage(group, core)
        try:
            shapes = dict(self._state_shapes(group, core))
        except NotImplementedError:  # an optimizer that keeps its own state (SparseAdam)
            shapes = {}
        complex_param = _interop.is_torch(arr) and arr.is_complex()
        if complex_param:  # state in the form the core reads (torch keeps it complex)
            entries = {name: _interop.real_view(value) for name, value in entries.items()}
        names, scales = (), ()
        # 8-bit state on either side (optimizers without element-wise rule state, SparseAdam
        # and LBFGS, never have any): convert it to what this group keeps.
        if state_code == _interop.UINT8 or any(_quantized.is_codes(v) for v in entries.values()):
            names = self._state_names(group)
            entries = _quantized.convert_entries(
                entries, names, state_code == _interop.UINT8, self._nonnegative_states(group), key
            )
        if state_code == _interop.UINT8:
            scales = {_quantized.absmax_name(n) for n in names}
        out = {}
        for name, value in entries.items():
            if name in scales and hasattr(value, "shape"):
                out[name] = _quantized.new_absmax(_interop.core_view(arr), value)
            elif name == "step":
                step = loaded_number(value, name, key)
                if not (math.isfinite(step) and step >= 0):
                    raise ValueError(f"state 'step' of parameter {key} must be a non-negative count, got {step}")
                out[name] = _interop.new_step(arr, step)
            elif value is None:
                out[name] = value
            elif not _interop.is_array(value):
                if name in shapes or name in scales or name == "master_param":
                    raise TypeError(
                        f"state '{name}' of parameter {key} must be an array (a tensor), got {type(value).__name__}"
                    )
                out[name] = value  # an entry the rule does not read: kept, as torch keeps it
            elif _interop.is_dtensor(param) or _interop.is_dtensor(value):
                local = _interop.core_view(arr)
                code = _interop.FLOAT32 if name == "master_param" else state_code
                out[name] = _interop.import_dtensor_state(value, param, code, shapes.get(name, local.shape), name, key)
            else:
                # Same shape, or the same elements flattened (a C++ trainer's checkpoint).
                shape = tuple(shapes.get(name, core.shape))
                size = int(np.prod(value.shape))
                if tuple(value.shape) != shape and size != int(np.prod(shape)):
                    what = "the parameter has" if shape == tuple(core.shape) else "it must have"
                    what += " (as real pairs)" if complex_param else ""
                    raise ValueError(
                        f"state '{name}' of parameter {key} has shape {tuple(value.shape)}, but {what} shape {shape}"
                    )
                code = _interop.FLOAT32 if name == "master_param" else state_code
                out[name] = _interop.copy_into_like(value, core, code, shape)
                if complex_param and name in shapes and code == _interop.dtype_code(core):
                    out[name] = _interop.torch_module().view_as_complex(out[name])  # as _new_state_array
        return out

    def __repr__(self):
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            text += "".join(f"    {key}: {group[key]}\n" for key in sorted(group) if key != "params")
        return text + ")"


def loaded_number(value, name, key):
    """A loaded step count or per-tensor scalar as a Python float: a number, or an array or
    tensor of one element (torch keeps 0-dim tensors). Anything else is refused, naming the
    entry, before the optimizer changes."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or _interop.is_array(value)):
        raise TypeError(
            f"state '{name}' of parameter {key} must be a number or a one-element tensor, got {type(value).__name__}"
        )
    if _interop.is_array(value) and _interop.numel(value) != 1:
        raise ValueError(f"state '{name}' of parameter {key} must hold one number, got shape {tuple(value.shape)}")
    try:
        return _interop.to_float(value)
    except TypeError:  # a complex tensor or array
        raise TypeError(f"state '{name}' of parameter {key} must be a real number, got {value!r}") from None


def _is_step_counter(step, arr):
    if _interop.is_torch(arr):
        torch = _interop.torch_module()
        device = arr.device if arr.is_cuda else torch.device("cpu")
        return (
            isinstance(step, torch.Tensor) and step.dim() == 0 and step.dtype == torch.float32 and step.device == device
        )
    if _interop.on_cuda(arr):  # a CUDA array (_cuda_array.py): a counter of its library on its device
        return (
            _interop.library_of(step) == _interop.library_of(arr)
            and tuple(step.shape) == ()
            and _interop.dtype_code(step) == _interop.FLOAT32
            and _interop.device_of(step) == _interop.device_of(arr)
            and _interop.is_writeable(step)
        )
    return isinstance(step, np.ndarray) and step.shape == () and step.dtype == np.float32 and step.flags.writeable


def _check_scaler_groups(groups):
    """GradScaler's values reach torch parameters only (their kernels read them on the device
    from torch tensors): refuse them for CUDA arrays of other libraries before any update."""
    for gi, group in enumerate(groups):
        # A group holding a CUDA array holds only arrays of its library (add_param_group): one
        # look per group keeps this off the per-parameter cost of a GradScaler step.
        first = group["params"][:1]
        if first and _cuda_array.is_cuda_array(_interop.array_of(first[0])):
            raise TypeError(
                f"param group {gi} holds CUDA arrays of another library than torch; GradScaler's "
                "grad_scale/found_inf apply to torch parameters only"
            )


def _export_step(step):
    if _interop.is_torch(step):
        return step.clone()
    return float(step)


# The base class's own step runs through the hooks too (subclasses' steps are wrapped by
# Optimizer.__init_subclass__).
Optimizer.step = with_step_hooks(Optimizer.step)


def _in_layout_of(state, name, arr):
    """State array `name`, laid out as the core array `arr` (contiguous, or densely in arr's
    order: NOTE: [dense layouts] in csrc/python/bindings.cpp), the core walking all of a
    parameter's arrays in one memory order. An array of another dense layout (a contiguous
    state of a parameter since converted to channels_last, or loaded so) is replaced by a copy
    in arr's layout first: the same values, only the order in memory changes."""
    value = dict.__getitem__(state, name)
    if (
        _interop.is_torch(value)
        and not _interop.is_dtensor(value)
        and not value.is_complex()
        and value.shape == arr.shape
        and not (value.stride() == arr.stride() or (value.is_contiguous() and arr.is_contiguous()))
    ):
        value = _interop.copy_into_like(value, arr, _interop.dtype_code(value), keep_layout=True)
        dict.__setitem__(state, name, value)
    return value


def _new_state_array(param, arr, state_code, shape=None):
    """A zero state array for `param`, whose core array is `arr`: of the parameter's own complex
    dtype for a complex torch parameter whose state has its precision (torch's state layout),
    else of the state dtype (a complex parameter's 16- or 8-bit state as real pairs); of
    `shape` (the parameter's, for element-wise rules), contiguous or, where `arr` is densely
    laid out in another order, in its layout (NOTE: [dense layouts]); a DTensor laid out like
    a DTensor parameter (NOTE: [DTensor parameters])."""
    if _interop.is_torch(param) and param.is_complex() and state_code == _interop.dtype_code(arr):
        local = _interop.local_of(param)
        value = _interop.torch_module().zeros(local.shape, dtype=local.dtype, device=local.device)
    else:
        value = _interop.zeros_like(arr, state_code, shape, keep_layout=True)
    return _interop.shaped_like(param, value)


def _check_torch_flags(group):
    """torch's constructor checks of its implementation flags, with its messages. genesis
    always runs its own fused kernels, but a configuration torch refuses is refused here too, so
    code that works with genesis works with torch. (Adam's own checks of tensor lr and betas
    are in adam.py: torch's other optimizers accept those.)"""
    differentiable = group.get("differentiable", False)
    if not isinstance(differentiable, bool):  # torch's step hands it to torch.set_grad_enabled
        raise TypeError(
            f"differentiable must be True or False, got {type(differentiable).__name__} {differentiable!r} "
            "(torch's step raises TypeError for it too)"
        )
    foreach = group.get("foreach")
    if group.get("fused") and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if group.get("fused") and group.get("differentiable"):
        raise RuntimeError("`fused` does not support `differentiable`")
