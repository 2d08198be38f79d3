"""Checkpoint files: ``genesis.save(obj, f)`` and ``genesis.load(f, map_location=None)``.

A checkpoint is a versioned container: a fixed 24-byte preamble, a JSON header that
describes the saved structure, the raw little-endian bytes of every array (each aligned to
64 bytes), and a table of CRC32 checksums, one per array. docs/checkpoint-format.md is the
full specification; the constants below are the ones it names.

Safety: loading never executes code from the file. The header is parsed with ``json.loads``
and every value in it is type-checked; every declared size and offset is checked against
the real size of the file before any array is allocated; every byte of the file is covered
by a checksum, a zero-padding check or an exact-value check, so corruption is reported as a
``CheckpointError`` instead of silently loading wrong numbers.

torch is imported lazily so that genesis works with NumPy alone: saving only recognises
tensors when torch is already imported (a tensor cannot exist otherwise), and loading
imports torch only when it meets a torch entry.
"""

import contextlib
import io
import json
import math
import os
import re
import secrets
import stat
import struct
import sys
import zlib
from collections import OrderedDict, namedtuple

import numpy as np

from ._interop import is_dtensor as _is_dtensor
from .nn.parameter import Parameter as _GenesisParameter

__all__ = ["CheckpointError", "load", "save"]

MAGIC = b"\x93GENESIS"
# Version 2 adds the value tags of _VERSION_2_TAGS, version 3 the dtypes of _DTYPE_VERSIONS.
# A file is written with the lowest version that holds it, so a file without anything new
# stays version 1, which every genesis reads.
FORMAT_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
_VERSION_1_TAGS = ("array", "list", "tuple", "dict")
_VERSION_2_TAGS = ("ordered_dict", "torch.Size", "torch.nn.Parameter", "genesis.nn.Parameter")
# Buffers start at multiples of ALIGNMENT bytes from the checkpoint's first byte, so a
# future reader can memory-map a checkpoint and hand out aligned arrays.
ALIGNMENT = 64
# Nesting limit for dicts/lists/tuples. Each level costs up to three JSON levels and two
# Python frames, so 100 keeps json and our own recursion far from Python's limit (1000),
# which a hostile header would otherwise use to crash the loader.
MAX_DEPTH = 100
MAX_NDIM = 64  # NumPy's limit: every saved array is read back through NumPy

# magic, format version, CRC32 of the header, header length in bytes
_PREAMBLE = struct.Struct("<8sIIQ")
_CHECKSUM_SIZE = 4  # one little-endian uint32 CRC32 per buffer in the trailing table

# Header dtype name -> the NumPy dtype its raw bytes are stored as (always little-endian).
_STORAGE_DTYPES = {
    name: np.dtype(code)
    for name, code in {
        "bool": "|b1",
        "int8": "|i1",
        "uint8": "|u1",
        "int16": "<i2",
        "uint16": "<u2",
        "int32": "<i4",
        "uint32": "<u4",
        "int64": "<i8",
        "uint64": "<u8",
        "float16": "<f2",
        "float32": "<f4",
        "float64": "<f8",
        # NumPy has no bfloat16: torch's bfloat16 bit patterns travel as uint16.
        "bfloat16": "<u2",
        # (real, imaginary) pairs of float32 / float64, as NumPy and torch lay them out.
        "complex64": "<c8",
        "complex128": "<c16",
    }.items()
}
# The format version that introduced a dtype; the others are in every version.
_DTYPE_VERSIONS = {"complex64": 3, "complex128": 3}
# NumPy dtype (little-endian form) -> header name, for arrays that NumPy itself can hold.
_NUMPY_DTYPE_NAMES = {dtype: name for name, dtype in _STORAGE_DTYPES.items() if name != "bfloat16"}

_COMMON_FIELDS = {"type", "dtype", "shape", "offset", "nbytes"}
# Allowed values of a buffer entry's "type" -> the exact set of fields such an entry has.
_ENTRY_FIELDS = {
    "numpy.ndarray": _COMMON_FIELDS,
    "numpy.generic": _COMMON_FIELDS,
    "torch.Tensor": _COMMON_FIELDS | {"device"},
}

# Python values that are stored in the header itself; they are also the allowed dict keys.
# Exact types: a subclass (an IntEnum, a str subclass) would come back as its base type.
_SCALAR_TYPES = (str, bool, int, float, type(None))
_CONTAINER_TYPES = (dict, list, tuple, OrderedDict)
_INT64 = range(-(2**63), 2**63)
# Dtypes that can require gradients (torch.nn.Parameter).
_GRAD_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
_INT_TEXT = re.compile(r"-?0x[0-9a-f]+")
# A saved device: a type, optionally with an index (no leading zeros), as str(torch.device).
_DEVICE = re.compile(r"[a-z][a-z0-9_]*(:(0|[1-9][0-9]*))?")
_FLOAT_BITS = re.compile(r"[0-9a-f]{16}")
# NumPy refuses shapes whose byte size (ignoring zero-length axes) does not fit in intp.
_MAX_ARRAY_BYTES = 2**63 - 1


class CheckpointError(ValueError):
    """The file is not a valid genesis checkpoint (wrong format, truncated or corrupted)."""


def save(obj, f):
    """Write `obj` to `f` (a path or a binary file object) as a genesis checkpoint.

    `obj` is a nested structure of dicts, lists and tuples holding str/int/float/bool/None,
    NumPy arrays and scalars, torch tensors and other DLPack or ``__array_interface__``
    arrays. Raises TypeError (unsupported type or dtype) or ValueError (nesting too deep)
    before anything is written.

    A path is replaced atomically: the checkpoint is written to a temporary file in the same
    folder, flushed to disk, and renamed over `f` only when complete, so a save that fails
    part-way (an I/O error, a full disk, Ctrl-C) leaves the previous file untouched, and a
    concurrent reader sees either the old or the new file, never a mix. A path that names a
    named pipe or a device (``/dev/null``) is written into, not replaced.

    ``OrderedDict`` (with its ``_metadata``), ``torch.Size``, ``torch.nn.Parameter`` and
    ``genesis.nn.Parameter`` keep their types; other subclasses (named tuples, ``defaultdict``,
    tensor subclasses) raise TypeError rather than come back as their base type.
    """
    encoder = _Encoder()
    root = encoder.encode(obj, "obj", 0)
    header = json.dumps({"buffers": encoder.entries, "root": root}, separators=(",", ":"), allow_nan=False)
    header = header.encode("ascii")
    if isinstance(f, (str, bytes, os.PathLike)):
        _replace_file(os.fsdecode(f), lambda stream: _write_checkpoint(stream, header, encoder))
    else:
        _write_checkpoint(f, header, encoder)


def load(f, map_location=None):
    """Read a checkpoint written by `save` from `f` (a path or a binary file object).

    NumPy arrays come back as NumPy arrays; torch tensors as torch tensors, on
    `map_location` when given (a device, a device string, or a dict mapping saved device
    strings to target devices), else on their saved device when it exists here, else on
    the CPU. Raises CheckpointError (a ValueError) for anything that is not an intact
    checkpoint.
    """
    with _opened(f, "rb") as stream:
        try:
            return _Reader(_seekable(stream), map_location).read()
        except CheckpointError as error:
            name = getattr(stream, "name", None)
            if isinstance(name, str):
                error.args = (f"{name}: {error}",)
            raise


def _replace_file(path, write):
    """Atomically replace the file at `path` with what `write(stream)` writes.

    The data goes to a new file next to the target (same folder, hence the same file system,
    so the final os.replace is an atomic rename), is fsync'ed, and only then replaces the
    target. On any failure, KeyboardInterrupt included, the temporary file is removed and the
    target is left as it was.
    """
    target = os.path.realpath(path)  # through a symlink: replace the file, keep the link
    try:
        special = not stat.S_ISREG(os.stat(target).st_mode)
    except FileNotFoundError:
        special = False
    if special:  # a named pipe or a device such as /dev/null: write into it, never replace it
        with open(target, "wb") as stream:
            write(stream)
        return
    folder, name = os.path.split(target)
    while True:
        # name[:200]: the temporary name must fit the file system's 255-byte limit too.
        temporary = os.path.join(folder, f".{name[:200]}.{secrets.token_hex(6)}.tmp")
        try:
            # Mode 0o666 filtered by the umask: the permissions open(path, "wb") would give.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with open(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))  # keep an existing file's mode
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); folders cannot be opened on Windows."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _opened(f, mode):
    """Yield a binary stream for `f`: open (and close) a path, use a file object as it is."""
    if isinstance(f, (str, bytes, os.PathLike)):
        with open(f, mode) as stream:
            yield stream
    else:
        yield f


def _seekable(stream):
    """`stream`, or for a pipe or socket (which cannot seek) an in-memory copy of the rest of it.

    The reader checks every declared size against the stream's length before allocating, so it
    needs that length first; for a non-seekable stream the bytes actually sent are it, and the
    memory used is bounded by them (arrays are then copied out of this buffer once).
    """
    seekable = getattr(stream, "seekable", None)
    if seekable is not None and seekable():
        return stream
    chunks = []
    while chunk := stream.read(1 << 20):
        chunks.append(chunk)
    return io.BytesIO(b"".join(chunks))


def _align(position):
    return -(-position // ALIGNMENT) * ALIGNMENT


def _data_start(header_nbytes):
    """Offset of the data section: the first aligned position after the header."""
    return _align(_PREAMBLE.size + header_nbytes)


# --------------------------------------------------------------------------------- saving


class _Encoder:
    """Turns a Python object into the header's JSON tree, collecting its arrays on the way.

    Arrays are numbered in the order the depth-first walk meets them, which is also the
    order their bytes are written in, so the loader can read the file front to back.
    """

    def __init__(self):
        self.entries = []  # the header's "buffers" table
        self.sources = []  # per entry: the NumPy array or torch tensor to write
        self.version = 1  # raised to the version of the newest tag or dtype written
        self._data_end = 0  # end of the last buffer, relative to the data section

    def encode(self, obj, path, depth):
        kind = type(obj)
        # NumPy first: np.float64 is also a Python float, and keeping it NumPy keeps its type.
        if isinstance(obj, (np.ndarray, np.generic)):
            numpy_kind = "numpy.ndarray" if isinstance(obj, np.ndarray) else "numpy.generic"
            return self._add_numpy(np.asarray(obj), numpy_kind, path)
        if kind in _SCALAR_TYPES:
            return _encode_scalar(obj)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            if kind is torch.nn.Parameter:
                return self._tagged(
                    "torch.nn.Parameter", [self._add_torch(torch, obj.detach(), path), obj.requires_grad]
                )
            if _is_dtensor(obj):
                raise TypeError(
                    f"cannot save {path}: a DTensor holds one rank's shard of a distributed tensor;"
                    " save t.to_local() on each rank, or use torch.distributed.checkpoint, which reshards"
                )
            if kind is not torch.Tensor:
                raise TypeError(
                    f"cannot save {path}: {kind.__qualname__} is a torch.Tensor subclass, which"
                    " genesis does not keep; save t.as_subclass(torch.Tensor) for its data"
                )
            return self._add_torch(torch, obj, path)
        if torch is not None and kind is torch.Size:
            return self._tagged("torch.Size", [_encode_scalar(int(n)) for n in obj])
        if kind is _GenesisParameter:  # its data only; a gradient is not state
            return self._tagged("genesis.nn.Parameter", self._add_numpy(obj.data, "numpy.ndarray", path))
        if kind in _CONTAINER_TYPES:
            return self._encode_container(obj, path, depth)
        if isinstance(obj, (*_SCALAR_TYPES, dict, list, tuple)):
            raise TypeError(f"cannot save {path}: {_subclass_problem(obj)}")
        if hasattr(obj, "__dlpack__"):
            # device="cpu" asks the producer for a host copy when the array lives on a GPU.
            return self._add_numpy(np.from_dlpack(obj, device="cpu"), "numpy.ndarray", path)
        if hasattr(obj, "__array_interface__"):
            return self._add_numpy(np.asarray(obj), "numpy.ndarray", path)
        hint = "; save numpy.complex128(x), which keeps it exactly" if kind is complex else ""
        raise TypeError(f"cannot save {path}: unsupported type {kind.__qualname__}{hint}")

    def _encode_container(self, obj, path, depth):
        if depth >= MAX_DEPTH:
            raise ValueError(
                f"cannot save {path}: containers are nested more than {MAX_DEPTH} levels deep"
                " (or a container contains itself)"
            )
        if not isinstance(obj, dict):
            items = [self.encode(value, f"{path}[{i}]", depth + 1) for i, value in enumerate(obj)]
            return {"tuple" if isinstance(obj, tuple) else "list": items}
        pairs = [
            [_encode_key(key, path), self.encode(value, f"{path}[{_preview(key)}]", depth + 1)]
            for key, value in obj.items()
        ]
        if type(obj) is dict:
            return {"dict": pairs}
        # An OrderedDict, with the `_metadata` attribute that nn.Module.state_dict() attaches
        # (module versions, read back by load_state_dict). Other attributes would be lost.
        extra = sorted(set(vars(obj)) - {"_metadata"})
        if extra:
            raise TypeError(f"cannot save {path}: an OrderedDict with attributes {extra}; genesis keeps only _metadata")
        metadata = getattr(obj, "_metadata", None)
        metadata = None if metadata is None else self.encode(metadata, f"{path}._metadata", depth + 1)
        return self._tagged("ordered_dict", [pairs, metadata])

    def _tagged(self, tag, payload):
        self.version = max(self.version, 2)
        return {tag: payload}

    def _add_numpy(self, array, kind, path):
        name = _NUMPY_DTYPE_NAMES.get(array.dtype.newbyteorder("<"))
        if name is None:
            raise TypeError(f"cannot save {path}: unsupported NumPy dtype {array.dtype}")
        return self._add({"type": kind, "dtype": name, "shape": list(array.shape)}, array, path)

    def _add_torch(self, torch, tensor, path):
        name = str(tensor.dtype).removeprefix("torch.")
        if tensor.layout != torch.strided or name not in _STORAGE_DTYPES:
            raise TypeError(f"cannot save {path}: unsupported torch tensor ({tensor.dtype}, {tensor.layout})")
        if tensor.is_meta:
            raise TypeError(f"cannot save {path}: a meta tensor has no data to save")
        entry = {"type": "torch.Tensor", "dtype": name, "shape": list(tensor.shape), "device": str(tensor.device)}
        return self._add(entry, tensor, path)

    def _add(self, entry, source, path):
        if len(entry["shape"]) > MAX_NDIM:
            raise ValueError(f"cannot save {path}: more than {MAX_NDIM} dimensions")
        entry["offset"] = _align(self._data_end)
        entry["nbytes"] = math.prod(entry["shape"]) * _STORAGE_DTYPES[entry["dtype"]].itemsize
        self.version = max(self.version, _DTYPE_VERSIONS.get(entry["dtype"], 1))
        self._data_end = entry["offset"] + entry["nbytes"]
        self.entries.append(entry)
        self.sources.append(source)
        return {"array": len(self.entries) - 1}


def _subclass_problem(obj):
    """Why a subclass of a saveable type is refused: its type would not survive the trip."""
    kind = type(obj)
    if isinstance(obj, tuple) and hasattr(kind, "_fields"):
        return (
            f"namedtuple {kind.__qualname__}: genesis.load never creates classes from a file;"
            " save tuple(x) or x._asdict()"
        )
    base = next(base for base in (bool, int, float, str, dict, list, tuple) if isinstance(obj, base))
    return (
        f"unsupported type {kind.__qualname__} (a {base.__name__} subclass, which would load as a plain"
        f" {base.__name__}); save {base.__name__}(x)"
    )


def _encode_key(key, path):
    if type(key) not in _SCALAR_TYPES:
        raise TypeError(
            f"cannot save {path}: dict key {_preview(key)} has type {type(key).__qualname__};"
            " keys must be str, int, float, bool or None"
        )
    return _encode_scalar(key)


def _encode_scalar(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # Hex text has no size limit (Python caps decimal conversion at 4300 digits).
        return {"int": hex(value)}
    # The IEEE-754 bit pattern keeps -0.0, inf and every NaN payload exact.
    return {"float": struct.pack(">d", value).hex()}


def _write_checkpoint(stream, header, encoder):
    _write_all(stream, _PREAMBLE.pack(MAGIC, encoder.version, zlib.crc32(header), len(header)))
    _write_all(stream, header)
    data_start = _data_start(len(header))
    _write_all(stream, bytes(data_start - _PREAMBLE.size - len(header)))
    position = data_start
    checksums = []
    for entry, source in zip(encoder.entries, encoder.sources):
        data = _storage_bytes(_host_array(source), entry["dtype"])
        offset = data_start + entry["offset"]
        _write_all(stream, bytes(offset - position))
        _write_all(stream, data)
        checksums.append(zlib.crc32(data))
        position = offset + entry["nbytes"]
    _write_all(stream, struct.pack(f"<{len(checksums)}I", *checksums))


def _host_array(source):
    """A NumPy array with `source`'s data: a view for CPU data, a host copy for device tensors."""
    if isinstance(source, np.ndarray):
        return source
    torch = sys.modules["torch"]
    # A conjugate or negative view (t.conj(), t.conj().imag) keeps its sign as a lazy bit that
    # .numpy() refuses: apply it (a copy only for such a view).
    tensor = source.detach().cpu().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.uint16)
    return tensor.numpy()


def _storage_bytes(array, dtype_name):
    """The array's bytes as stored: C order, little-endian, as a flat uint8 view.

    Copies only when the input is non-contiguous or big-endian; otherwise this is a view,
    so large arrays are written straight from their own memory.
    """
    stored = array.astype(_STORAGE_DTYPES[dtype_name], order="C", copy=False)
    return stored.reshape(-1).view(np.uint8)


def _write_all(stream, data):
    """Write all of `data`; raw (unbuffered) streams may accept only part of it per call."""
    view = memoryview(data)
    while view:
        view = view[stream.write(view) :]


# -------------------------------------------------------------------------------- loading

_Buffer = namedtuple("_Buffer", "kind dtype shape device offset nbytes")


class _Reader:
    """Reads one checkpoint from a stream, front to back, validating as it goes."""

    def __init__(self, stream, map_location):
        self._stream = stream
        self._map_location = map_location
        self._start = stream.tell()  # a checkpoint may follow other data in a file object
        self._position = 0  # relative to self._start
        self._buffers = []
        self._data_start = None  # known once the header's length is
        self._checksums = []  # CRC32 of each buffer read so far

    def read(self):
        size = self._stream.seek(0, os.SEEK_END) - self._start
        self._stream.seek(self._start)
        header, header_nbytes = self._read_header(size)
        self._data_start = _data_start(header_nbytes)
        self._buffers, data_end = _parse_buffer_table(header["buffers"], self._version)
        expected = self._data_start + data_end + _CHECKSUM_SIZE * len(self._buffers)
        if size != expected:
            problem = "truncated" if size < expected else "followed by unexpected bytes"
            raise CheckpointError(
                f"checkpoint is {problem}: the header describes {expected} bytes, the file has {size}"
            )

        root = self._decode(header["root"], "root", 0)
        if len(self._checksums) != len(self._buffers):
            raise CheckpointError(
                f"header lists {len(self._buffers)} buffers but the structure uses {len(self._checksums)}"
            )
        self._skip_padding(self._data_start + data_end)  # only non-empty when there are no buffers
        count = len(self._buffers)
        stored = struct.unpack(f"<{count}I", self._read_exact(_CHECKSUM_SIZE * count))
        for index, (expected_crc, actual_crc) in enumerate(zip(stored, self._checksums)):
            if expected_crc != actual_crc:
                raise CheckpointError(f"checksum mismatch in buffer {index}: the file is corrupted")
        return root

    def _read_header(self, size):
        if size < _PREAMBLE.size:
            raise CheckpointError(f"file is too short to be a genesis checkpoint ({size} bytes)")
        magic, version, header_crc, header_nbytes = _PREAMBLE.unpack(self._read_exact(_PREAMBLE.size))
        if magic != MAGIC:
            raise CheckpointError(_not_a_checkpoint_message(magic))
        if version not in _READABLE_VERSIONS:
            newer = " (written by a newer genesis; upgrade to read it)" if version > FORMAT_VERSION else ""
            raise CheckpointError(
                f"unsupported checkpoint format version {version}{newer};"
                f" this genesis reads versions {', '.join(map(str, _READABLE_VERSIONS))}"
            )
        self._version = version
        self._tags = _VERSION_1_TAGS + (_VERSION_2_TAGS if version >= 2 else ())
        if header_nbytes > size - _PREAMBLE.size:
            raise CheckpointError(
                f"checkpoint is truncated: the header declares {header_nbytes} bytes"
                f" but only {size - _PREAMBLE.size} follow the preamble"
            )
        raw = self._read_exact(header_nbytes)
        if zlib.crc32(raw) != header_crc:
            raise CheckpointError("header checksum mismatch: the file is corrupted")
        try:
            header = json.loads(
                raw.decode("utf-8"), object_pairs_hook=_json_object, parse_constant=_json_constant, parse_int=_json_int
            )
        except CheckpointError:
            raise
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
            raise CheckpointError(f"header is not valid JSON: {error}") from None
        if not (
            isinstance(header, dict) and header.keys() == {"buffers", "root"} and isinstance(header["buffers"], list)
        ):
            raise CheckpointError('header must be a JSON object with exactly the keys "buffers" (a list) and "root"')
        return header, header_nbytes

    def _decode(self, node, path, depth):
        if _is_scalar_node(node):
            return _decode_scalar(node, path)
        if not (isinstance(node, dict) and len(node) == 1):
            raise CheckpointError(f"{path}: malformed value {_preview(node)}")
        [(tag, payload)] = node.items()
        if tag not in self._tags:
            raise CheckpointError(f"{path}: unknown value tag {_preview(tag)}")
        if tag == "array":
            return self._read_array(payload, path)
        if tag == "genesis.nn.Parameter":
            if not (isinstance(payload, dict) and payload.keys() == {"array"}):
                raise CheckpointError(f"{path}: genesis.nn.Parameter payload must be an array reference")
            return _GenesisParameter(self._read_array(payload["array"], path, "numpy.ndarray"))
        if depth >= MAX_DEPTH:
            raise CheckpointError(f"{path}: containers are nested more than {MAX_DEPTH} levels deep")
        if not isinstance(payload, list):
            raise CheckpointError(f"{path}: {tag} payload must be a JSON list")
        if tag == "list":
            return [self._decode(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(payload)]
        if tag == "tuple":
            return tuple(self._decode(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(payload))
        if tag == "dict":
            return self._decode_pairs(payload, {}, path, depth)
        if tag == "torch.Size":
            return self._decode_size(payload, path)
        if len(payload) != 2:
            raise CheckpointError(f"{path}: {tag} payload must be a JSON list of two items")
        if tag == "torch.nn.Parameter":
            return self._decode_parameter(payload, path)
        pairs, metadata = payload  # ordered_dict
        if not isinstance(pairs, list):
            raise CheckpointError(f"{path}: ordered_dict items must be a JSON list")
        result = self._decode_pairs(pairs, OrderedDict(), path, depth)
        if metadata is not None:
            result._metadata = self._decode(metadata, f"{path}._metadata", depth + 1)
        return result

    def _decode_pairs(self, payload, result, path, depth):
        for pair in payload:
            if not (isinstance(pair, list) and len(pair) == 2 and _is_scalar_node(pair[0])):
                raise CheckpointError(f"{path}: dict entries must be [key, value] with a str/int/float/bool/None key")
            key = _decode_scalar(pair[0], path)
            if key in result:
                raise CheckpointError(f"{path}: duplicate dict key {_preview(key)}")
            result[key] = self._decode(pair[1], f"{path}[{_preview(key)}]", depth + 1)
        return result

    def _decode_size(self, payload, path):
        if not all(_is_scalar_node(n) and isinstance(n, dict) and "int" in n for n in payload):
            raise CheckpointError(f"{path}: torch.Size payload must be a list of ints")
        sizes = [_decode_scalar(n, path) for n in payload]
        if not all(n in _INT64 for n in sizes):
            raise CheckpointError(f"{path}: torch.Size dimensions must fit in 64 bits")
        import torch

        return torch.Size(sizes)

    def _decode_parameter(self, payload, path):
        array_node, requires_grad = payload
        if not (isinstance(array_node, dict) and array_node.keys() == {"array"} and type(requires_grad) is bool):
            raise CheckpointError(f"{path}: torch.nn.Parameter payload must be [array, requires_grad]")
        index = array_node["array"]
        if (
            type(index) is int
            and index < len(self._buffers)
            and requires_grad
            and self._buffers[index].dtype not in _GRAD_DTYPES
        ):
            raise CheckpointError(f"{path}: a {self._buffers[index].dtype} parameter cannot require gradients")
        import torch

        return torch.nn.Parameter(self._read_array(array_node["array"], path, "torch.Tensor"), requires_grad)

    def _read_array(self, index, path, kind=None):
        """The array in buffer `index`; `kind` is the buffer type the context requires."""
        expected = len(self._checksums)
        if type(index) is not int or index != expected:
            raise CheckpointError(
                f"{path}: refers to buffer {_preview(index)}, expected {expected}"
                " (buffers are used exactly once, in file order)"
            )
        if index >= len(self._buffers):
            raise CheckpointError(f"{path}: refers to buffer {index} but the header lists only {len(self._buffers)}")
        buffer = self._buffers[index]
        if kind is not None and buffer.kind != kind:
            raise CheckpointError(f"{path}: buffer {index} must be a {kind}, not a {buffer.kind}")
        self._skip_padding(self._data_start + buffer.offset)
        # The layout check in read() guarantees these bytes exist, so this allocation is
        # bounded by the file's real size.
        array = np.empty(buffer.shape, dtype=_STORAGE_DTYPES[buffer.dtype])
        raw = array.reshape(-1).view(np.uint8)
        self._readinto(raw)
        self._checksums.append(zlib.crc32(raw))
        # Bytes other than 0/1 in a bool array are undefined behaviour for NumPy and torch.
        if buffer.dtype == "bool" and raw.size and raw.max() > 1:
            raise CheckpointError(f"{path}: bool buffer {index} holds bytes other than 0 and 1")
        if buffer.kind == "numpy.ndarray":
            return array
        if buffer.kind == "numpy.generic":
            return array[()]
        return self._to_torch(array, buffer)

    def _to_torch(self, array, buffer):
        import torch  # only here, so that genesis works without torch installed

        tensor = torch.from_numpy(array)  # shares memory with `array`: no copy on the CPU
        if buffer.dtype == "bfloat16":
            tensor = tensor.view(torch.bfloat16)
        return tensor.to(self._target_device(torch, buffer.device))

    def _target_device(self, torch, saved):
        target = self._map_location
        if isinstance(target, dict):
            target = target.get(saved)  # unmapped devices behave as if map_location were None
        if target is not None:
            return torch.device(target)
        try:
            saved_device = torch.device(saved)
        except RuntimeError:  # a device type this torch does not know: it does not exist here
            return torch.device("cpu")
        return saved_device if _device_exists(torch, saved_device) else torch.device("cpu")

    def _skip_padding(self, target):
        padding = self._read_exact(target - self._position)
        if padding.count(0) != len(padding):
            raise CheckpointError(f"non-zero padding before byte {target}: the file is corrupted")

    def _read_exact(self, nbytes):
        data = bytearray(nbytes)
        self._readinto(data)
        return data

    def _readinto(self, destination):
        """Fill `destination` from the stream; file objects may return short reads."""
        view = memoryview(destination)
        while view:
            count = self._stream.readinto(view)
            if not count:
                raise CheckpointError(f"file ended early at byte {self._position}")
            view = view[count:]
            self._position += count


# json.loads hooks: the header is strict RFC 8259 JSON, read by the same rules as the C++
# reader (csrc/api/json.cpp), so that both accept exactly the same files.
def _json_object(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):  # json.loads would silently keep the last of equal keys
        raise CheckpointError("header is not valid JSON: an object repeats a key")
    return result


def _json_constant(name):
    raise CheckpointError(f"header is not valid JSON: {name} is not a JSON value")


def _json_int(text):
    # Every JSON number the format uses is a count written without a sign; "-0" would read as
    # the count 0, so it becomes the float -0.0, which no field accepts.
    return -0.0 if text == "-0" else int(text)


def _parse_buffer_table(entries, version):
    """Validate the header's buffer table; return its _Buffers and the data section's size.

    Nothing is allocated here: the caller compares the total against the file size first.
    """
    buffers = []
    data_end = 0
    for index, entry in enumerate(entries):
        buffer = _parse_buffer_entry(index, entry, _align(data_end), version)
        buffers.append(buffer)
        data_end = buffer.offset + buffer.nbytes
    return buffers, data_end


def _parse_buffer_entry(index, entry, offset, version):
    """Validate one buffer entry of a file of this format version, which the layout rule
    places at `offset`."""
    where = f"buffer {index}"
    kind = entry.get("type") if isinstance(entry, dict) else None
    if not (isinstance(kind, str) and kind in _ENTRY_FIELDS):
        raise CheckpointError(f"{where}: missing or unknown type {_preview(kind)}")
    if entry.keys() != _ENTRY_FIELDS[kind]:
        raise CheckpointError(f"{where}: fields {sorted(entry)}, expected {sorted(_ENTRY_FIELDS[kind])}")
    dtype = entry["dtype"]
    known = isinstance(dtype, str) and dtype in _STORAGE_DTYPES
    if not known or (dtype == "bfloat16" and kind != "torch.Tensor"):
        raise CheckpointError(f"{where}: unsupported dtype {_preview(dtype)} for {kind}")
    if version < _DTYPE_VERSIONS.get(dtype, 1):
        raise CheckpointError(
            f"{where}: dtype {dtype} needs format version {_DTYPE_VERSIONS[dtype]}, the file is {version}"
        )
    shape = entry["shape"]
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(type(n) is int and n >= 0 for n in shape)):
        raise CheckpointError(f"{where}: shape must be a list of at most {MAX_NDIM} non-negative integers")
    if kind == "numpy.generic" and shape:
        raise CheckpointError(f"{where}: a NumPy scalar must have shape []")
    itemsize = _STORAGE_DTYPES[dtype].itemsize
    if math.prod(n for n in shape if n) * itemsize > _MAX_ARRAY_BYTES:
        raise CheckpointError(f"{where}: shape {_preview(shape)} is too large")
    nbytes = math.prod(shape) * itemsize
    if type(entry["nbytes"]) is not int or entry["nbytes"] != nbytes:
        raise CheckpointError(
            f"{where}: nbytes {_preview(entry['nbytes'])}, expected {nbytes} for shape {_preview(shape)}"
        )
    if type(entry["offset"]) is not int or entry["offset"] != offset:
        raise CheckpointError(f"{where}: offset {_preview(entry['offset'])}, expected {offset}")
    device = entry.get("device")
    if kind == "torch.Tensor" and not (isinstance(device, str) and _DEVICE.fullmatch(device)):
        raise CheckpointError(f'{where}: device must be a string such as "cpu" or "cuda:0", got {_preview(device)}')
    return _Buffer(kind, dtype, tuple(shape), device, offset, nbytes)


def _is_scalar_node(node):
    """True for header nodes that encode None, bool, str, int or float."""
    return (
        node is None
        or isinstance(node, (bool, str))
        or (isinstance(node, dict) and len(node) == 1 and next(iter(node)) in ("int", "float"))
    )


def _decode_scalar(node, path):
    if not isinstance(node, dict):
        return node  # None, bool or str: JSON already has the right Python type
    [(tag, text)] = node.items()
    if tag == "int":
        if not (isinstance(text, str) and _INT_TEXT.fullmatch(text)):
            raise CheckpointError(f"{path}: malformed int {_preview(text)}")
        return int(text, 16)
    if not (isinstance(text, str) and _FLOAT_BITS.fullmatch(text)):
        raise CheckpointError(f"{path}: malformed float {_preview(text)}")
    return struct.unpack(">d", bytes.fromhex(text))[0]


def _device_exists(torch, device):
    if device.type == "cpu":
        return True
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    return (
        accelerator is not None
        and accelerator.type == device.type
        and (device.index or 0) < torch.accelerator.device_count()
    )


def _not_a_checkpoint_message(magic):
    message = f"not a genesis checkpoint (the file starts with {bytes(magic)!r}, expected {MAGIC!r})"
    if magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80"):
        message += "; it looks like a torch.save zip or a pickle, which genesis never unpickles"
    return message


def _preview(value, limit=60):
    """repr() of a value for a message or path, cut short: headers can be huge."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's limit on decimal conversion
        text = f"<{value.bit_length()}-bit int>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
