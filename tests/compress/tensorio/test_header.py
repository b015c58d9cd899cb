"""Header parsing and validation: what the reference safetensors library rejects, we reject."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import InvalidSafetensors, PickleRefused, TooLarge
from compress.tensorio import (
    DEFAULT_MAX_HEADER_BYTES,
    MAX_HEADER_BYTES,
    SAFETENSORS_DTYPES,
    TORCH_DTYPES,
    describe_pickle,
    header_from_dict,
    header_to_dict,
    read_header,
)
from compress.tensorio.header import DTYPE_BYTES, parse_header_json, parse_length_prefix
from tests.compress.tensorio.helpers import write
from tests.malformed import (
    MALFORMED_CASES,
    PICKLE_CASES,
    VALID_METADATA,
    MalformedCase,
    assemble,
    entry,
    pickle_like_valid_safetensors,
    valid_safetensors,
    valid_tensors,
)

ALL_CASES = MALFORMED_CASES + PICKLE_CASES


def reference_load(data: bytes) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(data)


def raw_header(data: bytes) -> dict[str, object]:
    (n,) = struct.unpack("<Q", data[:8])
    parsed: dict[str, object] = json.loads(data[8 : 8 + n])
    return parsed


# --- the valid file -------------------------------------------------------------------------


def test_valid_file_header_matches_what_the_reference_wrote(tmp_path: Path) -> None:
    data = valid_safetensors()
    header = read_header(write(tmp_path, data))
    raw = raw_header(data)

    assert header.metadata == VALID_METADATA
    assert header.header_len == struct.unpack("<Q", data[:8])[0]
    assert header.file_size == len(data)
    assert header.data_start + header.data_len == len(data)
    tensors = valid_tensors()
    assert set(header.tensors) == set(tensors)
    for name, tensor in tensors.items():
        got = header.tensors[name]
        assert got.torch_dtype == tensor.dtype
        assert got.shape == tuple(tensor.shape)
        assert got.numel == tensor.numel()
        assert got.nbytes == tensor.numel() * tensor.element_size()
        assert [got.start, got.end] == raw[name]["data_offsets"]  # type: ignore[index]
    starts = [e.start for e in header.tensors.values()]
    assert starts == sorted(starts)  # data order


def test_header_dict_round_trip_is_json_ready(tmp_path: Path) -> None:
    header = read_header(write(tmp_path, valid_safetensors()))
    as_dict = json.loads(json.dumps(header_to_dict(header)))
    back = header_from_dict(as_dict)
    assert back == header
    assert list(back.tensors) == list(header.tensors)
    assert as_dict["tensors"]["embed.weight"] == {
        "dtype": "F32", "shape": [2, 3],
        "data_offsets": [header.tensors["embed.weight"].start,
                         header.tensors["embed.weight"].end],
    }


@pytest.mark.parametrize("dtype", sorted(TORCH_DTYPES.values(), key=str))
def test_every_dtype_saved_by_the_reference_is_read(tmp_path: Path, dtype: torch.dtype) -> None:
    tensor = torch.zeros(3, 2).to(dtype)
    header = read_header(write(tmp_path, safetensors.torch.save({"t": tensor})))
    entry_ = header.tensors["t"]
    assert entry_.dtype == SAFETENSORS_DTYPES[dtype]
    assert DTYPE_BYTES[entry_.dtype] == tensor.element_size()
    assert entry_.nbytes == 6 * tensor.element_size()


@pytest.mark.parametrize(
    ("header", "data"),
    [
        pytest.param({}, b"", id="no_tensors"),
        pytest.param({"__metadata__": None, "a": entry("F32", [1], 0, 4)}, b"\0" * 4,
                     id="metadata_null"),
        pytest.param({"s": entry("F64", [], 0, 8)}, b"\0" * 8, id="scalar"),
        pytest.param({"z1": entry("F32", [0], 0, 0), "z2": entry("BF16", [3, 0], 0, 0),
                      "a": entry("F32", [1], 0, 4), "z3": entry("I8", [0], 4, 4)},
                     b"\0" * 4, id="empty_tensors_sharing_offsets"),
        pytest.param('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}      ', b"\x07",
                     id="space_padding"),
        pytest.param('{"\\u00e9\\ud83d\\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
                     b"\x07", id="escaped_non_ascii_name"),
        pytest.param({"__metadata__": {"é": "ü"}, "w": entry("BOOL", [2], 0, 2)}, b"\1\0",
                     id="non_ascii_metadata"),
    ],
)
def test_edge_cases_both_accept(tmp_path: Path, header: dict[str, object] | str,
                                data: bytes) -> None:
    blob = assemble(header, data)
    reference = reference_load(blob)
    ours = read_header(write(tmp_path, blob))
    assert set(ours.tensors) == set(reference)
    for name, tensor in reference.items():
        assert ours.tensors[name].shape == tuple(tensor.shape)
        assert ours.tensors[name].torch_dtype == tensor.dtype


def test_valid_file_starting_like_a_pickle_is_accepted(tmp_path: Path) -> None:
    # b"\x80\x02" + six zero bytes is the length prefix of a 640-byte header.
    data = pickle_like_valid_safetensors()
    assert describe_pickle(data[:8]) is not None  # it really does look like one
    assert torch.equal(reference_load(data)["w"], torch.tensor([1.5, -2.0]))
    header = read_header(write(tmp_path, data))
    assert header.header_len == 640
    assert header.tensors["w"].shape == (2,)


# --- malformed files --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_read_header_rejects_with_message(tmp_path: Path, case: MalformedCase) -> None:
    with pytest.raises(case.error) as info:
        read_header(write(tmp_path, case.data, case.filename))
    assert case.message in str(info.value)
    assert info.value.detail == str(info.value)
    assert case.filename in str(info.value)  # the message says which file


@pytest.mark.parametrize("case", [c for c in ALL_CASES if c.reference_rejects],
                         ids=lambda c: c.id)
def test_reference_library_rejects_too(tmp_path: Path, case: MalformedCase) -> None:
    with pytest.raises(safetensors.SafetensorError):
        reference_load(case.data)
    path = write(tmp_path, case.data, case.filename)
    with pytest.raises(safetensors.SafetensorError):
        safetensors.safe_open(str(path), framework="pt")


def test_duplicate_keys_are_the_one_case_the_reference_accepts(tmp_path: Path) -> None:
    accepted = [c for c in ALL_CASES if not c.reference_rejects]
    assert [c.id for c in accepted] == ["duplicate_tensor_key"]
    case = accepted[0]
    # The reference silently keeps one of the two entries...
    assert list(reference_load(case.data)) == ["a"]
    with safetensors.safe_open(str(write(tmp_path, case.data)), framework="pt") as f:
        assert list(f.keys()) == ["a"]
    # ...deltahub refuses the file, whichever way it is read.
    with pytest.raises(InvalidSafetensors, match="has the key 'a' twice"):
        read_header(tmp_path / "model.safetensors")


def test_duplicate_metadata_keys_are_refused(tmp_path: Path) -> None:
    blob = assemble('{"__metadata__":{"format":"pt","format":"np"}}')
    assert reference_load(blob) == {}  # accepted by the reference
    with pytest.raises(InvalidSafetensors, match="has the key 'format' twice"):
        read_header(write(tmp_path, blob))


def test_catalogue_covers_every_defect() -> None:
    ids = {c.id for c in MALFORMED_CASES}
    assert len(ids) == len(MALFORMED_CASES)  # unique ids
    required = {
        "header_too_large", "truncated_header", "truncated_data", "header_not_object",
        "invalid_utf8", "invalid_json", "offsets_begin_after_end", "overlapping_tensors",
        "hole_between_tensors", "trailing_bytes", "size_mismatch", "unknown_dtype",
        "negative_dim", "bool_dim", "metadata_not_string", "duplicate_tensor_key",
    }
    assert required <= ids
    assert all(c.error is InvalidSafetensors for c in MALFORMED_CASES)
    assert all(c.error is PickleRefused for c in PICKLE_CASES)


# --- the length prefix and the JSON, directly -------------------------------------------------


def test_parse_length_prefix_bounds() -> None:
    assert parse_length_prefix(struct.pack("<Q", 0), "f") == 0
    # The format allows up to MAX_HEADER_BYTES; our default cap is lower (TooLarge below).
    assert parse_length_prefix(struct.pack("<Q", MAX_HEADER_BYTES), "f",
                               max_header_bytes=MAX_HEADER_BYTES) == MAX_HEADER_BYTES
    with pytest.raises(InvalidSafetensors, match="exceeds"):
        parse_length_prefix(struct.pack("<Q", MAX_HEADER_BYTES + 1), "f")
    with pytest.raises(InvalidSafetensors, match="exceeds"):
        parse_length_prefix(b"\xff" * 8, "f")
    with pytest.raises(InvalidSafetensors, match="file is 7 bytes"):
        parse_length_prefix(b"\x01" * 7, "f")
    # b"\x80\x02" and b"\x80\x05" followed by zeros are plausible lengths, not pickles.
    assert parse_length_prefix(struct.pack("<Q", 640), "f") == 640
    assert parse_length_prefix(struct.pack("<Q", 0x0580 + 65536 * 7), "f") == 0x0580 + 65536 * 7
    with pytest.raises(PickleRefused):
        parse_length_prefix(b"\x80\x02", "f")


def test_parse_header_json_names_the_source() -> None:
    with pytest.raises(InvalidSafetensors, match=r"^shard-3\.safetensors: header is not valid"):
        parse_header_json(b"{", 1, "shard-3.safetensors")


@pytest.mark.parametrize("header_len", [0, 1])
def test_tiny_header_lengths(tmp_path: Path, header_len: int) -> None:
    blob = struct.pack("<Q", header_len) + b"{" * header_len
    with pytest.raises(safetensors.SafetensorError):
        reference_load(blob)
    with pytest.raises(InvalidSafetensors):
        read_header(write(tmp_path, blob))


# --- property: whatever the reference writes, we read the same layout --------------------------

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8,
           torch.int32, torch.int64, torch.uint8, torch.bool, torch.float8_e4m3fn]

tensor_specs = st.dictionaries(
    keys=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                 min_size=1, max_size=12).filter(lambda s: s != "__metadata__"),
    values=st.tuples(st.sampled_from(_DTYPES),
                     st.lists(st.integers(0, 4), min_size=0, max_size=3)),
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(specs=tensor_specs,
       # min_size=1: safetensors 0.8 writes `{},"__metadata__":{}}` (invalid JSON, which
       # it then refuses to read itself) for no tensors with empty metadata.
       metadata=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                            min_size=1, max_size=3))
def test_reference_files_parse_to_their_own_layout(
        specs: dict[str, tuple[torch.dtype, list[int]]], metadata: dict[str, str] | None) -> None:
    tensors = {name: torch.zeros(shape).to(dtype) for name, (dtype, shape) in specs.items()}
    blob = safetensors.torch.save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = parse_header_json(blob[8 : 8 + n], n, "prop.safetensors")
    raw = raw_header(blob)
    assert header.metadata == (metadata or {})
    assert header.file_size == len(blob)
    assert set(header.tensors) == set(tensors)
    for name, tensor in tensors.items():
        got = header.tensors[name]
        assert (got.torch_dtype, got.shape) == (tensor.dtype, tuple(tensor.shape))
        assert [got.start, got.end] == raw[name]["data_offsets"]  # type: ignore[index]


# --- hostile headers: nesting, non-finite numbers, size -----------------------------------------


def deep_header(depth: int) -> str:
    """A header whose one entry nests `depth` arrays (so the JSON is `depth` + 1 deep)."""
    return '{"a":' + "[" * depth + "]" * depth + "}"


def test_header_nested_100000_deep_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidSafetensors, match=r"^model\.safetensors: header is not valid "
                       r"JSON \(nested 100001 deep, over the limit of 64\)$"):
        read_header(write(tmp_path, assemble(deep_header(100_000))))


def test_header_depth_limit_is_a_parameter() -> None:
    header = deep_header(3).encode()
    with pytest.raises(InvalidSafetensors, match="nested 4 deep, over the limit of 3"):
        parse_header_json(header, len(header), "f", max_json_depth=3)
    with pytest.raises(InvalidSafetensors, match="must have exactly dtype"):  # parsed
        parse_header_json(header, len(header), "f", max_json_depth=4)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_in_a_header_are_refused(tmp_path: Path, value: str) -> None:
    data = assemble('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                    f'"__metadata__":{{"x":{value}}}}}', b"\0" * 4)
    with pytest.raises(InvalidSafetensors, match=r"header is not valid JSON \(.*(not a JSON "
                       r"value|overflows a 64-bit float)"):
        read_header(write(tmp_path, data))


def test_header_over_the_cap_is_too_large_from_its_prefix(tmp_path: Path) -> None:
    assert parse_length_prefix(struct.pack("<Q", DEFAULT_MAX_HEADER_BYTES), "f") == (
        DEFAULT_MAX_HEADER_BYTES)
    with pytest.raises(TooLarge, match=f"the header is {DEFAULT_MAX_HEADER_BYTES + 1} bytes, "
                       f"over the {DEFAULT_MAX_HEADER_BYTES}-byte limit for headers"):
        parse_length_prefix(struct.pack("<Q", DEFAULT_MAX_HEADER_BYTES + 1), "f")
    # A header longer than the whole file is no header at all, whatever the cap.
    path = write(tmp_path, struct.pack("<Q", DEFAULT_MAX_HEADER_BYTES + 1))
    with pytest.raises(InvalidSafetensors, match="not a safetensors file: its header length "
                       f"{DEFAULT_MAX_HEADER_BYTES + 1} runs past the end of the 8-byte file"):
        read_header(path)
    # A real-looking header over the cap: refused from its prefix and first byte.
    path = write(tmp_path, struct.pack("<Q", DEFAULT_MAX_HEADER_BYTES + 1) + b"{" * 100)
    with pytest.raises(TooLarge, match="split the file into shards"):
        parse_length_prefix(path.read_bytes()[:9], "f")
    valid = valid_safetensors()
    header_len = struct.unpack("<Q", valid[:8])[0]
    with pytest.raises(TooLarge, match=f"the header is {header_len} bytes, over the 64-byte"):
        read_header(write(tmp_path, valid), max_header_bytes=64)
    assert read_header(write(tmp_path, valid), max_header_bytes=header_len).file_size == len(
        valid)


# --- length prefixes no safetensors file has: "not safetensors", never "too large" --------------


@pytest.mark.parametrize("rest", [b"\0\0\0\0", b"\0\0\0\0" + b"x" * 100, b"\0\0\0\0{"])
def test_a_zip_whose_length_reads_under_the_format_limit_is_refused_as_a_zip(
        tmp_path: Path, rest: bytes) -> None:
    # b"PK\x03\x04\0\0\0\0" reads as a 67,324,752-byte header: under the format's limit,
    # over the cap. It was refused as too large (413) instead of as the archive it is.
    data = b"PK\x03\x04" + rest
    with pytest.raises(PickleRefused, match="is a zip archive"):
        parse_length_prefix(data[:9], "model.safetensors")
    with pytest.raises(PickleRefused, match="is a zip archive"):
        read_header(write(tmp_path, data))


def test_an_absurd_length_is_not_safetensors() -> None:
    over_cap = struct.pack("<Q", DEFAULT_MAX_HEADER_BYTES + 1)
    with pytest.raises(InvalidSafetensors, match=re.escape(
            "not a safetensors file: the 8388609-byte header it announces does not start "
            "with '{'")):
        parse_length_prefix(over_cap + b"\x00", "f")
    with pytest.raises(InvalidSafetensors, match="runs past the end of the 4000-byte file"):
        parse_length_prefix(struct.pack("<Q", 5000) + b"{", "f", file_size=4000)
    # Under the cap too: garbage after a plausible length fails on its first byte.
    with pytest.raises(InvalidSafetensors, match=re.escape("does not start with '{'")):
        parse_length_prefix(struct.pack("<Q", 100) + b"[", "f")
    assert parse_length_prefix(struct.pack("<Q", 100) + b"{", "f", file_size=108) == 100
