"""A catalogue of malformed safetensors files, shared by the codec and the HTTP tests.

Every case is deterministic bytes plus a fragment of the message deltahub answers with,
so a test can hand the same bytes to `read_header`, to `StreamingValidator` or to an
upload endpoint and check that the error says what went wrong:

    for case in MALFORMED_CASES:  # one per defect; all InvalidSafetensors
        case.data            # the file's bytes (every case is under 400 bytes)
        case.message         # in the message of read_header (a file on disk)
        case.stream_message  # in the message of StreamingValidator (the upload path)
        case.error           # the CodecError subclass raised
        case.reference_rejects  # False only for duplicate keys: the reference library
                                # keeps one of them, deltahub refuses the file

`PICKLE_CASES` are real pickles (PickleRefused), meant to be uploaded as `case.filename`
(model.safetensors): only the content gives them away. `nan_safetensors()` and
`inf_safetensors()` build valid files with one non-finite element in the float tensor
`NONFINITE_TENSOR` (NonFiniteTensor); `bad_element_span()` locates that element so a
stream can be cut through it. `pickle_like_valid_safetensors()` is a valid file that
starts like a pickle and must be accepted.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
from dataclasses import dataclass

import torch
from safetensors.torch import save

from compress.errors import CodecError, InvalidSafetensors, PickleRefused
from compress.tensorio import MAX_HEADER_BYTES


@dataclass(frozen=True)
class MalformedCase:
    id: str
    data: bytes
    # A fragment of our error message when the bytes are read from a file (read_header).
    message: str
    # The same for the bytes fed chunk by chunk (StreamingValidator, the upload path);
    # defaults to `message` and differs only where the two readers word it differently.
    stream_message: str = ""
    error: type[CodecError] = InvalidSafetensors
    reference_rejects: bool = True
    filename: str = "model.safetensors"

    def __post_init__(self) -> None:
        if not self.stream_message:
            object.__setattr__(self, "stream_message", self.message)


def assemble(header: bytes | str | dict[str, object], data: bytes = b"",
             header_len: int | None = None) -> bytes:
    """Length prefix + header + data; the prefix is the header's true length unless given."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode()
    length = len(header) if header_len is None else header_len
    return struct.pack("<Q", length) + header + data


def entry(dtype: str, shape: list[object], begin: object, end: object) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def valid_tensors() -> dict[str, torch.Tensor]:
    """The tensors of `valid_safetensors()`: float, bfloat16 and integer, one of them empty."""
    return {
        "embed.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "norm.weight": torch.tensor([0.5, -1.0, 2.0], dtype=torch.bfloat16),
        "step": torch.tensor([7], dtype=torch.int64),
        "empty": torch.zeros(0, 4, dtype=torch.float16),
    }


VALID_METADATA = {"format": "pt"}


def valid_safetensors() -> bytes:
    """A small valid file written by the reference library (the base of several cases)."""
    return save(valid_tensors(), metadata=VALID_METADATA)


def _header_len(data: bytes) -> int:
    return int(struct.unpack("<Q", data[:8])[0])


def _one_f32(name: str = "a") -> dict[str, object]:
    return {name: entry("F32", [1], 0, 4)}


def _malformed_cases() -> list[MalformedCase]:
    valid = valid_safetensors()
    n = _header_len(valid)
    four = b"\x00\x00\x80\x3f"  # 1.0f
    return [
        MalformedCase("empty_file", b"", "too small for a safetensors header"),
        MalformedCase("shorter_than_prefix", b"\x10\x00\x00", "too small for a safetensors header"),
        MalformedCase(
            "header_too_large",
            struct.pack("<Q", MAX_HEADER_BYTES + 1) + b'{"a":1}',
            f"exceeds the {MAX_HEADER_BYTES}-byte limit",
        ),
        MalformedCase(
            "truncated_header", valid[: 8 + n // 2],
            message=f"header length {n} runs past the end",
            stream_message=f"file ends inside its {n}-byte header",
        ),
        MalformedCase("truncated_data", valid[:-4], "file is truncated"),
        MalformedCase("header_not_object", assemble("[]"), "does not start with '{'"),
        MalformedCase("header_leading_space", assemble(' {"a":{}}'), "does not start with '{'"),
        MalformedCase(
            "invalid_utf8",
            assemble(b'{"\xff\xfe":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four),
            "not valid UTF-8",
        ),
        MalformedCase(
            "invalid_json",
            assemble('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}', four),
            "not valid JSON",
        ),
        MalformedCase("entry_not_object", assemble({"a": 5}),
                      "must have exactly dtype, shape and data_offsets"),
        MalformedCase("entry_missing_offsets",
                      assemble({"a": {"dtype": "F32", "shape": [1]}}, four),
                      "must have exactly dtype, shape and data_offsets"),
        MalformedCase("offsets_begin_after_end", assemble({"a": entry("F32", [1], 4, 0)}, four),
                      "data_offsets must be [begin, end] with begin <= end"),
        MalformedCase("offsets_negative", assemble({"a": entry("F32", [1], -4, 0)}, four),
                      "data_offsets must be [begin, end] with begin <= end"),
        MalformedCase(
            "overlapping_tensors",
            assemble({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, four * 3),
            "tensor 'b' starts at byte 4, which overlaps the previous tensor",
        ),
        MalformedCase(
            "hole_between_tensors",
            assemble({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, four * 3),
            "tensor 'b' starts at byte 8, which leaves a gap",
        ),
        MalformedCase(
            "data_not_at_offset_zero", assemble({"a": entry("F32", [1], 4, 8)}, four * 2),
            "tensor 'a' starts at byte 4, which leaves a gap",
        ),
        MalformedCase("trailing_bytes", valid + b"\x00" * 4,
                      "trailing bytes after the last tensor"),
        MalformedCase("size_mismatch", assemble({"a": entry("F32", [3], 0, 8)}, four * 2),
                      "tensor 'a' spans 8 bytes but F32 [3] needs 12"),
        MalformedCase(
            "shape_overflow", assemble({"a": entry("F32", [2**62, 2**62], 0, 4)}, four),
            "tensor 'a' spans 4 bytes but F32",
        ),
        MalformedCase("unknown_dtype", assemble({"a": entry("Q7", [1], 0, 4)}, four),
                      "tensor 'a' has unsupported dtype 'Q7'"),
        MalformedCase("negative_dim", assemble({"a": entry("F32", [-1], 0, 4)}, four),
                      "shape must be a list of non-negative integers"),
        MalformedCase("bool_dim", assemble({"a": entry("F32", [True], 0, 4)}, four),
                      "shape must be a list of non-negative integers"),
        MalformedCase("float_dim", assemble({"a": entry("F32", [1.0], 0, 4)}, four),
                      "shape must be a list of non-negative integers"),
        MalformedCase(
            "lone_surrogate_name",
            assemble('{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four),
            "unpaired surrogate escape",
        ),
        MalformedCase(
            "metadata_not_string",
            assemble({"__metadata__": {"step": 1}, **_one_f32()}, four),
            "__metadata__ must map strings to strings",
        ),
        MalformedCase("metadata_not_object",
                      assemble({"__metadata__": ["format"], **_one_f32()}, four),
                      "__metadata__ must map strings to strings"),
        MalformedCase(
            "duplicate_tensor_key",
            assemble('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                     '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', four),
            "has the key 'a' twice",
            reference_rejects=False,
        ),
        MalformedCase(
            "duplicate_field",
            assemble('{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                     four),
            "has the key 'dtype' twice",
        ),
    ]


MALFORMED_CASES: list[MalformedCase] = _malformed_cases()


def _torch_save_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.ones(2, 2)}, buffer)
    return buffer.getvalue()


def _npy_bytes() -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.arange(4, dtype=np.float32))
    return buffer.getvalue()


PICKLE_CASES: list[MalformedCase] = [
    MalformedCase("pickle_protocol_2",
                  pickle.dumps({"weight": [1.0, 2.0]}, protocol=2),
                  "is a Python pickle (protocol 2)", error=PickleRefused),
    MalformedCase("pickle_protocol_4",
                  pickle.dumps({"weight": [1.0, 2.0]}, protocol=4),
                  "is a Python pickle (protocol 4)", error=PickleRefused),
    MalformedCase("pickle_protocol_5",
                  pickle.dumps({"weight": list(range(50))}, protocol=5),
                  "is a Python pickle (protocol 5)", error=PickleRefused),
    MalformedCase("torch_save_zip", _torch_save_bytes(),
                  "is a zip archive (the format of torch.save", error=PickleRefused),
    MalformedCase("numpy_npy", _npy_bytes(), "is a NumPy .npy file", error=PickleRefused),
]


NONFINITE_TENSOR = "layers.0.mlp.down_proj.weight"
NONFINITE_MESSAGE = f"tensor {NONFINITE_TENSOR!r}"  # in the NonFiniteTensor message
_BAD_INDEX = (2, 3)  # the non-finite element of NONFINITE_TENSOR [4, 6]


def _with_bad_value(value: float, dtype: torch.dtype) -> bytes:
    bad = torch.linspace(-1, 1, 24, dtype=torch.float32).reshape(4, 6).to(dtype)
    bad[_BAD_INDEX] = value
    tensors = {
        "layers.0.mlp.up_proj.weight": torch.ones(3, 5, dtype=dtype),
        NONFINITE_TENSOR: bad,
        # -1 is all one bits, a NaN pattern in every float format: only float tensors count.
        "layers.0.step": torch.full((3,), -1, dtype=torch.int32),
    }
    return save(tensors, metadata=VALID_METADATA)


def nan_safetensors(dtype: torch.dtype = torch.float32) -> bytes:
    """A valid file whose float tensor `NONFINITE_TENSOR` holds one NaN."""
    return _with_bad_value(float("nan"), dtype)


def inf_safetensors(dtype: torch.dtype = torch.float32, negative: bool = False) -> bytes:
    """A valid file whose float tensor `NONFINITE_TENSOR` holds one +Inf (or -Inf)."""
    if dtype == torch.float8_e4m3fn:
        raise ValueError("float8_e4m3fn has no infinity (torch saturates inf to 448)")
    return _with_bad_value(float("-inf") if negative else float("inf"), dtype)


def bad_element_span(data: bytes) -> tuple[int, int]:
    """[begin, end) file offsets of the non-finite element of a nan/inf_safetensors file."""
    header_len = _header_len(data)
    info = json.loads(data[8 : 8 + header_len])[NONFINITE_TENSOR]
    width = (info["data_offsets"][1] - info["data_offsets"][0]) // (4 * 6)
    begin = 8 + header_len + info["data_offsets"][0] + (_BAD_INDEX[0] * 6 + _BAD_INDEX[1]) * width
    return begin, begin + width


def pickle_like_valid_safetensors() -> bytes:
    """A VALID file whose 640-byte header makes it start b"\\x80\\x02", like a pickle.

    The reference library reads it; deltahub must accept it too.
    """
    header = json.dumps({"__metadata__": VALID_METADATA, "w": entry("F32", [2], 0, 8)},
                        separators=(",", ":")).encode()
    data = assemble(header.ljust(640), struct.pack("<2f", 1.5, -2.0))
    assert data.startswith(b"\x80\x02")
    return data
