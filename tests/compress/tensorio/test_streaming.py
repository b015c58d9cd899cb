"""StreamingValidator: the same checks as read_header, fed chunk by chunk, plus finite floats."""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Iterable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import (
    CodecError,
    InvalidSafetensors,
    NonFiniteTensor,
    PickleRefused,
    TooLarge,
)
from compress.tensorio import (
    DEFAULT_MAX_HEADER_BYTES,
    SafetensorsHeader,
    StreamingValidator,
    read_header,
)
from tests.malformed import (
    MALFORMED_CASES,
    NONFINITE_MESSAGE,
    NONFINITE_TENSOR,
    PICKLE_CASES,
    MalformedCase,
    assemble,
    bad_element_span,
    entry,
    inf_safetensors,
    nan_safetensors,
    pickle_like_valid_safetensors,
    valid_safetensors,
)

CHUNK_SIZES = [1, 7, 4096, None]  # None: the whole file in one chunk
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64,
                torch.float8_e4m3fn, torch.float8_e5m2]
INF_DTYPES = [d for d in FLOAT_DTYPES if d != torch.float8_e4m3fn]  # e4m3fn has no Inf


def chunks(data: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]


def validate(pieces: Iterable[bytes], source: str = "model.safetensors",
             check_finite: bool = True) -> SafetensorsHeader:
    validator = StreamingValidator(source, check_finite=check_finite)
    for piece in pieces:
        validator.feed(piece)
    return validator.finish()


def test_valid_file_gives_the_same_header_as_read_header(tmp_path: Path) -> None:
    data = valid_safetensors()
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    expected = read_header(path)
    for size in CHUNK_SIZES:
        assert validate(chunks(data, size)) == expected


def test_header_is_available_once_its_bytes_arrived() -> None:
    data = valid_safetensors()
    validator = StreamingValidator("m.safetensors")
    header_end = 8 + int.from_bytes(data[:8], "little")
    validator.feed(data[: header_end - 1])
    assert validator.header is None
    validator.feed(data[header_end - 1 : header_end])
    assert validator.header is not None
    assert "embed.weight" in validator.header.tensors
    validator.feed(b"")  # empty chunks are harmless
    validator.feed(data[header_end:])
    assert validator.finish() is validator.header


def test_valid_file_starting_like_a_pickle_is_accepted() -> None:
    data = pickle_like_valid_safetensors()
    for size in CHUNK_SIZES:
        assert validate(chunks(data, size)).header_len == 640


@pytest.mark.parametrize("size", CHUNK_SIZES, ids=lambda s: f"chunk{s or 'all'}")
@pytest.mark.parametrize("case", MALFORMED_CASES + PICKLE_CASES, ids=lambda c: c.id)
def test_malformed_files_are_rejected_with_the_message(case: MalformedCase,
                                                       size: int | None) -> None:
    with pytest.raises(case.error) as info:
        validate(chunks(case.data, size), source=case.filename)
    assert case.stream_message in str(info.value)
    assert case.filename in str(info.value)


def test_stream_and_file_messages_differ_only_where_declared() -> None:
    differing = [c.id for c in MALFORMED_CASES if c.message != c.stream_message]
    assert differing == ["truncated_header"]


@pytest.mark.parametrize("case", PICKLE_CASES, ids=lambda c: c.id)
def test_pickles_are_refused_on_the_first_eight_bytes(case: MalformedCase) -> None:
    validator = StreamingValidator(case.filename)
    validator.feed(case.data[:7])  # not enough to decide
    with pytest.raises(PickleRefused):
        validator.feed(case.data[7:8])


@pytest.mark.parametrize("case_id", ["header_too_large", "invalid_json", "overlapping_tensors",
                                     "unknown_dtype", "trailing_bytes", "duplicate_tensor_key"])
def test_defects_are_refused_during_feed_not_at_finish(case_id: str) -> None:
    (case,) = [c for c in MALFORMED_CASES if c.id == case_id]
    validator = StreamingValidator(case.filename)
    with pytest.raises(InvalidSafetensors, match=re.escape(case.stream_message)):
        validator.feed(case.data)


def test_truncation_is_only_known_at_finish() -> None:
    data = valid_safetensors()[:-1]
    validator = StreamingValidator("m.safetensors")
    validator.feed(data)  # nothing wrong yet
    with pytest.raises(InvalidSafetensors, match=f"describes {len(data) + 1} bytes but only "
                                                 f"{len(data)} arrived"):
        validator.finish()


def test_trailing_bytes_in_a_later_chunk() -> None:
    data = valid_safetensors()
    validator = StreamingValidator("m.safetensors")
    validator.feed(data)
    with pytest.raises(InvalidSafetensors, match="3 trailing bytes"):
        validator.feed(b"abc")


# --- NaN and Inf ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 7, 4096, None], ids=lambda s: f"chunk{s or 'all'}")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nan_is_refused_with_the_tensor_name(dtype: torch.dtype, size: int | None) -> None:
    with pytest.raises(NonFiniteTensor) as info:
        validate(chunks(nan_safetensors(dtype), size), source="shard.safetensors")
    assert info.value.tensor_name == NONFINITE_TENSOR
    assert NONFINITE_MESSAGE in str(info.value)
    assert "shard.safetensors" in str(info.value)


@pytest.mark.parametrize("negative", [False, True], ids=["+inf", "-inf"])
@pytest.mark.parametrize("size", [1, 5, None], ids=lambda s: f"chunk{s or 'all'}")
@pytest.mark.parametrize("dtype", INF_DTYPES, ids=str)
def test_inf_is_refused_with_the_tensor_name(dtype: torch.dtype, size: int | None,
                                             negative: bool) -> None:
    with pytest.raises(NonFiniteTensor, match=NONFINITE_MESSAGE):
        validate(chunks(inf_safetensors(dtype, negative=negative), size))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nan_split_at_every_byte_of_the_element(dtype: torch.dtype) -> None:
    data = nan_safetensors(dtype)
    begin, end = bad_element_span(data)
    for cut in range(begin, end + 1):
        with pytest.raises(NonFiniteTensor, match=NONFINITE_MESSAGE):
            validate([data[:cut], data[cut:]])


def test_nan_is_refused_by_the_chunk_that_completes_it() -> None:
    data = nan_safetensors(torch.float64)
    begin, end = bad_element_span(data)
    validator = StreamingValidator("m.safetensors")
    validator.feed(data[: begin + 3])
    validator.feed(data[begin + 3 : end - 1])  # still one byte short of the element
    with pytest.raises(NonFiniteTensor):
        validator.feed(data[end - 1 : end])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_check_finite_false_accepts_nan(dtype: torch.dtype) -> None:
    data = nan_safetensors(dtype)
    header = validate(chunks(data, 7), check_finite=False)
    assert header.file_size == len(data)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_finite_extremes_and_nan_bit_patterns_in_integers_pass(dtype: torch.dtype) -> None:
    info = torch.finfo(dtype)
    tensors = {
        "extremes": torch.tensor([info.max, info.min, info.tiny, -0.0, 0.0],
                                 dtype=torch.float64).to(dtype),
        "ints": torch.full((5,), -1, dtype=torch.int32),  # 0xFFFFFFFF: a NaN if read as F32
        "bytes": torch.full((3,), 0xFF, dtype=torch.uint8),  # a NaN if read as F8
        "empty": torch.zeros(0, dtype=dtype),
    }
    data = safetensors.torch.save(tensors)
    for size in [1, 3, None]:
        assert set(validate(chunks(data, size)).tensors) == set(tensors)


def test_errors_are_codec_errors() -> None:
    for case in MALFORMED_CASES[:3]:
        with pytest.raises(CodecError):
            validate([case.data])


# --- property: any chunking of a file gives the same verdict ------------------------------------


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


VALID = valid_safetensors()
NAN_BF16 = nan_safetensors(torch.bfloat16)
TRUNCATED = VALID[:-3]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_chunkings_validate_identically(data: st.DataObject) -> None:
    expected = validate([VALID])
    assert validate(data.draw(chunked(VALID))) == expected
    with pytest.raises(NonFiniteTensor, match=NONFINITE_MESSAGE):
        validate(data.draw(chunked(NAN_BF16)))
    with pytest.raises(InvalidSafetensors, match="file is truncated"):
        validate(data.draw(chunked(TRUNCATED)))


# --- hostile headers: refused as soon as what they declare is known -----------------------------


@pytest.mark.parametrize(("cap", "declared"), [(DEFAULT_MAX_HEADER_BYTES, None), (1000, 1001)])
def test_header_over_the_cap_is_refused_on_its_8_byte_prefix(cap: int,
                                                              declared: int | None) -> None:
    length = DEFAULT_MAX_HEADER_BYTES + 1 if declared is None else declared
    validator = (StreamingValidator("m.safetensors") if declared is None
                 else StreamingValidator("m.safetensors", max_header_bytes=cap))
    validator.feed(struct.pack("<Q", length)[:7])  # not yet known
    with pytest.raises(TooLarge, match=f"the header is {length} bytes, over the {cap}-byte"):
        validator.feed(struct.pack("<Q", length)[7:])  # the 8th byte: refused at once


def test_header_at_the_cap_is_accepted() -> None:
    header_len = int.from_bytes(VALID[:8], "little")
    validator = StreamingValidator("m.safetensors", max_header_bytes=header_len)
    validator.feed(VALID)
    assert validator.finish().header_len == header_len


def test_header_declaring_2_to_the_40_bytes_is_refused_before_the_data() -> None:
    data = assemble({"huge": entry("F32", [2**38], 0, 2**40)})  # the header, no data
    validator = StreamingValidator("m.safetensors", max_file_bytes=50 * 10**9)
    with pytest.raises(TooLarge, match=f"its header describes a {len(data) + 2**40}-byte file, "
                       "over the 50000000000-byte limit for this file"):
        validator.feed(data)
    assert validator.header is None


def test_file_size_limit_is_exact() -> None:
    StreamingValidator("m", max_file_bytes=len(VALID)).feed(VALID)
    with pytest.raises(TooLarge, match=f"describes a {len(VALID)}-byte file"):
        StreamingValidator("m", max_file_bytes=len(VALID) - 1).feed(VALID)


def test_header_length_alone_over_the_file_limit_is_refused_on_the_prefix() -> None:
    validator = StreamingValidator("m", max_file_bytes=100)
    with pytest.raises(TooLarge, match="its header alone makes it a 508-byte file, over the "
                       "100-byte limit"):
        validator.feed(struct.pack("<Q", 500))


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_header_nested_100000_deep_is_refused(size: int | None) -> None:
    data = assemble('{"a":' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InvalidSafetensors, match=r"header is not valid JSON \(nested 100001 "
                       r"deep, over the limit of 64\)"):
        validate(chunks(data, 65536 if size == 1 else size))


def test_nan_in_a_header_is_refused() -> None:
    data = assemble('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                    '"__metadata__":{"x":NaN}}', b"\0" * 4)
    with pytest.raises(InvalidSafetensors, match="NaN is not a JSON value"):
        validate([data])
