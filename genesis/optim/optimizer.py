"""The Optimizer base class: param groups, lazily created state, state_dict, and the per-step
hand-off of whole groups to the compiled core (SPEC section 3)."""

import contextlib
import math
import numbers
from itertools import accumulate, chain

import numpy as np

from .. import _C
from .. import _interop


class _RequiredParameter:
    """Marks a hyperparameter that has no default (SGD's lr)."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class _ParamState(dict):
    """One parameter's state. The compiled plans cache pointers to its arrays (NOTE: [group
    plan] and NOTE: [pinned storage] in csrc/python/bindings.cpp), so it tells the optimizer
    - when an entry is replaced (the plans are rebuilt), and
    - when user code obtains one of its arrays, through any accessor: that code could re-point
      the array's storage (``v.data = ...``), so the next step re-checks the state's pointers.
    Reading an entry costs one counter increment; in-place changes to the arrays need no
    notice at all."""

    __slots__ = ("_owner",)

    def __init__(self, owner, *args):
        super().__init__(*args)
        self._owner = owner

    def _changed(method):
        def wrapper(self, *args, **kwargs):
            result = method(self, *args, **kwargs)
            self._owner._state_changed()
            return result

        wrapper.__name__ = method.__name__
        return wrapper

    def _exposes(method):
        def wrapper(self, *args, **kwargs):
            self._owner._state_exposed()
            return method(self, *args, **kwargs)

        wrapper.__name__ = method.__name__
        return wrapper

    __setitem__ = _changed(dict.__setitem__)
    __delitem__ = _changed(dict.__delitem__)
    clear = _changed(dict.clear)
    pop = _changed(dict.pop)
    popitem = _changed(dict.popitem)
    setdefault = _changed(dict.setdefault)
    update = _changed(dict.update)
    __ior__ = _changed(dict.__ior__)
    # Every way to read the arrays. __iter__ only yields keys, but overriding it makes
    # dict(state) and {**state} read through __getitem__ instead of copying the raw entries.
    __getitem__ = _exposes(dict.__getitem__)
    get = _exposes(dict.get)
    values = _exposes(dict.values)
    items = _exposes(dict.items)
    copy = _exposes(dict.copy)
    __or__ = _exposes(dict.__or__)
    __ror__ = _exposes(dict.__ror__)
    __reduce_ex__ = _exposes(dict.__reduce_ex__)
    __iter__ = dict.__iter__
    del _changed, _exposes


class _OptimizerState(dict):
    """``optimizer.state``: parameter -> its state dict, created empty on first access as in
    torch (a defaultdict(dict))."""

    __slots__ = ("_owner",)

    def __init__(self, owner):
        super().__init__()
        self._owner = owner

    def __missing__(self, param):
        state = _ParamState(self._owner)
        dict.__setitem__(self, param, state)
        return state

    def __setitem__(self, param, value):
        dict.__setitem__(self, param, _ParamState(self._owner, value))
        self._owner._state_changed()

    def __delitem__(self, param):
        dict.__delitem__(self, param)
        self._owner._state_changed()


class _CachedPlan:
    """A compiled GroupPlan plus what it was built for; any difference means a rebuild."""

    __slots__ = ("plan", "layout", "version", "exposure", "cuda_device", "inv_scale")

    def __init__(self, params, layout, version):
        self.plan = _C.GroupPlan(params)
        self.layout = layout
        self.version = version
        self.exposure = None  # Optimizer._exposure when the plan last checked its state arrays
        self.cuda_device = cuda_device_of(params)
        # CUDA groups: the device tensor holding 1/scale that the last step's kernels read,
        # kept until the next step so the launch never sees freed memory.
        self.inv_scale = None


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


# Mixed-precision options (SPEC section 8). They join a group's hyperparameters only when the
# user sets them, so plain use keeps torch's exact param_group layout.
PRECISION_OPTIONS = ("master_weights", "state_dtype", "stochastic_rounding", "seed")
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


class Optimizer:
    """Base class of the genesis optimizers, with torch.optim.Optimizer's interface.

    Mixed precision (SPEC section 8), per optimizer or per param group; these keys appear in
    a group only when given, so plain use keeps torch's exact param_group layout:

    - float16/bfloat16 parameters compute in float32 registers and round once on store; their
      state is float32 unless ``state_dtype`` says otherwise.
    - ``master_weights=True``: a float32 ``state["master_param"]`` is what the rule updates;
      the 16-bit parameter receives its rounded value (no precision is lost across steps).
    - ``state_dtype="bfloat16"`` (or ``"float32"``, or a torch/NumPy dtype): halves the state's
      memory at the cost of ~3 significant digits in the moments; fine for the first moment,
      noticeably noisier for Adam's second moment on long runs. float16 state is refused (a
      squared gradient overflows or underflows it).
    - ``stochastic_rounding=True`` (with ``seed``): bfloat16 parameters without master weights
      round each update stochastically, from a counter-based generator keyed by (seed,
      parameter index, ``group["stochastic_rounding_step"]``), so tiny updates accumulate in
      expectation instead of being rounded away. The group's other parameters round to nearest.

    A subclass declares its state for a group (``_state_names``), whether it counts steps
    (``_counts_steps``), how to validate a group's hyperparameters (``_check_group``) and how to
    call the core (``_run``). Everything else, including state_dict compatibility with torch,
    lives here.
    """

    _counts_steps = True

    def __init__(self, params, defaults):
        self.defaults = defaults
        self._version = 0
        self._exposure = 0
        self._plans = []
        self._state = _OptimizerState(self)
        self.param_groups = []
        if _interop.is_parameter(params):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        if isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. Please use a "
                            "list instead.")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

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
    # pointers, so they are left out and rebuilt on the next step.
    def __getstate__(self):
        return {"defaults": self.defaults, "param_groups": self.param_groups,
                "state": {p: dict(s) for p, s in self._state.items()}}

    def __setstate__(self, saved):
        self.defaults = saved["defaults"]
        self.param_groups = saved["param_groups"]
        self._version = 0
        self._exposure = 0
        self._plans = []
        self.state = saved["state"]

    # ------------------------------------------------------------------------ param groups
    def add_param_group(self, param_group):
        """Add a group of parameters with its own hyperparameters (missing ones take the
        optimizer's defaults). Validated like the constructor."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if _interop.is_parameter(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. Please use a "
                            "list instead.")
        params = list(params)
        group_index = len(self.param_groups)
        for i, p in enumerate(params):
            _interop.check_param(p, _where(group_index, i))
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError("parameter group didn't specify a value of required optimization "
                                 f"parameter {name}")
            group.setdefault(name, default)
        self._check_group(group)
        # One device per group: a step's skip flag and stream then belong to the whole group.
        devices = {_interop.device_of(_interop.array_of(p)) for p in params}
        if len(devices) > 1:
            raise ValueError("a param group holds parameters on several devices "
                             f"({', '.join(sorted(devices))}); use one group per device")
        # A parameter listed twice would be updated twice, concurrently: refuse it.
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        group["params"] = params
        self.param_groups.append(group)

    def _check_group(self, group):
        """Raise ValueError for invalid hyperparameters (the core's checks, shared with the C++
        API) or for torch options genesis does not implement."""
        if group.get("differentiable"):
            raise ValueError("genesis optimizers do not support differentiable=True")
        if group.get("capturable"):
            raise ValueError("genesis does not implement capturable=True (its CUDA steps never "
                             "wait for the host, but the Python step is not graph-capturable)")
        if "lr" in group:
            as_float(group["lr"], "lr")  # a string is a TypeError, as in torch; not converted
        _C.validate(self._options(group))
        if group.get("state_dtype") is not None:
            _interop.dtype_code_of_name(group["state_dtype"])
        seed = group.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 64:
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
        if not _C.supported_storage(code, state):
            raise ValueError(f"state_dtype {_interop.CODE_NAMES[state]} is not supported for "
                             f"{_interop.CODE_NAMES[code]} parameters")
        return state, bool(group.get("master_weights")) and code in _HALF_CODES

    def _control(self, group, cached, grad_scale, found_inf):
        """The step's mixed-precision inputs for the core: GradScaler's 1/scale, and the
        stochastic rounding stream (its counter, kept in the group so that a resumed run draws
        the same bits, advances after every step that ran: see step())."""
        rounding = bool(group.get("stochastic_rounding"))
        cuda = cached.cuda_device
        if grad_scale is None and not rounding and cuda is None:
            return _PLAIN_STEP
        counter = group.get("stochastic_rounding_step", 0) if rounding else 0
        device = {}
        if cuda is not None:
            torch = _interop.torch_module()
            device["stream"] = torch.cuda.current_stream(cuda).cuda_stream
            if found_inf is not None and _interop.is_cuda(found_inf):  # a host flag was read in step()
                device["found_inf_ptr"] = found_inf.data_ptr()
            if grad_scale is not None:
                # The kernels read 1/scale from device memory: computed there from a device
                # scale (no sync), or filled from a host one.
                if _interop.is_cuda(grad_scale):
                    inv = grad_scale.double().reciprocal().float().reshape(())
                else:
                    inv = torch.full((), 1.0 / as_float(grad_scale), dtype=torch.float32, device=cuda)
                cached.inv_scale = inv
                device["grad_scale_ptr"] = inv.data_ptr()
        inv_scale = 1.0
        if grad_scale is not None and cuda is None:
            inv_scale = 1.0 / as_float(grad_scale)
        return _C.StepControl(grad_scale=inv_scale, stochastic_rounding=rounding,
                              seed=int(group.get("seed", 0)), counter=counter, **device)

    # ------------------------------------------------------------------------------- step
    def zero_grad(self, set_to_none=True):
        """Clear the gradients: set them to None (default) or zero them in place."""
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

    # GradScaler protocol (torch.amp's too): before step() a scaler may set `grad_scale` (the
    # loss scale, to divide the gradients by inside the fused update) and `found_inf` (non-zero:
    # skip the step, changing nothing).
    _step_supports_amp_scaling = True

    def step(self, closure=None):
        """One update of every parameter that has a gradient. If ``closure`` is given it is
        called first (with gradients enabled) and its return value is returned."""
        loss = None
        if closure is not None:
            with _grad_enabled():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        # On the host the flag decides here; a CUDA flag is read by the kernels (no sync).
        if found_inf is not None and not _interop.is_cuda(found_inf) and as_float(found_inf) != 0.0:
            return loss
        grad_scale = getattr(self, "grad_scale", None)
        self._prepare()
        for cached, group in zip(self._plans, self.param_groups):
            self._run(cached.plan, group, self._control(group, cached, grad_scale, found_inf))
            if group.get("stochastic_rounding"):
                group["stochastic_rounding_step"] = group.get("stochastic_rounding_step", 0) + 1
        return loss

    def _options(self, group):
        """The core's option struct for a group's hyperparameters."""
        raise NotImplementedError

    def _state_names(self, group):
        """Names of the per-element state arrays for this group, in the core's slot order."""
        raise NotImplementedError

    def _run(self, plan, group, control):
        """Call the core's update for one gathered group with the step's _C.StepControl."""
        raise NotImplementedError

    def _prepare(self):
        """Gather every group's gradients into its cached plan (self._plans) before any update
        runs, so that a bad gradient anywhere raises before any parameter or state is touched."""
        groups = self.param_groups
        if len(self._plans) != len(groups):
            self._plans = [None] * len(groups)
        pending = []
        for gi, group in enumerate(groups):
            params = group["params"]
            if type(params) is not list:  # the user may have set a tuple (torch iterates it)
                params = group["params"] = list(params)
            layout = (self._state_names(group), group.get("state_dtype"),
                      bool(group.get("master_weights")))
            cached = self._plans[gi]
            missing = None
            if cached is not None and cached.version == self._version and cached.layout == layout:
                exposed = cached.exposure != self._exposure
                missing = cached.plan.gather(params, exposed)  # None: the parameters changed
            if missing is None:
                cached = self._plans[gi] = _CachedPlan(params, layout, self._version)
                missing = cached.plan.gather(params)
            cached.exposure = self._exposure
            if missing:
                pending.append((gi, group, cached, missing))
        if pending:
            self._admit_all(pending)

    def _admit_all(self, pending):
        """Validate, create state for and admit every pending parameter, then gather again.
        Validation runs for all of them before any state is created: a failure leaves nothing
        changed. Another thread may change a parameter between the admission and the gather
        (NOTE: [pinned storage]); that is retried a few times, then reported."""
        for _ in range(_ADMIT_ATTEMPTS):
            for gi, group, cached, missing in pending:
                for i in missing:
                    p = group["params"][i]
                    where = _where(gi, i)
                    _interop.check_param(p, where)
                    _interop.check_grad(p, p.grad, where)
                    self._check_state(p, group, where)
            first_index = list(accumulate((len(g["params"]) for g in self.param_groups), initial=0))
            for gi, group, cached, missing in pending:
                for i in missing:
                    self._admit(cached.plan, group, i, first_index[gi] + i)
                cached.cuda_device = cuda_device_of(group["params"])  # a parameter may have moved
            still = []
            for gi, group, cached, _ in pending:
                missing = cached.plan.gather(group["params"])
                if missing is None:
                    raise RuntimeError(f"the parameter list of param group {gi} changed while "
                                       "step() was preparing it (another thread?)")
                if missing:
                    still.append((gi, group, cached, missing))
            if not still:
                return
            pending = still
        raise RuntimeError(f"parameters of param group {pending[0][0]} kept changing while step() "
                           "was preparing them (is another thread modifying them?)")

    def _check_state(self, param, group, where):
        """Existing state must match the parameter (it may have been loaded or replaced): same
        library, shape, device and contiguity, of the state dtype (master_param: float32)."""
        if param not in self._state:
            return
        arr = _interop.array_of(param)
        state_code, master = self._storage(group, arr)
        state = self._state[param]
        expected = {name: state_code for name in self._state_names(group)}
        if master:
            expected["master_param"] = _interop.FLOAT32
        for name, code in expected.items():
            value = state.get(name)
            if value is None:
                continue
            if (_interop.is_torch(value) != _interop.is_torch(arr)
                    or tuple(value.shape) != tuple(arr.shape)
                    or _interop.dtype_code(value) != code
                    or _interop.device_of(value) != _interop.device_of(arr)
                    or not _interop.is_contiguous(value)):
                raise ValueError(f"state '{name}' of {where} does not match the parameter (library, "
                                 f"shape, device and contiguity must be equal, dtype "
                                 f"{_interop.CODE_NAMES[code]})")
            if not _interop.is_torch(value):
                _interop.check_native(value, f"state '{name}' of {where}")
                if not value.flags.writeable:
                    raise ValueError(f"state '{name}' of {where} is a read-only array")
        step = state.get("step")
        if self._counts_steps and step is not None and not _is_step_counter(step, arr):
            raise ValueError(f"state 'step' of {where} must be a 0-dim float32 array on the CPU "
                             "(on the parameter's device for CUDA parameters)")

    def _admit(self, plan, group, index, uid):
        """Create missing state for parameter `index` of `group` (internal writes: no staleness
        notice) and hand its pointers to the plan. A stateless rule (SGD without momentum)
        gets no state entry at all, as in torch. `uid` numbers the parameter within the
        optimizer: it keys the parameter's stochastic rounding stream."""
        param = group["params"][index]
        arr = _interop.array_of(param)
        names = self._state_names(group)
        state_code, master = self._storage(group, arr)
        state_arrays, step, master_param, fresh = [], None, None, False
        if names or self._counts_steps or master:
            state = self._state[param]
            for name in names:
                if state.get(name) is None:
                    dict.__setitem__(state, name, _interop.zeros_like(arr, state_code))
                    fresh = True
            state_arrays = [state[n] for n in names]
            if self._counts_steps:
                if "step" not in state:
                    dict.__setitem__(state, "step", _interop.new_step(arr))
                step = state["step"]
            if master:
                if state.get("master_param") is None:
                    dict.__setitem__(state, "master_param",
                                     _interop.copy_into_like(arr, arr, _interop.FLOAT32))
                master_param = state["master_param"]
        plan.admit(index, arr, state_arrays, state_code, step, master_param, fresh, uid,
                   _interop.is_cuda(arr))

    # ------------------------------------------------------------------------- state_dict
    def state_dict(self):
        """``{"state": {index: {name: value}}, "param_groups": [...]}`` in torch's layout.
        Arrays are the live state (no copy); ``step`` is a 0-dim float32 tensor for torch
        parameters (a copy, so that an optimizer loading it cannot alias this one's counter)
        and a Python float for NumPy parameters."""
        index_of, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, entries in self._state.items():
            if id(p) not in index_of:
                continue
            state[index_of[id(p)]] = {
                k: (_export_step(v) if k == "step" else v) for k, v in entries.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load state saved by ``state_dict()`` (of genesis or torch). Everything is validated
        and converted first; the optimizer changes only if all of it succeeds. State arrays are
        copied onto each parameter's device and cast to its dtype; ``step`` stays a count."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(self.param_groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the "
                             "size of optimizer's group")
        param_of = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                            chain.from_iterable(g["params"] for g in self.param_groups)))
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new_group = {k: v for k, v in saved.items() if k != "params"}
            for name, default in self.defaults.items():
                if default is not required:
                    new_group.setdefault(name, default)
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

    def _import_state(self, param, group, entries, key):
        if not isinstance(entries, dict):
            raise ValueError(f"state of parameter {key} must be a dict, got {type(entries).__name__}")
        arr = _interop.array_of(param)
        state_code, _ = self._storage(group, arr)
        out = {}
        for name, value in entries.items():
            if name == "step":
                step = _interop.to_float(value)
                if not (math.isfinite(step) and step >= 0):
                    raise ValueError(f"state 'step' of parameter {key} must be a non-negative count, got {step}")
                out[name] = _interop.new_step(arr, step)
            elif value is None or isinstance(value, (bool, int, float, str)):
                out[name] = value
            else:
                # Same shape, or the same elements flattened (a C++ trainer's checkpoint).
                size = int(np.prod(value.shape))
                if tuple(value.shape) != tuple(arr.shape) and size != _interop.numel(arr):
                    raise ValueError(f"state '{name}' of parameter {key} has shape {tuple(value.shape)}, "
                                     f"but the parameter has shape {tuple(arr.shape)}")
                code = _interop.FLOAT32 if name == "master_param" else state_code
                out[name] = _interop.copy_into_like(value, arr, code)
        return out

    def __repr__(self):
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            text += "".join(f"    {key}: {group[key]}\n" for key in sorted(group) if key != "params")
        return text + ")"


def _is_step_counter(step, arr):
    if _interop.is_torch(arr):
        torch = _interop.torch_module()
        device = arr.device if arr.is_cuda else torch.device("cpu")
        return (isinstance(step, torch.Tensor) and step.dim() == 0 and step.dtype == torch.float32
                and step.device == device)
    return (isinstance(step, np.ndarray) and step.shape == () and step.dtype == np.float32
            and step.flags.writeable)


def _export_step(step):
    if _interop.is_torch(step):
        return step.clone()
    return float(step)
