"""The shared corpus of checkpoint files that both readers, genesis.load (Python) and the C++
API's decode/load_file, must judge the same way: every file under invalid/ is rejected by both,
every file under valid/ is accepted by both (the C++ reader may answer "valid but holds
something C++ does not represent", never "invalid").

Each file is crafted with a correct header checksum where the point is a rule behind it, so
the readers' validators, not only their checksums, are exercised. Run from the repository root
to rewrite tests/data/checkpoint_corpus/ after a deliberate change; tests/test_checkpoint_parity.py
checks that the committed files are what this script makes.
"""

import io
import json
import pathlib
import struct
import sys
import zlib

import numpy as np

PREAMBLE = struct.Struct("<8sIIQ")
MAGIC = b"\x93GENESIS"
CORPUS = pathlib.Path(__file__).resolve().parent / "checkpoint_corpus"


def saved(obj):
    import genesis

    stream = io.BytesIO()
    genesis.save(obj, stream)
    return stream.getvalue()


def split(blob):
    """(header text, data section + checksum table) of a checkpoint."""
    header_nbytes = PREAMBLE.unpack_from(blob)[3]
    data_start = -(-(PREAMBLE.size + header_nbytes) // 64) * 64
    return blob[PREAMBLE.size : PREAMBLE.size + header_nbytes], blob[data_start:]


def build(header, rest, version=1, magic=MAGIC):
    """A checkpoint with this header (bytes) and data section, and a correct header checksum."""
    blob = PREAMBLE.pack(magic, version, zlib.crc32(header), len(header)) + header
    return blob + bytes(-len(blob) % 64) + rest


def version_of(blob):
    return PREAMBLE.unpack_from(blob)[1]


def edit(blob, old, new):
    """`blob` with the first `old` of its header replaced by `new` (both bytes), same version."""
    header, rest = split(blob)
    assert old in header, (old, header)
    return build(header.replace(old, new, 1), rest, version_of(blob))


def header_only(text):
    return build(text.encode() if isinstance(text, str) else text, b"")


def with_byte(blob, position, value):
    blob = bytearray(blob)
    blob[position] = value
    return bytes(blob)


def recheck(blob):
    """Recompute the buffer checksums of a checkpoint whose data was edited on purpose."""
    header, rest = split(blob)
    entries = json.loads(header)["buffers"]
    crcs = [zlib.crc32(rest[e["offset"] : e["offset"] + e["nbytes"]]) for e in entries]
    return blob[: len(blob) - 4 * len(entries)] + struct.pack(f"<{len(crcs)}I", *crcs)


def corpus():
    """{relative path: file bytes}."""
    two = saved({"a": np.arange(2, dtype=np.float32), "b": np.array([True, False])})
    floats = saved({"x": np.arange(3, dtype=np.float64)})
    scalars = saved({"k": [1, 2.5, None, True, "s"]})
    nothing = saved(None)
    torch_entry = (
        '{"buffers": [{"type": "torch.Tensor", "dtype": "float32", "shape": [1], "device": "cpu", '
        '"offset": 0, "nbytes": 4}], "root": {"array": 0}}'
    )
    one_float = struct.pack("<f", 1.0) + struct.pack("<I", zlib.crc32(struct.pack("<f", 1.0)))
    header_end = PREAMBLE.size + PREAMBLE.unpack_from(floats)[3]

    import collections

    import torch

    import genesis

    ordered = collections.OrderedDict(w=np.ones(2, np.float32))
    ordered._metadata = collections.OrderedDict([("", {"version": 2})])
    version_2 = saved(
        {
            "od": ordered,
            "size": torch.Size([2, 3]),
            "p": torch.nn.Parameter(torch.arange(3.0)),
            "ip": torch.nn.Parameter(torch.arange(2), requires_grad=False),
            "gp": genesis.nn.Parameter(np.arange(2.0)),
            "plain": collections.OrderedDict(a=1),
        }
    )

    version_3 = saved(
        {
            "c": np.array([1 + 2j, complex(-0.0, -3)], np.complex64),
            "z": torch.tensor([[1 - 1j], [0.5j]], dtype=torch.complex128),
            "s": np.complex128(complex(2, float("inf"))),
            "p": torch.nn.Parameter(torch.ones(2, dtype=torch.complex64)),
        }
    )

    def nested_ordered_dicts(levels):
        value = None
        for _ in range(levels):
            value = collections.OrderedDict(k=value)
        return value

    def deep(levels):
        return '{"buffers": [], "root": ' + '{"list": [' * levels + "]}" * levels + "}"

    invalid = {
        # the container
        "too_short": MAGIC,
        "bad_magic": b"\x93NUMPY!!" + nothing[8:],
        "pickle": b"\x80\x04\x95" + nothing[3:],
        "version_0": build(split(nothing)[0], b"", version=0),
        "version_99": build(split(nothing)[0], b"", version=99),
        "header_length_past_the_end": nothing[:16] + struct.pack("<Q", 2**64 - 1) + nothing[24:],
        "header_checksum": with_byte(nothing, 12, nothing[12] ^ 1),
        "truncated": floats[:-1],
        "trailing_byte": floats + b"\0",
        "buffer_checksum": with_byte(floats, len(floats) - 1, floats[-1] ^ 1),
        "nonzero_padding_after_header": with_byte(floats, header_end, 1),
        "nonzero_padding_between_buffers": with_byte(two, len(two) - len(split(two)[1]) + 8, 1),
        "nonzero_padding_without_buffers": with_byte(nothing, len(nothing) - 1, 1),
        "bool_byte_2": recheck(with_byte(two, len(two) - len(split(two)[1]) + 64, 2)),
        # JSON and UTF-8
        "json_syntax": header_only("{nope"),
        "json_trailing_comma": header_only('{"buffers": [], "root": null,}'),
        "json_nan": header_only('{"buffers": [], "root": NaN}'),
        "json_infinity": header_only('{"buffers": [], "root": -Infinity}'),
        "json_leading_zero": edit(two, b'"offset":64', b'"offset":064'),
        "json_plus_sign": edit(two, b'"offset":64', b'"offset":+64'),
        "json_bare_fraction": edit(two, b'"offset":64', b'"offset":64.'),
        "json_repeated_top_level_key": header_only('{"buffers": [], "buffers": [], "root": null}'),
        "json_repeated_entry_key": edit(floats, b'"dtype":"float64"', b'"dtype":"float32","dtype":"float64"'),
        "json_repeated_tag_key": header_only('{"buffers": [], "root": {"int": "0x1", "int": "0x2"}}'),
        "json_control_character": header_only('{"buffers": [], "root": "a\tb"}'),
        "json_bad_escape": header_only('{"buffers": [], "root": "\\q"}'),
        "json_too_deep": header_only("[" * 5000 + "]" * 5000),
        "utf8_invalid_byte": header_only(b'{"buffers": [], "root": "\xff"}'),
        "utf8_encoded_surrogate": header_only(b'{"buffers": [], "root": "\xed\xa0\x80"}'),
        "utf8_overlong": header_only(b'{"buffers": [], "root": "\xc0\xaf"}'),
        "utf8_truncated": header_only(b'{"buffers": [], "root": "\xe2\x82"}'),
        "utf8_bom": header_only(b'\xef\xbb\xbf{"buffers": [], "root": null}'),
        # header schema
        "top_level_list": header_only("[]"),
        "missing_root": header_only('{"buffers": []}'),
        "extra_top_level_key": header_only('{"buffers": [], "root": null, "x": 1}'),
        "buffers_not_a_list": header_only('{"buffers": {}, "root": null}'),
        "entry_unknown_type": edit(floats, b"numpy.ndarray", b"pickle"),
        "entry_extra_field": edit(floats, b'"offset"', b'"exec":1,"offset"'),
        "entry_missing_field": edit(floats, b',"nbytes":24', b""),
        "entry_device_on_numpy": edit(floats, b'"offset"', b'"device":"cpu","offset"'),
        "entry_torch_without_device": build(torch_entry.replace('"device": "cpu", ', "").encode(), one_float),
        "entry_unknown_dtype": edit(floats, b'"float64"', b'"complex256"'),
        "entry_numpy_bfloat16": edit(floats, b'"float64"', b'"bfloat16"'),
        "entry_negative_dimension": edit(floats, b'"shape":[3]', b'"shape":[-3]'),
        "entry_minus_zero_dimension": edit(floats, b'"shape":[3]', b'"shape":[-0]'),
        "entry_bool_dimension": edit(floats, b'"shape":[3]', b'"shape":[true]'),
        "entry_float_dimension": edit(floats, b'"shape":[3]', b'"shape":[3.0]'),
        "entry_65_dimensions": edit(floats, b'"shape":[3]', ('"shape":[3' + ",1" * 64 + "]").encode()),
        "entry_too_large": edit(floats, b'"shape":[3]', b'"shape":[0,1152921504606846976]'),
        "entry_wrong_nbytes": edit(floats, b'"nbytes":24', b'"nbytes":23'),
        "entry_wrong_offset": edit(two, b'"offset":64', b'"offset":16'),
        "entry_numpy_scalar_with_shape": edit(floats, b"numpy.ndarray", b"numpy.generic"),
        "entry_device_leading_zero": build(torch_entry.replace('"cpu"', '"cuda:01"').encode(), one_float),
        "entry_device_not_a_string": build(torch_entry.replace('"cpu"', "0").encode(), one_float),
        "entry_device_empty": build(torch_entry.replace('"cpu"', '""').encode(), one_float),
        # values
        "value_json_number": header_only('{"buffers": [], "root": 1}'),
        "value_json_list": header_only('{"buffers": [], "root": []}'),
        "value_unknown_tag": edit(scalars, b'"list"', b'"set"'),
        "value_two_keys": header_only('{"buffers": [], "root": {"list": [], "tuple": []}}'),
        "value_int_uppercase": edit(scalars, b'"0x1"', b'"0X1"'),
        "value_int_empty_digits": edit(scalars, b'"0x1"', b'"0x"'),
        "value_int_decimal": edit(scalars, b'"0x1"', b'"1"'),
        "value_int_not_a_string": edit(scalars, b'"0x1"', b"1"),
        "value_float_15_digits": edit(scalars, b'"4004000000000000"', b'"400400000000000"'),
        "value_float_uppercase": edit(scalars, b'"4004000000000000"', b'"4004000000000A00"'),
        "value_list_payload_not_a_list": header_only('{"buffers": [], "root": {"list": {}}}'),
        "value_dict_pair_of_three": header_only('{"buffers": [], "root": {"dict": [["a", null, null]]}}'),
        "value_dict_list_key": header_only('{"buffers": [], "root": {"dict": [[{"list": []}, null]]}}'),
        "value_dict_repeated_key": header_only('{"buffers": [], "root": {"dict": [["a", null], ["a", 1]]}}'),
        "value_dict_int_equals_float": header_only(
            '{"buffers": [], "root": {"dict": [[{"int": "0x1"}, null], [{"float": "3ff0000000000000"}, null]]}}'
        ),
        "value_dict_true_equals_one": header_only(
            '{"buffers": [], "root": {"dict": [[true, null], [{"int": "0x01"}, null]]}}'
        ),
        "value_dict_zero_equals_minus_zero": header_only(
            '{"buffers": [], "root": {"dict": [[{"int": "-0x0"}, null], [{"float": "8000000000000000"}, null]]}}'
        ),
        "value_dict_big_int_equals_float": header_only(
            '{"buffers": [], "root": {"dict": [[{"int": "0x10000000000000000"}, null], '
            '[{"float": "43f0000000000000"}, null]]}}'
        ),
        "value_dict_escaped_key_repeated": header_only('{"buffers": [], "root": {"dict": [["A", 1], ["\\u0041", 2]]}}'),
        "value_nested_101": header_only(deep(101)),
        "array_reused": edit(two, b'{"array":1}', b'{"array":0}'),
        "array_out_of_order": edit(two, b'{"array":0}', b'{"array":1}'),
        "array_unused": edit(two, b'{"array":1}', b"null"),
        "array_out_of_range": header_only('{"buffers": [], "root": {"array": 0}}'),
        "array_index_bool": header_only('{"buffers": [], "root": {"array": false}}'),
        # version 2 types
        "version_1_with_a_version_2_tag": with_byte(version_2, 8, 1),
        "ordered_dict_one_item": edit(
            version_2, b'{"ordered_dict":[[["a",{"int":"0x1"}]],null]}', b'{"ordered_dict":[[["a",{"int":"0x1"}]]]}'
        ),
        "ordered_dict_items_not_a_list": edit(
            version_2, b'{"ordered_dict":[[["a",{"int":"0x1"}]],null]}', b'{"ordered_dict":[{},null]}'
        ),
        "ordered_dict_repeated_key": edit(
            version_2, b'[["a",{"int":"0x1"}]],null]', b'[["a",{"int":"0x1"}],["a",null]],null]'
        ),
        "torch_size_float_item": edit(version_2, b'{"torch.Size":[{"int":"0x2"}', b'{"torch.Size":[{"float":"0"}'),
        "torch_size_beyond_64_bits": edit(
            version_2, b'{"torch.Size":[{"int":"0x2"}', b'{"torch.Size":[{"int":"0x10000000000000000"}'
        ),
        "torch_size_not_a_list": edit(
            version_2, b'{"torch.Size":[{"int":"0x2"},{"int":"0x3"}]}', b'{"torch.Size":{"int":"0x2"}}'
        ),
        "parameter_int_requires_grad": edit(version_2, b'{"array":2},false]', b'{"array":2},true]'),
        "parameter_requires_grad_not_bool": edit(version_2, b'{"array":2},false]', b'{"array":2},0]'),
        "parameter_on_a_numpy_buffer": edit(
            version_2,
            b'{"type":"torch.Tensor","dtype":"float32","shape":[3],"device":"cpu"',
            b'{"type":"numpy.ndarray","dtype":"float32","shape":[3]',
        ),
        "genesis_parameter_on_a_torch_buffer": edit(
            version_2,
            b'{"type":"numpy.ndarray","dtype":"float64","shape":[2]',
            b'{"type":"torch.Tensor","dtype":"float64","shape":[2],"device":"cpu"',
        ),
        "genesis_parameter_not_an_array": edit(
            version_2, b'{"genesis.nn.Parameter":{"array":3}}', b'{"genesis.nn.Parameter":[{"array":3}]}'
        ),
        # version 3 dtypes
        "version_2_with_a_version_3_dtype": with_byte(version_3, 8, 2),
        # three complex64 take the 24 bytes of three float64: only the version is wrong
        "version_1_with_a_version_3_dtype": edit(floats, b'"float64"', b'"complex64"'),
    }
    valid = {
        "everything": saved(
            {
                "state": {0: {"step": 3.0, "m": np.arange(3, dtype=np.float32)}},
                2**70: "big key",
                -1.5: (None, True, "h\u00e9 \ud800 \U0001f600"),
                "b": np.array([True]),
                "e": np.zeros((0, 4), np.int16),
                "s": np.float16(2),
            }
        ),
        "floats_only": floats,
        "version_2_types": version_2,
        "version_3_complex": version_3,
        "nothing": nothing,
        "nested_100": header_only(deep(100)),
        "nested_100_ordered_dicts": saved(nested_ordered_dicts(100)),
        "torch_tensor_on_an_absent_device": build(torch_entry.replace('"cpu"', '"cuda:7"').encode(), one_float),
        "torch_tensor_on_an_unknown_device_type": build(
            torch_entry.replace('"cpu"', '"banana_2:0"').encode(), one_float
        ),
        "json_whitespace_and_escapes": header_only(
            ' \r\n\t{ "root" : { "list" : [ "\\u0041\\/\\"\\\\\\b\\f\\n\\r\\t" , "\\ud800\\u0041", "\\udc00\\ud800" ] } ,'
            ' "buffers" : [ ] } \n'
        ),
        "int_with_leading_zeros_and_minus_zero": header_only(
            '{"buffers": [], "root": {"list": [{"int": "0x0001"}, {"int": "-0x0"}]}}'
        ),
        "dict_nan_keys_are_distinct": header_only(
            '{"buffers": [], "root": {"dict": [[{"float": "7ff8000000000000"}, null], [{"float": "7ff8000000000000"}, null]]}}'
        ),
    }
    # An empty array whose other dimension is as large as the size rule allows (float64: 2^60 - 1).
    empty = edit(
        floats, b'"shape":[3],"offset":0,"nbytes":24', b'"shape":[0,1152921504606846975],"offset":0,"nbytes":0'
    )
    valid["empty_with_a_huge_dimension"] = empty[: len(empty) - len(split(empty)[1])] + struct.pack(
        "<I", zlib.crc32(b"")
    )
    files = {f"invalid/{name}.genesis": blob for name, blob in invalid.items()}
    files.update({f"valid/{name}.genesis": blob for name, blob in valid.items()})
    return files


def main():
    for kind in ("invalid", "valid"):
        folder = CORPUS / kind
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.genesis"):
            stale.unlink()
    for name, blob in corpus().items():
        (CORPUS / name).write_bytes(blob)
    print(f"wrote {len(corpus())} files under {CORPUS}", file=sys.stderr)


if __name__ == "__main__":
    main()
