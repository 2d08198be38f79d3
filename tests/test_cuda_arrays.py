"""CUDA arrays of other libraries (CuPy, ...) as genesis.nn.Parameter data, read through
__cuda_array_interface__ (docs/semantics.md#cuda-arrays).

Without a GPU: stand-in objects exposing the interface drive the parsing and validation, in
Python (named errors, raised before anything changes) and in the compiled plan (which must
send anything unexpected back instead of launching), and a CPU-only build names what it lacks.
With a GPU and CuPy (the `cuda` tests): CuPy parameters give the CPU core's bits."""

import numpy as np
import pytest

import genesis
from genesis import _C, _cuda_array, _interop
from genesis.optim import optimizer as _optimizer

WHERE = "parameter 0 of param group 0"


class FakeCudaArray:
    """Exposes a version-3 interface describing `shape` elements at a made-up device address
    (never dereferenced: nothing launches in these tests)."""

    def __init__(self, shape=(4, 3), typestr="<f4", ptr=0x7F00_0000_0000, readonly=False, stream=1, **changes):
        self.iface = {"shape": shape, "typestr": typestr, "data": (ptr, readonly), "version": 3, "strides": None}
        self.iface.update(stream=stream, **changes)
        self.iface = {key: value for key, value in self.iface.items() if value is not _DROP}
        self.shape = self.iface.get("shape")

    @property
    def __cuda_array_interface__(self):
        return dict(self.iface)


_DROP = object()


def _construct(data):
    return genesis.optim.Adam([genesis.nn.Parameter(data)], lr=0.1)


@pytest.fixture
def cuda_backend(monkeypatch):
    """A build that reports CUDA and a GPU, so that validation past the backend check runs."""
    monkeypatch.setattr(_C, "cuda_built", lambda: True)
    monkeypatch.setattr(_C, "cuda_device_count", lambda: 1)


def test_a_parameter_keeps_a_cuda_array_itself():
    arr = FakeCudaArray()
    p = genesis.nn.Parameter(arr)
    assert p.data is arr and _cuda_array.is_cuda_array(arr)
    assert _interop.numel(arr) == 12 and _interop.dtype_code(arr) == _interop.FLOAT32
    assert _interop.device_of(arr) == "cuda" and _interop.is_contiguous(arr) and _interop.on_cuda(arr)
    assert not _interop.is_cuda(arr)  # that one asks about torch tensors (lr, GradScaler values)


def test_a_dlpack_array_on_a_gpu_without_the_interface_is_refused():
    class DlpackOnGpu:
        def __dlpack__(self, stream=None):
            raise AssertionError("must not be exported")

        def __dlpack_device__(self):
            return (2, 0)  # kDLCUDA

    with pytest.raises(TypeError, match="has no __cuda_array_interface__"):
        genesis.nn.Parameter(DlpackOnGpu())


@pytest.mark.skipif(_C.cuda_built(), reason="this build has CUDA")
def test_a_cpu_only_build_says_it_has_no_cuda():
    with pytest.raises(ValueError, match=f"{WHERE} is on cuda, but this genesis was built without CUDA"):
        _construct(FakeCudaArray())


@pytest.mark.parametrize(
    "changes,error,message",
    [
        (dict(typestr="<i4"), TypeError, "has dtype <i4; genesis supports float32, float64 and float16 CUDA"),
        (dict(typestr="<u1"), TypeError, "has dtype <u1"),
        (dict(typestr=">f4"), ValueError, "non-native byte order"),
        (dict(typestr=4), TypeError, "'typestr' must be a string"),
        (dict(strides=(4, 16)), ValueError, "is not contiguous"),
        (dict(strides=(4,)), TypeError, "'strides' must be None or one integer per dimension"),
        (dict(readonly=True), ValueError, "is a read-only array"),
        (dict(mask=FakeCudaArray(typestr="|b1")), ValueError, "is a masked array"),
        (dict(typestr=_DROP), TypeError, "lacks 'typestr'"),
        (dict(data=_DROP, shape=_DROP), TypeError, "lacks 'shape', 'data'"),
        (dict(version=1), TypeError, "version 1 is not supported"),
        (dict(data=[1, False]), TypeError, "'data' must be \\(pointer, read-only flag\\)"),
        (dict(shape=(4, -1)), TypeError, "'shape' must be a tuple of sizes"),
        (dict(stream=0), ValueError, "'stream' is 0, which the protocol disallows"),
        (dict(stream="s"), TypeError, "'stream' must be an integer or None"),
    ],
)
def test_a_bad_interface_is_refused_naming_the_parameter(changes, error, message):
    # Checked before the backend, so the errors are the same on every build.
    readonly = changes.pop("readonly", False)
    with pytest.raises(error, match=f"{WHERE}.*{message}|{message}") as info:
        _construct(FakeCudaArray(readonly=readonly, **changes))
    assert WHERE in str(info.value)


def test_contiguity_follows_numpy_rules(cuda_backend):
    ok = [
        dict(strides=(12, 4)),  # explicit C-contiguous strides
        dict(shape=(4, 1), strides=(4, 99)),  # any stride for a dimension of extent 1
        dict(shape=(0, 3), strides=(0, 0)),  # empty
        dict(shape=(), strides=()),  # 0-dim
        dict(typestr="<f8", strides=(24, 8)),
        dict(typestr="<f2", stream=None),  # None: no synchronization needed
    ]
    for changes in ok:
        array = FakeCudaArray(**changes)
        opt = _construct(array)
        # Admitted as given: the optimizer holds the very array, not a copy.
        assert opt.param_groups[0]["params"][0].data is array


def _stepped(cuda_backend, grad, param=None):
    p = genesis.nn.Parameter(param if param is not None else FakeCudaArray())
    opt = genesis.optim.Adam([p], lr=0.1)
    p.grad = grad
    return opt, p


@pytest.mark.parametrize(
    "grad,error,message",
    [
        (np.zeros((4, 3), np.float32), TypeError, "the gradient of .* is a numpy, but the parameter is a"),
        (FakeCudaArray(typestr="<f8"), TypeError, "has dtype <f8, but the parameter has dtype <f4"),
        (FakeCudaArray(shape=(3, 4)), ValueError, "has shape \\(3, 4\\), but the parameter has shape \\(4, 3\\)"),
        (FakeCudaArray(strides=(4, 16)), ValueError, "the gradient of .* is not contiguous"),
        (FakeCudaArray(stream=0x5000), ValueError, "is on CUDA stream 0x5000, but the parameter on stream 0x1"),
        (FakeCudaArray(typestr=_DROP), TypeError, "the gradient of .*lacks 'typestr'"),
    ],
)
def test_a_bad_gradient_is_refused_before_any_state_exists(cuda_backend, grad, error, message):
    opt, p = _stepped(cuda_backend, grad)
    with pytest.raises(error, match=message):
        opt.step()
    assert len(opt.state) == 0


def test_a_gradient_on_another_device_is_refused(cuda_backend):
    class OnDevice(FakeCudaArray):
        def __init__(self, ordinal, **kw):
            super().__init__(**kw)
            self.device = type("Device", (), {"id": ordinal})()

    opt, p = _stepped(cuda_backend, OnDevice(1), OnDevice(0))
    with pytest.raises(ValueError, match="is on cuda:1, but the parameter is on cuda:0"):
        opt.step()
    assert len(opt.state) == 0


def test_grad_scaler_values_are_refused_for_cuda_arrays(cuda_backend):
    opt, p = _stepped(cuda_backend, FakeCudaArray())
    opt.grad_scale = 2.0
    with pytest.raises(TypeError, match="GradScaler's grad_scale/found_inf apply to torch parameters only"):
        opt.step()
    assert len(opt.state) == 0


def test_the_plan_reads_the_interface_and_sends_back_what_changed():
    """The compiled plan's own reading of the interface (NOTE: [CUDA array interface]): a
    stateless rule (SGD without momentum) needs no state arrays, so the plan can be admitted and
    gathered without device memory; nothing here launches."""
    param = FakeCudaArray()
    p = genesis.nn.Parameter(param)
    plan = _C.GroupPlan([p])
    assert plan.gather([p]) == []  # no gradient: nothing to do
    p.grad = FakeCudaArray(ptr=0x7F00_0001_0000)
    assert plan.gather([p]) == [0]  # not admitted yet
    plan.admit(0, param, [], [], _interop.FLOAT32, None, None, False, 0, True)
    assert plan.gather([p]) == []  # ready: the interface was read and matches
    bad = [
        FakeCudaArray(typestr="<f8"),
        FakeCudaArray(shape=(3, 4)),
        FakeCudaArray(strides=(4, 16)),
        FakeCudaArray(stream=0x5000),
        FakeCudaArray(mask=FakeCudaArray()),
        FakeCudaArray(typestr=_DROP),
        FakeCudaArray(stream=0),
        np.zeros((4, 3), np.float32),
    ]
    for grad in bad:
        p.grad = grad
        assert plan.gather([p]) == [0], grad.__dict__.get("iface", grad)
        plan.admit(0, param, [], [], _interop.FLOAT32, None, None, False, 0, True)
    # The parameter itself changed (another address, read-only now): admitted again.
    p.grad = FakeCudaArray()
    for changes in (dict(ptr=0x1000), dict(readonly=True)):
        param.iface = FakeCudaArray(**changes).iface
        assert plan.gather([p]) == [0]
        param.iface = FakeCudaArray().iface
        plan.admit(0, param, [], [], _interop.FLOAT32, None, None, False, 0, True)
    assert plan.gather([p]) == []
    # A read-only or masked array is never admitted for writing.
    for changes in (dict(readonly=True), dict(mask=FakeCudaArray())):
        with pytest.raises(ValueError, match="not a writeable contiguous array"):
            plan.admit(0, FakeCudaArray(**changes), [], [], _interop.FLOAT32, None, None, False, 0, True)


def test_one_group_launches_on_one_stream():
    arrays = [FakeCudaArray(stream=0x100), FakeCudaArray(stream=0x200)]
    params = [genesis.nn.Parameter(a) for a in arrays]
    plan = _C.GroupPlan(params)
    for i, (p, a) in enumerate(zip(params, arrays)):
        p.grad = FakeCudaArray(stream=a.iface["stream"])
        plan.admit(i, a, [], [], _interop.FLOAT32, None, None, False, i, True)
    with pytest.raises(ValueError, match="on different streams"):
        plan.gather(params)
    params[1].grad.iface["stream"] = arrays[1].iface["stream"] = 0x100
    assert plan.gather(params) == []


def test_state_of_another_library_is_refused(cuda_backend):
    """A CUDA array's state must be an array of its library on its device, not NumPy."""
    p = genesis.nn.Parameter(FakeCudaArray())
    opt = genesis.optim.Adam([p], lr=0.1)
    opt.state[p] = {"step": np.array(0.0, np.float32), "exp_avg": np.zeros((4, 3), np.float32)}
    p.grad = FakeCudaArray()
    with pytest.raises(ValueError, match="does not match the parameter"):
        opt.step()
    assert not _optimizer._is_step_counter(np.array(0.0, np.float32), p.data)


def test_state_is_made_by_the_arrays_own_library_on_its_device(monkeypatch):
    """State arrays come from the package of the array's type (CuPy: cupy.zeros), with the
    array's device current while they are made; NumPy stands in for the library here."""
    import sys
    import types

    lib = types.ModuleType("fakelib")
    current = []

    class Device:
        id = 1

        def __enter__(self):
            current.append(self.id)

        def __exit__(self, *exc):
            current.pop()

    def zeros(shape, dtype):
        assert current == [1], "allocated with another device current"
        return np.zeros(shape, dtype)

    lib.zeros, lib.asarray = zeros, np.asarray
    monkeypatch.setitem(sys.modules, "fakelib", lib)
    Arr = type("Arr", (FakeCudaArray,), {"__module__": "fakelib.core", "device": Device()})
    a = Arr(shape=(2, 3))
    assert _interop.device_of(a) == "cuda:1" and _interop.library_of(a) == "fakelib.Arr"
    z = _interop.zeros_like(a)
    assert z.shape == (2, 3) and z.dtype == np.float32 and not z.any()
    assert _interop.zeros_like(a, _interop.UINT8, (5,)).dtype == np.uint8
    step = _interop.new_step(a, 3.0)
    assert step.shape == () and step.dtype == np.float32 and step == 3.0
    values = np.arange(6.0)
    copied = _interop.copy_into_like(values, a, _interop.FLOAT32)
    assert copied.shape == (2, 3) and copied.dtype == np.float32 and np.array_equal(copied.ravel(), values)
    assert copied.base is None and current == []  # a new array; the device context was left
    bare = type("Bare", (FakeCudaArray,), {"__module__": "nowhere"})()
    with pytest.raises(TypeError, match="cannot create state arrays like a Bare"):
        _interop.zeros_like(bare)


# ------------------------------------------------------------------------------- on a GPU
def _cupy():
    return pytest.importorskip("cupy", reason="needs CuPy")


class TorchBacked:
    """A CUDA array library of the smallest kind, for the GPU tests where CuPy is absent (the
    device machines ship torch, not CuPy): device memory held by a torch tensor, seen by genesis
    only through __cuda_array_interface__ (torch's own, version 2: no stream, so the updates run
    on the default stream, which is torch's too). This module is its library: state arrays are
    made by its zeros() and asarray() below (_cuda_array.namespace)."""

    def __init__(self, tensor):
        self.t = tensor

    @property
    def __cuda_array_interface__(self):
        return self.t.__cuda_array_interface__

    shape = property(lambda self: tuple(self.t.shape))
    dtype = property(lambda self: np.dtype(str(self.t.dtype).rpartition(".")[2]))

    def astype(self, dtype):
        return TorchBacked(self.t.to(_torch_dtype(dtype)))

    def reshape(self, shape):
        return TorchBacked(self.t.reshape(shape))

    def __setitem__(self, key, value):
        self.t[key] = value.t

    def __float__(self):
        return float(self.t)

    def numpy(self):
        return self.t.cpu().numpy()


def _torch_dtype(dtype):
    import torch

    return getattr(torch, np.dtype(dtype).name)


def zeros(shape, dtype):  # TorchBacked's library (see its docstring)
    import torch

    return TorchBacked(torch.zeros(shape, dtype=_torch_dtype(dtype), device="cuda"))


def asarray(value):
    import torch

    if isinstance(value, TorchBacked):
        return value
    return TorchBacked(torch.as_tensor(np.asarray(value), device="cuda"))


_FLOATS = (np.float32, np.float64, np.float16)
TORCH_BACKED_CASES = (
    [("AdamW", dict(lr=1e-2, amsgrad=True), d) for d in _FLOATS]
    + [("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2), d) for d in _FLOATS]  # first step on the device
    + [("NAdam", dict(lr=1e-2), d) for d in _FLOATS]  # per-tensor scalars of the array's library
    + [("Adam", dict(lr=1e-2, state_dtype="int8", min_8bit_size=1), d) for d in _FLOATS[::2]]  # 8-bit state
    + [("Adam", dict(lr=1e-2, master_weights=True), np.float16)]
)


@pytest.mark.cuda
@pytest.mark.parametrize("name,kw,dtype", TORCH_BACKED_CASES)
def test_cuda_arrays_give_the_cpu_cores_bits_without_cupy(name, kw, dtype):
    """The interface path on a GPU with the device machine's torch only: every parameter, state
    array and step counter equals the NumPy CPU path's, bit for bit."""
    import torch

    rng = np.random.default_rng(0)
    sizes = [1, 0, 4097, 65537 + 3]
    init = [rng.standard_normal(n).astype(dtype) for n in sizes]
    gpu = [genesis.nn.Parameter(TorchBacked(torch.from_numpy(x.copy()).cuda())) for x in init]
    cpu = [genesis.nn.Parameter(x.copy()) for x in init]
    cls = getattr(genesis.optim, name)
    gopt, copt = cls(gpu, **kw), cls(cpu, **kw)
    for _ in range(20):
        grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
        for g, c, x in zip(gpu, cpu, grads):
            g.grad, c.grad = TorchBacked(torch.from_numpy(x).cuda()), x
        gopt.step()
        copt.step()
    torch.cuda.synchronize()
    for i, (g, c) in enumerate(zip(gpu, cpu)):
        np.testing.assert_array_equal(g.data.numpy(), c.data, err_msg=f"parameter {i}")
        assert set(gopt.state[g]) == set(copt.state[c])
        for key, value in copt.state[c].items():
            got = gopt.state[g][key]
            assert isinstance(got, TorchBacked), key  # state of the parameter's library
            np.testing.assert_array_equal(got.numpy(), np.asarray(value), err_msg=f"{key} of {i}")


CUPY_CASES = [
    ("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=1e-2)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2)),
    ("RMSprop", dict(lr=1e-2, centered=True, momentum=0.9)),
    ("Adagrad", dict(lr=0.1)),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", CUPY_CASES, ids=[c[0] for c in CUPY_CASES])
def test_cupy_parameters_give_the_cpu_cores_bits(name, kw, dtype):
    cp = _cupy()
    rng = np.random.default_rng(0)
    sizes = [1, 0, 4097, 65537 + 3]
    init = [rng.standard_normal(n).astype(dtype) for n in sizes]
    gpu = [genesis.nn.Parameter(cp.asarray(x)) for x in init]
    cpu = [genesis.nn.Parameter(x.copy()) for x in init]
    cls = getattr(genesis.optim, name)
    gopt, copt = cls(gpu, **kw), cls(cpu, **kw)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:  # launched on CuPy's current stream
        for _ in range(20):
            grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
            for g, c, x in zip(gpu, cpu, grads):
                g.grad, c.grad = cp.asarray(x), x
            gopt.step()
            copt.step()
    stream.synchronize()
    for i, (g, c) in enumerate(zip(gpu, cpu)):
        assert g.data.dtype == dtype and isinstance(g.data, cp.ndarray)
        np.testing.assert_array_equal(cp.asnumpy(g.data), c.data, err_msg=f"parameter {i}")
        for key, value in copt.state[c].items():
            got = gopt.state[g][key]
            assert isinstance(got, cp.ndarray), key  # state of the parameter's library and device
            np.testing.assert_array_equal(cp.asnumpy(got), np.asarray(value), err_msg=f"{key} of {i}")


@pytest.mark.cuda
def test_cupy_state_dict_round_trip_and_in_place_updates():
    cp = _cupy()
    data = cp.arange(10, dtype=cp.float32)
    p = genesis.nn.Parameter(data)
    opt = genesis.optim.Adam([p], lr=0.1)
    p.grad = cp.ones(10, dtype=cp.float32)
    opt.step()
    assert p.data is data and float(data[0]) != 0.0  # updated in place
    sd = opt.state_dict()
    q = genesis.nn.Parameter(cp.arange(10, dtype=cp.float32))
    opt2 = genesis.optim.Adam([q], lr=0.1)
    opt2.load_state_dict(sd)
    assert opt2.state[q]["exp_avg"] is not opt.state[p]["exp_avg"]
    cp.testing.assert_array_equal(opt2.state[q]["exp_avg"], opt.state[p]["exp_avg"])
    with pytest.raises(ValueError, match="read-only|not contiguous"):
        genesis.optim.Adam([genesis.nn.Parameter(cp.ones((4, 4), cp.float32)[:, ::2])])


def test_the_deferred_clip_names_cuda_arrays_as_unsupported(cuda_backend):
    p = genesis.nn.Parameter(FakeCudaArray())
    opt = genesis.optim.Adam([p], lr=0.1)
    p.grad = FakeCudaArray()
    with pytest.raises(TypeError, match="expected a torch tensor or a NumPy array"):
        opt.clip_grad_norm_(1.0)
    assert len(opt.state) == 0


def test_a_group_mixing_torch_cuda_tensors_and_cuda_arrays_is_refused(cuda_backend, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_interop, "is_cuda", lambda x: isinstance(x, torch.Tensor) and x.dim() == 0)
    params = [torch.nn.Parameter(torch.tensor(1.0)), genesis.nn.Parameter(FakeCudaArray())]
    with pytest.raises(ValueError, match="mixes CUDA arrays of several libraries"):
        genesis.optim.SGD(params, lr=0.1)
    genesis.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)  # one group each
