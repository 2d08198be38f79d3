"""genesis.save / genesis.load (docs/semantics.md#checkpoints, docs/checkpoint-format.md)."""

import collections
import io
import json
import math
import os
import pickle
import random
import re
import stat
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

import genesis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from no_torch import NO_TORCH_ENV  # noqa: E402

MAGIC = b"\x93GENESIS"
PREAMBLE = struct.Struct("<8sIIQ")  # magic, version, header CRC32, header length


# ------------------------------------------------------------------------------- helpers


def roundtrip(obj, **load_kwargs):
    stream = io.BytesIO()
    genesis.save(obj, stream)
    stream.seek(0)
    return genesis.load(stream, **load_kwargs)


def to_bytes(obj):
    stream = io.BytesIO()
    genesis.save(obj, stream)
    return stream.getvalue()


def load_bytes(blob, **load_kwargs):
    return genesis.load(io.BytesIO(blob), **load_kwargs)


def float_bits(x):
    return struct.pack("<d", x)


def tensor_bits(t):
    """Raw bytes of a tensor (any dtype, including bfloat16) in C order."""
    t = t.detach().cpu().resolve_conj().resolve_neg().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def assert_identical(expected, actual):
    """Same types all the way down, same dict key order, arrays bit-identical."""
    assert type(actual) is type(expected), (type(expected), type(actual))
    if isinstance(expected, dict):
        assert [(type(k), k) for k in actual] == [(type(k), k) for k in expected]
        for key in expected:
            assert_identical(expected[key], actual[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for e, a in zip(expected, actual):
            assert_identical(e, a)
    elif isinstance(expected, (np.ndarray, np.generic)):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert actual.tobytes() == expected.tobytes()
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert actual.device == expected.device
        assert tensor_bits(actual) == tensor_bits(expected)
    elif isinstance(expected, float):
        assert float_bits(actual) == float_bits(expected)
    else:
        assert actual == expected


def split_checkpoint(blob):
    """(header dict, data section + checksum table) of a checkpoint, per the documented layout."""
    magic, version, crc, header_nbytes = PREAMBLE.unpack_from(blob)
    assert (magic, version) == (MAGIC, 1)
    header = blob[PREAMBLE.size : PREAMBLE.size + header_nbytes]
    assert zlib.crc32(header) == crc
    data_start = -(-(PREAMBLE.size + header_nbytes) // 64) * 64
    return json.loads(header), blob[data_start:]


def build_checkpoint(header, rest, version=1):
    """A checkpoint with the given header (a dict, or raw bytes) and data section + checksums,
    with a correct header checksum: what a crafted (not merely corrupted) file looks like."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    blob = PREAMBLE.pack(MAGIC, version, zlib.crc32(raw), len(raw)) + raw
    return blob + bytes(-len(blob) % 64) + rest


def rng_bytes(rng, nbytes):
    return rng.integers(0, 256, size=nbytes, dtype=np.uint8).tobytes()


def small_checkpoint():
    """A few hundred bytes that exercise every part of the format."""
    return to_bytes(
        {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(3, dtype=torch.bfloat16)}},
            "np": np.array([1.5, -0.0], dtype=np.float32),
            "mask": np.array([True, False]),
            "groups": [{"lr": 0.1, "betas": (0.9, 0.999), "name": None}],
        }
    )


# --------------------------------------------------------------------------- round trips

NAN_PAYLOADS = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF8000000000123, 0x7FF0000000000001]


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63,
        -(2**64) - 1,
        2**100_000,
        0.0,
        -0.0,
        1.5,
        5e-324,
        1.7976931348623157e308,
        math.inf,
        -math.inf,
        *[struct.unpack("<d", struct.pack("<Q", bits))[0] for bits in NAN_PAYLOADS],
        "",
        "plain",
        "héllo ✓ 😀",
        "\ud800 lone surrogate",
        "nul\x00byte",
    ],
    ids=lambda value: type(value).__name__,
)  # repr() refuses ints this large
def test_python_scalars_round_trip_exactly(value):
    assert_identical(value, roundtrip(value))
    assert_identical([value], roundtrip([value]))


def test_containers_keep_their_types_keys_and_order():
    obj = {
        "b": 1,
        "a": 2,
        7: "int key",
        "7": "str key",
        -3: None,
        2.5: "float key",
        None: "none key",
        True: "bool key",
        2**80: "big int key",
        "nested": [(), [], {}, ((1,), [2.0]), {"x": (None, [True])}],
    }
    assert_identical(obj, roundtrip(obj))


def test_ordered_dicts_keep_their_type_and_metadata():
    plain = collections.OrderedDict(b=1, a=[2])
    loaded = roundtrip({"x": plain})["x"]
    assert_identical(plain, loaded)
    assert not hasattr(loaded, "_metadata")
    tagged = collections.OrderedDict(w=np.ones(2))
    tagged._metadata = collections.OrderedDict([("", {"version": 2}), ("sub", {"version": 1})])
    loaded = roundtrip(tagged)
    assert_identical(tagged, loaded)
    assert_identical(tagged._metadata, loaded._metadata)


def test_a_model_state_dict_round_trips_with_its_types_and_versions():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    state = model.state_dict()
    loaded = roundtrip(state)
    assert_identical(state, loaded)
    assert loaded._metadata == state._metadata and loaded._metadata["1"]["version"] == 2
    # BatchNorm's _load_from_state_dict reads the saved version: it must arrive.
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    seen = []
    original = torch.nn.BatchNorm1d._load_from_state_dict

    def spy(self, state_dict, prefix, local_metadata, *args):
        seen.append(local_metadata.get("version"))
        return original(self, state_dict, prefix, local_metadata, *args)

    torch.nn.BatchNorm1d._load_from_state_dict = spy
    try:
        fresh.load_state_dict(loaded)
    finally:
        torch.nn.BatchNorm1d._load_from_state_dict = original
    assert seen == [2]


def test_torch_sizes_and_parameters_keep_their_types():
    obj = {
        "size": torch.Size([2, 0, 5]),
        "empty": torch.Size([]),
        "p": torch.nn.Parameter(torch.randn(3)),
        "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
        "int_p": torch.nn.Parameter(torch.arange(3), requires_grad=False),
    }
    loaded = roundtrip(obj)
    assert type(loaded["size"]) is torch.Size and loaded["size"] == obj["size"] and loaded["empty"] == ()
    for name in ("p", "frozen", "int_p"):
        assert type(loaded[name]) is torch.nn.Parameter
        assert loaded[name].requires_grad == obj[name].requires_grad
        assert tensor_bits(loaded[name]) == tensor_bits(obj[name])


def test_genesis_parameters_keep_their_type_and_data():
    param = genesis.nn.Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    param.grad = np.ones((2, 3), np.float32)
    loaded = roundtrip([param])[0]
    assert type(loaded) is genesis.nn.Parameter and loaded.grad is None  # a gradient is not state
    assert_identical(param.data, loaded.data)


def test_files_are_written_with_the_lowest_version_that_holds_them():
    def version(obj):
        return PREAMBLE.unpack_from(to_bytes(obj))[1]

    assert version({"a": [1, (2,)], "t": torch.ones(1)}) == 1
    assert version(collections.OrderedDict(a=1)) == 2
    assert version([np.zeros(1, np.complex64)]) == 3
    assert version(collections.OrderedDict(z=torch.zeros(1, dtype=torch.complex128))) == 3
    assert version([torch.zeros(0, dtype=torch.complex64), collections.OrderedDict()]) == 3


def test_a_complex_dtype_in_an_older_version_is_refused():
    blob = bytearray(to_bytes({"z": np.ones(2, np.complex128)}))
    blob[8] = 2
    with pytest.raises(genesis.CheckpointError, match="dtype complex128 needs format version 3, the file is 2"):
        load_bytes(bytes(blob))


Point = collections.namedtuple("Point", "x y")


class Color(int):
    pass


class MyTensor(torch.Tensor):
    pass


@pytest.mark.parametrize(
    "value, message",
    [
        (Point(1, 2), "namedtuple Point: genesis.load never creates classes.*x._asdict()"),
        (collections.defaultdict(list), r"defaultdict \(a dict subclass.*save dict\(x\)"),
        (Color(3), r"Color \(a int subclass"),
        (torch.ones(2).as_subclass(MyTensor), "MyTensor is a torch.Tensor subclass.*as_subclass"),
    ],
    ids=["namedtuple", "defaultdict", "int subclass", "tensor subclass"],
)
def test_types_that_would_not_survive_are_refused_clearly(tmp_path, value, message):
    with pytest.raises(TypeError, match=message):
        genesis.save({"v": value}, tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()
    odd = collections.OrderedDict(a=1)
    odd.note = "x"
    with pytest.raises(TypeError, match=r"attributes \['note'\]"):
        genesis.save(odd, tmp_path / "x.ckpt")


NUMPY_DTYPES = [
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]
SHAPES = [(), (0,), (3, 0, 2), (7,), (4, 5)]


def random_numpy(rng, dtype, shape):
    """Random bit patterns (so float arrays contain NaN payloads, -0.0, inf, subnormals)."""
    dtype = np.dtype(dtype)
    if dtype == np.dtype(bool):
        return rng.integers(0, 2, size=shape).astype(bool)
    count = math.prod(shape)
    return np.frombuffer(rng_bytes(rng, count * dtype.itemsize), dtype=dtype).reshape(shape).copy()


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_numpy_arrays_round_trip_bit_exactly(dtype):
    rng = np.random.default_rng(0)
    arrays = [random_numpy(rng, dtype, shape) for shape in SHAPES]
    assert_identical(arrays, roundtrip(arrays))


def test_float_specials_in_arrays_are_bit_exact():
    bits = np.array([*NAN_PAYLOADS, 0x8000000000000000, 0x7FF0000000000000, 1], dtype=np.uint64)
    array = bits.view(np.float64)
    assert roundtrip(array).view(np.uint64).tolist() == bits.tolist()


def test_numpy_scalars_keep_their_numpy_type():
    values = [np.float32(1.5), np.float64(-0.0), np.float16(2), np.int64(-3), np.uint8(200), np.bool_(True)]
    values += [np.complex64(1.5 - 0.0j), np.complex128(complex(-0.0, math.inf))]
    assert_identical(values, roundtrip(values))


TORCH_DTYPES = [
    torch.bool,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.uint16,
    torch.int32,
    torch.uint32,
    torch.int64,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
]


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_torch_tensors_round_trip_bit_exactly(dtype):
    rng = np.random.default_rng(1)
    tensors = []
    for shape in SHAPES:
        if dtype == torch.bool or dtype.is_complex:  # NumPy has both; it has no 16-byte integer
            tensors.append(torch.from_numpy(random_numpy(rng, str(dtype).removeprefix("torch."), shape)))
        else:
            bits = random_numpy(rng, f"u{dtype.itemsize}", shape)
            tensors.append(torch.from_numpy(bits).view(dtype))
    assert_identical(tensors, roundtrip(tensors))


def test_plain_tensors_save_their_data_only():
    tensor = torch.randn(3, requires_grad=True)
    loaded = roundtrip(tensor)
    assert type(loaded) is torch.Tensor and not loaded.requires_grad
    assert tensor_bits(loaded) == tensor_bits(tensor)


def test_non_contiguous_and_big_endian_inputs_are_saved_contiguous():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    numpy_inputs = [base.T, base[::-1, ::2], base[:, 1], base.astype(">f4"), np.broadcast_to(base[0], (3, 6))]
    tbase = torch.arange(24, dtype=torch.bfloat16).reshape(4, 6)
    torch_inputs = [tbase.t(), tbase[:, ::2], tbase[0].expand(3, 6)]
    loaded = roundtrip(numpy_inputs + torch_inputs)
    for original, result in zip(numpy_inputs, loaded):
        assert result.flags.c_contiguous and result.dtype == np.float32
        np.testing.assert_array_equal(result, original)
    for original, result in zip(torch_inputs, loaded[len(numpy_inputs) :]):
        assert result.is_contiguous() and result.dtype == torch.bfloat16
        assert torch.equal(result, original)


def test_complex_views_are_saved_with_their_values():
    z = torch.complex(torch.arange(6.0), -torch.arange(6.0) - 0.5).reshape(2, 3)
    views = [z.conj(), z.conj().imag, z.t().conj(), z.conj()[:, 1:], z[:, ::2]]
    assert views[0].is_conj() and views[1].is_neg()
    loaded = roundtrip(views)
    for original, result in zip(views, loaded):
        assert result.is_contiguous() and not result.is_conj() and not result.is_neg()
        assert result.dtype == original.dtype and torch.equal(result, original.resolve_conj().resolve_neg())
    base = (np.arange(12) + 1j * np.arange(12, 24)).reshape(3, 4)
    numpy_inputs = [base.astype(">c16"), base.astype(np.complex64).T, base[::2, 1::2]]
    for original, result in zip(numpy_inputs, roundtrip(numpy_inputs)):
        assert result.flags.c_contiguous and result.dtype == original.dtype.newbyteorder("<")
        np.testing.assert_array_equal(result, original)


def test_complex_parameters_keep_requires_grad():
    params = [torch.nn.Parameter(torch.randn(3, dtype=dtype)) for dtype in (torch.complex64, torch.complex128)]
    params.append(torch.nn.Parameter(torch.randn(2, dtype=torch.complex64), requires_grad=False))
    loaded = roundtrip(params)
    assert [p.requires_grad for p in loaded] == [True, True, False]
    assert_identical(params, loaded)


def test_an_optimizer_over_complex_parameters_resumes_bit_exactly(tmp_path):
    """torch's optimizers and genesis's keep complex state for complex parameters; before format
    version 3 such a state_dict could not be saved at all."""

    def train(params, optimizer, seed, steps=4):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, dtype=p.dtype, generator=g)
            optimizer.step()

    def fresh():
        g = torch.Generator().manual_seed(0)
        return [
            torch.nn.Parameter(torch.randn(shape, dtype=dtype, generator=g))
            for shape, dtype in [((4, 3), torch.complex64), ((5,), torch.float32), ((7,), torch.complex64)]
        ]

    for make in (genesis.optim.AdamW, genesis.optim.RMSprop, torch.optim.AdamW):
        straight = fresh()
        straight_opt = make(straight, lr=0.01)
        train(straight, straight_opt, 1)
        train(straight, straight_opt, 2)

        first = fresh()
        first_opt = make(first, lr=0.01)
        train(first, first_opt, 1)
        genesis.save({"model": [p.detach() for p in first], "optim": first_opt.state_dict()}, tmp_path / "c.ckpt")
        checkpoint = genesis.load(tmp_path / "c.ckpt")
        assert any(t.is_complex() for state in checkpoint["optim"]["state"].values() for t in state.values())

        resumed = fresh()
        with torch.no_grad():
            for p, saved in zip(resumed, checkpoint["model"]):
                p.copy_(saved)
        resumed_opt = make(resumed, lr=0.01)
        resumed_opt.load_state_dict(checkpoint["optim"])
        train(resumed, resumed_opt, 2)
        for a, b in zip(straight, resumed):
            assert tensor_bits(a) == tensor_bits(b), make


class ArrayInterfaceOnly:
    def __init__(self, array):
        self.__array_interface__ = array.__array_interface__
        self._keepalive = array


class DLPackOnly:
    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


@pytest.mark.parametrize("wrapper", [ArrayInterfaceOnly, DLPackOnly])
def test_other_array_libraries_come_back_as_numpy(wrapper):
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    loaded = roundtrip({"x": wrapper(array)})
    assert_identical({"x": array}, loaded)


def test_torch_optimizer_state_dict_round_trips_with_types():
    state_dict = {
        "state": {
            0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(5)},
            1: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3, dtype=torch.bfloat16)},
        },
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "foreach": None, "params": [0, 1]}],
    }
    loaded = roundtrip(state_dict)
    assert_identical(state_dict, loaded)
    assert loaded["state"][0]["step"].dim() == 0


def test_numpy_optimizer_state_dict_round_trips_with_types():
    state_dict = {
        "state": {
            0: {"step": 3.0, "exp_avg": np.random.default_rng(2).random(5)},
            1: {"step": 3.0, "exp_avg": np.zeros((2, 2), np.float16)},
        },
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1]}],
    }
    assert_identical(state_dict, roundtrip(state_dict))


def make_params(library):
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in [(4, 3), (5,)]]
    if library == "torch":
        return [torch.nn.Parameter(torch.from_numpy(a)) for a in arrays]
    return [genesis.nn.Parameter(a) for a in arrays]


@pytest.mark.parametrize(
    "make_optimizer, library",
    [
        (genesis.optim.AdamW, "torch"),
        (genesis.optim.AdamW, "numpy"),
        (torch.optim.AdamW, "torch"),
    ],
    ids=["genesis-torch", "genesis-numpy", "torch.optim"],
)
def test_resuming_from_a_checkpoint_gives_the_same_bits(tmp_path, make_optimizer, library):
    def run(params, optimizer, seed):
        rng = np.random.default_rng(seed)
        for _ in range(3):
            for p in params:
                grad = rng.standard_normal(tuple(p.data.shape)).astype(np.float32)
                p.grad = torch.from_numpy(grad) if library == "torch" else grad
            optimizer.step()

    straight = make_params(library)
    straight_opt = make_optimizer(straight, lr=0.01)
    run(straight, straight_opt, seed=10)
    run(straight, straight_opt, seed=11)

    first = make_params(library)
    first_opt = make_optimizer(first, lr=0.01)
    run(first, first_opt, seed=10)
    genesis.save({"params": [p.data for p in first], "optimizer": first_opt.state_dict()}, tmp_path / "ckpt")

    checkpoint = genesis.load(tmp_path / "ckpt")
    resumed = make_params(library)
    for p, saved in zip(resumed, checkpoint["params"]):
        p.data[...] = saved
    resumed_opt = make_optimizer(resumed, lr=0.01)
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    run(resumed, resumed_opt, seed=11)

    for a, b in zip(straight, resumed):
        assert np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes()


# ------------------------------------------------------------------------ files and paths


def test_paths_and_file_objects(tmp_path):
    obj = {"x": np.arange(4.0), "t": torch.ones(2)}
    genesis.save(obj, str(tmp_path / "a.ckpt"))
    assert_identical(obj, genesis.load(str(tmp_path / "a.ckpt")))
    genesis.save(obj, tmp_path / "b.ckpt")
    assert_identical(obj, genesis.load(tmp_path / "b.ckpt"))
    with open(tmp_path / "c.ckpt", "wb") as f:
        genesis.save(obj, f)
    with open(tmp_path / "c.ckpt", "rb") as f:
        assert_identical(obj, genesis.load(f))
    contents = {(tmp_path / name).read_bytes() for name in ["a.ckpt", "b.ckpt", "c.ckpt"]}
    assert len(contents) == 1


def test_checkpoint_can_follow_other_data_in_a_stream():
    stream = io.BytesIO()
    stream.write(b"prefix!")
    genesis.save({"x": np.arange(3)}, stream)
    stream.seek(7)
    assert_identical({"x": np.arange(3)}, genesis.load(stream))


def test_layout_matches_the_documentation():
    a = np.arange(5, dtype=np.float32)
    b = torch.tensor([1.0, -2.0], dtype=torch.bfloat16)
    blob = to_bytes({"a": a, "b": b, "e": np.zeros((0, 2))})
    header, rest = split_checkpoint(blob)
    data_start = len(blob) - len(rest)
    assert data_start % 64 == 0
    assert all(byte == 0 for byte in blob[PREAMBLE.size + PREAMBLE.unpack_from(blob)[3] : data_start])
    assert header["root"] == {"dict": [["a", {"array": 0}], ["b", {"array": 1}], ["e", {"array": 2}]]}
    assert header["buffers"] == [
        {"type": "numpy.ndarray", "dtype": "float32", "shape": [5], "offset": 0, "nbytes": 20},
        {"type": "torch.Tensor", "dtype": "bfloat16", "shape": [2], "device": "cpu", "offset": 64, "nbytes": 4},
        {"type": "numpy.ndarray", "dtype": "float64", "shape": [0, 2], "offset": 128, "nbytes": 0},
    ]
    payloads = [a.tobytes(), tensor_bits(b), b""]
    for entry, payload in zip(header["buffers"], payloads):
        assert rest[entry["offset"] : entry["offset"] + entry["nbytes"]] == payload
    assert rest[20:64] == bytes(44) and rest[68:128] == bytes(60)
    assert rest[128:] == struct.pack("<3I", *(zlib.crc32(p) for p in payloads))


def test_scalar_encoding_matches_the_documentation():
    header, _ = split_checkpoint(to_bytes([1.0, -31, True, None, "s", (), 2**70]))
    assert header == {
        "buffers": [],
        "root": {
            "list": [
                {"float": "3ff0000000000000"},
                {"int": "-0x1f"},
                True,
                None,
                "s",
                {"tuple": []},
                {"int": hex(2**70)},
            ]
        },
    }


def test_large_arrays_are_written_and_read_without_extra_copies(tmp_path):
    array = np.random.default_rng(4).random(4 * 2**20)  # 32 MiB
    path = tmp_path / "big.ckpt"
    tracemalloc.start()
    try:
        genesis.save({"big": array}, path)
        _, save_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        loaded = genesis.load(path)
        _, load_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert save_peak < 2**20
    assert array.nbytes <= load_peak < array.nbytes + 2**20
    assert os.path.getsize(path) < array.nbytes + 512
    assert loaded["big"].tobytes() == array.tobytes()


# ------------------------------------------------------------------------------ devices


def checkpoint_with_device(device):
    """A saved CPU tensor whose header claims it was on `device`."""
    header, rest = split_checkpoint(to_bytes({"t": torch.arange(3.0)}))
    header["buffers"][0]["device"] = device
    return build_checkpoint(header, rest)


needs_no_cuda7 = pytest.mark.skipif(torch.cuda.device_count() > 7, reason="needs cuda:7 to be absent")


@needs_no_cuda7
def test_a_saved_device_that_does_not_exist_loads_on_cpu():
    loaded = load_bytes(checkpoint_with_device("cuda:7"))["t"]
    assert loaded.device == torch.device("cpu")
    assert torch.equal(loaded, torch.arange(3.0))
    assert load_bytes(checkpoint_with_device("xla:0"))["t"].device == torch.device("cpu")
    # A device type this torch does not know is just another device that is not here.
    assert load_bytes(checkpoint_with_device("banana:3"))["t"].device == torch.device("cpu")


@needs_no_cuda7
@pytest.mark.parametrize(
    "map_location",
    [
        "cpu",
        torch.device("cpu"),
        {"cuda:7": "cpu"},
        {"cuda:3": "cuda:0"},  # the last leaves cuda:7 unmapped
    ],
)
def test_map_location_selects_the_device(map_location):
    loaded = load_bytes(checkpoint_with_device("cuda:7"), map_location=map_location)["t"]
    assert loaded.device == torch.device("cpu")
    assert torch.equal(loaded, torch.arange(3.0))


@pytest.mark.parametrize("map_location", ["meta", torch.device("meta"), {"cpu": "meta"}])
def test_map_location_overrides_an_existing_saved_device(map_location):
    # "meta" exists on every machine, so this checks the override without needing a GPU.
    loaded = roundtrip({"t": torch.ones(2), "s": torch.tensor(1.0)}, map_location=map_location)
    assert [t.device.type for t in loaded.values()] == ["meta", "meta"]
    assert [t.shape for t in loaded.values()] == [(2,), ()]


def test_map_location_does_not_touch_numpy_arrays():
    assert_identical({"a": np.arange(3)}, roundtrip({"a": np.arange(3)}, map_location="meta"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_load_on_cuda_or_on_cpu_with_map_location():
    tensors = {"f": torch.randn(5, device="cuda"), "h": torch.randn(3, device="cuda", dtype=torch.bfloat16)}
    blob = to_bytes(tensors)
    assert_identical(tensors, load_bytes(blob))
    on_cpu = load_bytes(blob, map_location="cpu")
    assert all(t.device.type == "cpu" for t in on_cpu.values())
    assert all(tensor_bits(on_cpu[k]) == tensor_bits(tensors[k]) for k in tensors)


# --------------------------------------------------------------------------- bad inputs


def test_every_truncation_is_rejected():
    blob = small_checkpoint()
    for length in range(len(blob)):
        with pytest.raises(genesis.CheckpointError, match="truncated|too short"):
            load_bytes(blob[:length])


def test_trailing_bytes_are_rejected():
    with pytest.raises(genesis.CheckpointError, match="unexpected bytes"):
        load_bytes(small_checkpoint() + b"\x00")


def test_every_single_byte_corruption_is_detected():
    blob = small_checkpoint()
    rng = random.Random(5)
    for position in range(len(blob)):
        corrupted = bytearray(blob)
        corrupted[position] ^= rng.randrange(1, 256)
        with pytest.raises(genesis.CheckpointError):
            load_bytes(bytes(corrupted))


def test_random_multi_byte_corruption_is_detected():
    blob = small_checkpoint()
    rng = random.Random(6)
    for _ in range(300):
        corrupted = bytearray(blob)
        for position in rng.sample(range(len(blob)), rng.randrange(2, 9)):
            corrupted[position] ^= rng.randrange(1, 256)
        with pytest.raises(genesis.CheckpointError):
            load_bytes(bytes(corrupted))


def test_crafted_headers_either_load_or_raise_checkpoint_error():
    """Corruption with a recomputed header checksum reaches the header validator itself."""
    header, rest = split_checkpoint(small_checkpoint())
    text = json.dumps(header).encode()
    rng = random.Random(7)
    rejected = 0
    for _ in range(500):
        mutated = bytearray(text)
        for position in rng.sample(range(len(text)), rng.randrange(1, 4)):
            mutated[position] = rng.choice(b'{}[]",:0123456789-x.aeflnrstu \\\x80')
        try:
            load_bytes(build_checkpoint(bytes(mutated), rest))
        except genesis.CheckpointError:
            rejected += 1
    assert rejected > 400


def test_wrong_magic_is_rejected():
    blob = bytearray(small_checkpoint())
    blob[1:8] = b"NUMPY!!"
    with pytest.raises(genesis.CheckpointError, match="not a genesis checkpoint"):
        load_bytes(bytes(blob))


@pytest.mark.parametrize("version, message", [(4, "version 4 .*newer genesis"), (0, "version 0")])
def test_unknown_versions_are_refused(version, message):
    header, rest = split_checkpoint(small_checkpoint())
    with pytest.raises(genesis.CheckpointError, match=message):
        load_bytes(build_checkpoint(header, rest, version=version))


class Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_pickles_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state": Exploit(marker)})
    torch_file = tmp_path / "torch.pt"
    torch.save({"state": Exploit(marker)}, torch_file)
    for blob in [payload, torch_file.read_bytes()]:
        with pytest.raises(genesis.CheckpointError, match="never unpickles"):
            load_bytes(blob)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: plain unpickling runs it
    assert marker.read_text() == "pwned"


def test_absurd_declared_sizes_fail_fast_without_allocating():
    header, rest = split_checkpoint(to_bytes({"t": np.zeros(2, np.float32)}))
    entry = header["buffers"][0]
    four_tebibytes = dict(entry, shape=[2**30, 2**10], nbytes=2**42)
    beyond_any_memory = dict(entry, shape=[2**40, 2**40], nbytes=2**82)
    empty_but_overflowing = dict(entry, shape=[0, 2**62, 2**62], nbytes=0)
    header_too_long = bytearray(to_bytes([1]))
    header_too_long[16:24] = struct.pack("<Q", 2**64 - 1)
    cases = [
        (build_checkpoint(dict(header, buffers=[four_tebibytes]), rest), "truncated"),
        (build_checkpoint(dict(header, buffers=[beyond_any_memory]), rest), "too large"),
        (build_checkpoint(dict(header, buffers=[empty_but_overflowing]), rest), "too large"),
        (bytes(header_too_long), "truncated"),
    ]
    tracemalloc.start()
    try:
        for blob, message in cases:
            with pytest.raises(genesis.CheckpointError, match=message):
                load_bytes(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def replace_in_header(blob, old, new):
    header, rest = split_checkpoint(blob)
    text = json.dumps(header)
    assert old in text
    return build_checkpoint(text.replace(old, new, 1).encode(), rest)


TWO_ARRAYS = to_bytes({"a": np.arange(2), "b": np.array([True])})
MALFORMED = {
    "not json": (build_checkpoint(b"{nope", b""), "not valid JSON"),
    "not utf-8": (build_checkpoint(b'"\xff"', b""), "not valid JSON"),
    "deep json": (build_checkpoint(b"[" * 100_000 + b"]" * 100_000, b""), "not valid JSON"),
    "top level list": (build_checkpoint(b"[]", b""), "exactly the keys"),
    "unknown tag": (replace_in_header(to_bytes([1]), '"list"', '"set"'), "unknown value tag"),
    "bad int": (replace_in_header(to_bytes(1), '"0x1"', '"1e3"'), "malformed int"),
    "bad float": (replace_in_header(to_bytes(1.0), '"3ff0000000000000"', '"nan"'), "malformed float"),
    "json number": (replace_in_header(to_bytes([None]), "null", "1"), "malformed value"),
    "list key": (replace_in_header(to_bytes({"k": 1}), '["k"', "[[]"), "key"),
    "duplicate key": (replace_in_header(to_bytes({"k": 1, "j": 2}), '"j"', '"k"'), "duplicate dict key"),
    "too deep": (
        build_checkpoint({"buffers": [], "root": json.loads('{"list": [' * 101 + "]}" * 101)}, b""),
        "nested more than 100",
    ),
    "buffer reused": (replace_in_header(TWO_ARRAYS, '{"array": 1}', '{"array": 0}'), "expected 1"),
    "buffer out of range": (build_checkpoint({"buffers": [], "root": {"array": 0}}, b""), "lists only 0"),
    "buffer unused": (replace_in_header(TWO_ARRAYS, '{"array": 1}', "null"), "structure uses 1"),
    "unknown buffer type": (replace_in_header(TWO_ARRAYS, "numpy.ndarray", "pickle"), "unknown type"),
    "extra field": (replace_in_header(TWO_ARRAYS, '"offset"', '"exec": 1, "offset"'), "fields"),
    "bad dtype": (replace_in_header(TWO_ARRAYS, '"int64"', '"object"'), "unsupported dtype"),
    "numpy bfloat16": (replace_in_header(TWO_ARRAYS, '"bool"', '"bfloat16"'), "unsupported dtype"),
    "negative dim": (replace_in_header(TWO_ARRAYS, '"shape": [2]', '"shape": [-2]'), "non-negative"),
    "bool dim": (replace_in_header(TWO_ARRAYS, '"shape": [2]', '"shape": [true]'), "non-negative"),
    "wrong nbytes": (replace_in_header(TWO_ARRAYS, '"nbytes": 16', '"nbytes": 15'), "nbytes 15"),
    "wrong offset": (replace_in_header(TWO_ARRAYS, '"offset": 64', '"offset": 16'), "offset 16"),
    "bad device": (replace_in_header(to_bytes(torch.ones(1)), '"cpu"', '"cuda:01"'), "device must be"),
    "device not a string": (replace_in_header(to_bytes(torch.ones(1)), '"cpu"', "7"), "device must be"),
    "repeated json key": (replace_in_header(TWO_ARRAYS, '"offset": 64', '"offset": 64, "offset": 64'), "repeats a key"),
    "repeated top-level key": (build_checkpoint(b'{"buffers": [], "buffers": [], "root": null}', b""), "repeats a key"),
    "NaN": (build_checkpoint(b'{"buffers": [], "root": NaN}', b""), "NaN is not a JSON value"),
    "minus zero count": (replace_in_header(TWO_ARRAYS, '"shape": [2]', '"shape": [-0]'), "non-negative"),
    "int and float keys equal": (
        replace_in_header(to_bytes({1: 1, 2: 2}), '{"int": "0x2"}', '{"float": "3ff0000000000000"}'),
        "duplicate dict key",
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_headers_are_rejected_clearly(name):
    blob, message = MALFORMED[name]
    with pytest.raises(genesis.CheckpointError, match=message):
        load_bytes(blob)


def test_bool_buffers_must_hold_only_zero_and_one():
    header, rest = split_checkpoint(to_bytes(np.array([True, False])))
    bad = bytes([1, 2]) + rest[2:-4] + struct.pack("<I", zlib.crc32(bytes([1, 2])))
    with pytest.raises(genesis.CheckpointError, match="other than 0 and 1"):
        load_bytes(build_checkpoint(header, bad))


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(small_checkpoint()[:-1])
    with pytest.raises(genesis.CheckpointError, match=f"^{re.escape(str(path))}: checkpoint is truncated"):
        genesis.load(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(genesis.CheckpointError, ValueError)


@pytest.mark.parametrize(
    "value, message",
    [
        ({1, 2}, "unsupported type set"),
        (b"bytes", "unsupported type bytes"),
        (1j, r"unsupported type complex; save numpy\.complex128\(x\)"),
        (object(), "unsupported type object"),
        ({(1, 2): 3}, "dict key"),
        (np.zeros(2, [("re", "f4"), ("im", "f4")]), "unsupported NumPy dtype"),
        (np.array(["text"]), "unsupported NumPy dtype"),
        (torch.zeros(2, dtype=torch.float8_e4m3fn), "unsupported torch tensor"),
        (torch.zeros(2).to_sparse(), "unsupported torch tensor"),
    ],
)
def test_unsupported_values_raise_type_error_and_leave_the_file_alone(tmp_path, value, message):
    path = tmp_path / "existing.ckpt"
    path.write_bytes(b"previous checkpoint")
    with pytest.raises(TypeError, match=message):
        genesis.save({"ok": 1, "bad": [value]}, path)
    assert path.read_bytes() == b"previous checkpoint"


def test_error_paths_point_at_the_bad_value():
    with pytest.raises(TypeError, match=r"obj\['state'\]\[0\]\['buf'\]\[1\]"):
        genesis.save({"state": {0: {"buf": [1, {2}]}}}, io.BytesIO())


def nested_lists(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_limit_and_self_containing_containers():
    assert_identical(nested_lists(100), roundtrip(nested_lists(100)))
    with pytest.raises(ValueError, match="nested more than 100"):
        genesis.save(nested_lists(101), io.BytesIO())
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        genesis.save(loop, io.BytesIO())


def test_genesis_saves_and_loads_numpy_without_importing_torch(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import genesis
        genesis.save({{"a": np.arange(3), "step": 1.0}}, {str(tmp_path / "np.ckpt")!r})
        loaded = genesis.load({str(tmp_path / "np.ckpt")!r})
        assert loaded["a"].tolist() == [0, 1, 2] and loaded["step"] == 1.0
        assert "torch" not in sys.modules, "torch was imported"
        tensor = genesis.load({str(tmp_path / "torch.ckpt")!r})["t"]
        assert type(tensor).__module__ == "torch", type(tensor)
        print("ok")
    """)
    genesis.save({"t": torch.ones(2)}, tmp_path / "torch.ckpt")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=NO_TORCH_ENV
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---------------------------------------------------------------------- atomic replacement


def run_child(script, timeout=120):
    """Run `script` in a fresh interpreter (for cases that set process limits or could crash)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_meta_tensor_is_refused_before_the_file_is_touched(tmp_path):
    path = tmp_path / "existing.ckpt"
    genesis.save({"x": 1}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"obj\['t'\]: a meta tensor has no data"):
        genesis.save({"ok": torch.ones(2), "t": torch.ones(2, device="meta")}, path)
    assert path.read_bytes() == before


def test_a_save_interrupted_part_way_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "existing.ckpt"
    genesis.save({"x": 1}, path)
    before = path.read_bytes()
    real_host_array = genesis.serialization._host_array
    calls = []

    def interrupted(source):  # Ctrl-C while the second array is copied to the host
        calls.append(source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_host_array(source)

    monkeypatch.setattr(genesis.serialization, "_host_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        genesis.save([np.arange(100_000), np.arange(10)], path)
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["existing.ckpt"]  # no temporary file left behind


def test_a_full_disk_leaves_the_previous_file(tmp_path):
    # RLIMIT_FSIZE makes writes past 1 MiB fail with EFBIG, as a full disk fails with ENOSPC.
    pytest.importorskip("resource")
    path = tmp_path / "existing.ckpt"
    genesis.save({"x": np.arange(10)}, path)
    before = path.read_bytes()
    run_child(f"""
        import errno, resource, signal
        import numpy as np
        import genesis
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            genesis.save({{"x": np.zeros(2**20)}}, {str(path)!r})
        except OSError as error:
            assert error.errno == errno.EFBIG, error
        else:
            raise AssertionError("the save did not fail")
    """)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["existing.ckpt"]


def test_concurrent_readers_see_the_old_or_the_new_file_only(tmp_path):
    path = tmp_path / "shared.ckpt"
    done = tmp_path / "done"
    versions = [np.full(2**19, float(i)) for i in range(2)]  # 4 MiB each: writes take a while
    genesis.save({"v": versions[0]}, path)
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import os
        import genesis
        loads = 0
        while not os.path.exists({str(done)!r}):
            value = genesis.load({str(path)!r})["v"]
            assert value.shape == (2**19,) and value.min() == value.max() in (0.0, 1.0), value
            loads += 1
            if loads == 1:
                print("reading", flush=True)
        print(loads)
    """),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline() == "reading\n"  # the reader is up: now overwrite under it
        for i in range(1, 41):
            genesis.save({"v": versions[i % 2]}, path)
    finally:
        done.touch()
        out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert int(out) > 1


def test_saving_through_a_symlink_replaces_the_target_and_keeps_its_mode(tmp_path):
    target = tmp_path / "real.ckpt"
    link = tmp_path / "link.ckpt"
    genesis.save({"x": 1}, target)
    os.chmod(target, 0o640)
    link.symlink_to(target)
    genesis.save({"x": 2}, link)
    assert link.is_symlink() and genesis.load(target) == {"x": 2}
    assert (target.stat().st_mode & 0o777) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["link.ckpt", "real.ckpt"]


# ------------------------------------------------------------------------------- pipes


def test_save_to_and_load_from_a_pipe():
    obj = {"state": {0: {"exp_avg": torch.randn(1000)}}, "np": np.arange(300_000.0)}  # > a pipe's buffer
    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb") as reading:
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent("""
            import sys
            import genesis
            genesis.save(genesis.load(sys.stdin.buffer), sys.stdout.buffer)
        """),
            ],
            stdin=subprocess.PIPE,
            stdout=write_fd,
        )
        os.close(write_fd)
        genesis.save(obj, writer.stdin)  # save writes a pipe as it comes
        writer.stdin.close()
        loaded = genesis.load(reading)  # load reads one: no seek
    assert writer.wait(timeout=120) == 0
    assert_identical(obj, loaded)


def test_a_truncated_pipe_is_reported_as_truncated():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, small_checkpoint()[:100])
    os.close(write_fd)
    with open(read_fd, "rb") as reading, pytest.raises(genesis.CheckpointError, match="truncated"):
        genesis.load(reading)


def test_bytes_paths_and_long_names_are_replaced_atomically_too(tmp_path):
    path = tmp_path / ("n" * 250)  # the temporary name must still fit in 255 bytes
    genesis.save({"x": 1}, os.fsencode(path))
    genesis.save({"x": 2}, os.fsencode(path))
    assert genesis.load(path) == {"x": 2}
    assert os.listdir(tmp_path) == [path.name]


def test_named_pipes_are_written_into_not_replaced(tmp_path):
    # The same branch keeps a save to /dev/null from replacing the device (not tried here: a
    # regression would replace the machine's /dev/null when the tests run as root).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(
        [sys.executable, "-c", "import sys, genesis; print(genesis.load(sys.argv[1])['x'].sum())", str(fifo)],
        stdout=subprocess.PIPE,
        text=True,
    )
    genesis.save({"x": np.arange(3)}, fifo)
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0 and out.strip() == "3"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
