"""Safetensors headers: parsing and validation without touching tensor data.

Refuses what the reference library refuses, plus duplicate JSON keys, extra tensor fields and
FNUZ float8; strict JSON; pickles refused as pickles; an impossible length prefix as not
safetensors. See docs/codecs.md, "Reading and writing models".
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compress.errors import InvalidJSON, InvalidSafetensors, TooLarge
from compress.tensorio import strictjson
from compress.tensorio.pickles import describe_pickle, pickle_refusal, refuse_pickle_name

# The reference implementation refuses headers over 100 MB: past that, the bytes are not
# safetensors at all (InvalidSafetensors).
MAX_HEADER_BYTES = 100_000_000
# What we accept by default. Llama-2-70B's largest shard has a ~100 KB header; a valid
# header of tens of MB is an attack on memory (it is parsed, and kept in a database row),
# so it is refused as too large (TooLarge) as soon as its length prefix arrives.
DEFAULT_MAX_HEADER_BYTES = 8 * 2**20

DTYPE_BYTES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}

TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8,
    "F8_E5M2": torch.float8_e5m2, "F8_E4M3": torch.float8_e4m3fn,
    "I16": torch.int16, "U16": torch.uint16, "F16": torch.float16, "BF16": torch.bfloat16,
    "I32": torch.int32, "U32": torch.uint32, "F32": torch.float32,
    "I64": torch.int64, "U64": torch.uint64, "F64": torch.float64,
}
SAFETENSORS_DTYPES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}

FLOAT_DTYPES = frozenset({"F8_E5M2", "F8_E4M3", "F16", "BF16", "F32", "F64"})


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's header record; offsets are relative to the start of the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: the tensors in data order, the metadata, and the layout sizes."""

    tensors: Mapping[str, TensorEntry]
    metadata: Mapping[str, str]
    header_len: int  # n, the JSON length, not counting the 8-byte prefix

    @property
    def data_start(self) -> int:
        return 8 + self.header_len

    @property
    def data_len(self) -> int:
        return max((t.end for t in self.tensors.values()), default=0)

    @property
    def file_size(self) -> int:
        return self.data_start + self.data_len


def parse_length_prefix(prefix: bytes, source: str,
                        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                        file_size: int | None = None) -> int:
    """Decode and bound the 8-byte header length.

    `prefix` is the file's first bytes: 8 or more (a ninth byte, when given, must be the
    header's opening '{'). A length no safetensors file could have (past the format's
    limit or the file's end) or bytes that start like a pickle or zip archive mean the
    file is not safetensors at all, and say so; only a header that looks real but is
    over `max_header_bytes` is TooLarge.
    """
    what = describe_pickle(prefix)
    if len(prefix) < 8:
        if what is not None:
            raise pickle_refusal(source, what)
        raise InvalidSafetensors(
            f"{source}: file is {len(prefix)} bytes, too small for a safetensors header "
            "(8-byte length prefix)"
        )
    (header_len,) = struct.unpack("<Q", prefix[:8])
    reason = _not_a_header(int(header_len), prefix, file_size)
    if what is not None and (reason is not None or header_len > max_header_bytes):
        raise pickle_refusal(source, what)
    if reason is not None:
        raise InvalidSafetensors(
            f"{source}: not a safetensors file: {reason}. A safetensors file starts with "
            "the 8-byte length of its JSON header, then the header; the file is corrupt "
            "or in another format"
        )
    if header_len > max_header_bytes:
        raise TooLarge(
            f"{source}: the header is {header_len} bytes, over the {max_header_bytes}-byte "
            "limit for headers; a real model's header is far smaller, so split the file "
            "into shards (each has its own header)"
        )
    return int(header_len)


def _not_a_header(header_len: int, prefix: bytes, file_size: int | None) -> str | None:
    """Why the length prefix cannot start a safetensors file, or None if it can."""
    if header_len > MAX_HEADER_BYTES:
        return (f"its header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit "
                "of the format")
    if file_size is not None and 8 + header_len > file_size:
        return f"its header length {header_len} runs past the end of the {file_size}-byte file"
    # b"\x80\x02" (a pickle's start) also begins the length prefix of every file whose
    # header is 640 bytes long (or 896, 1152, 1408, each plus any multiple of 65536), so
    # the magic bytes alone do not refuse a file: the header's first byte decides.
    if len(prefix) > 8 and header_len > 0 and prefix[8:9] != b"{":
        return f"the {header_len}-byte header it announces does not start with '{{'"
    return None


def parse_header_json(header: bytes, header_len: int, source: str,
                      max_json_depth: int = strictjson.DEFAULT_MAX_DEPTH) -> SafetensorsHeader:
    """Validate the JSON header and the data layout it describes (no holes, no overlaps)."""
    if not header.startswith(b"{"):
        raise InvalidSafetensors(f"{source}: header does not start with '{{'; not safetensors")
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSafetensors(f"{source}: header is not valid UTF-8 ({exc.reason})") from exc
    try:
        raw = strictjson.loads(text, source, max_depth=max_json_depth,
                               object_pairs_hook=_checked_pairs(source))
    except InvalidJSON as exc:
        raise InvalidSafetensors(f"{source}: header is not valid JSON ({exc.cause})") from exc
    if not isinstance(raw, dict):
        raise InvalidSafetensors(f"{source}: header JSON must be an object")

    metadata = _parse_metadata(raw.pop("__metadata__", None), source)
    entries = [_parse_entry(name, value, source) for name, value in raw.items()]
    entries.sort(key=lambda e: (e.start, e.end))
    expected_start = 0
    for entry in entries:
        if entry.start != expected_start:
            kind = "overlaps the previous tensor" if entry.start < expected_start else (
                "leaves a gap after the previous tensor")
            raise InvalidSafetensors(
                f"{source}: tensor {entry.name!r} starts at byte {entry.start}, which {kind} "
                f"(expected {expected_start})"
            )
        expected_start = entry.end
    return SafetensorsHeader(
        tensors={e.name: e for e in entries}, metadata=metadata, header_len=header_len
    )


def check_file_size(header: SafetensorsHeader, file_size: int, source: str) -> None:
    if file_size < header.file_size:
        raise InvalidSafetensors(
            f"{source}: file is truncated: the header describes {header.file_size} bytes "
            f"but the file has {file_size}"
        )
    if file_size > header.file_size:
        raise InvalidSafetensors(
            f"{source}: {file_size - header.file_size} trailing bytes after the last tensor; "
            "the file is corrupt or was appended to"
        )


def read_header(path: Path, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
                ) -> SafetensorsHeader:
    """Read and fully validate a safetensors file's header without loading tensor data."""
    refuse_pickle_name(path.name)
    file_size = path.stat().st_size
    with path.open("rb") as f:
        def read(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        return header_from_reader(read, file_size, path.name, max_header_bytes)


# Reads exactly `length` bytes at `offset` of one file (a local file, a stored blob).
RangeReader = Callable[[int, int], bytes]


def header_from_reader(read: RangeReader, file_size: int, source: str,
                       max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> SafetensorsHeader:
    """`read_header` over any positioned reader: the same checks, in the same words.

    Two reads: the 8-byte length prefix with the header's first byte, then exactly the
    header it announces (a reader over an object store serves both from one fetch of the
    file's first bytes).
    """
    refuse_pickle_name(source)
    prefix = read(0, min(9, file_size))
    header_len = parse_length_prefix(prefix, source, max_header_bytes, file_size)
    header = parse_header_json(read(8, header_len), header_len, source)
    check_file_size(header, file_size, source)
    return header


def _checked_pairs(source: str) -> strictjson.PairsHook:
    """An object_pairs_hook refusing duplicate keys and lone surrogates, naming `source`.

    It raises InvalidSafetensors (a CodecError, not a ValueError), which json passes
    through untouched.
    """
    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise InvalidSafetensors(
                    f"{source}: header has the key {key!r} twice; re-save the file")
            _check_unicode(key, source)
            if isinstance(value, str):
                _check_unicode(value, source)
            result[key] = value
        return result

    return check


def _check_unicode(text: str, source: str) -> None:
    # json.loads turns the escape "\ud800" into a lone surrogate, which is not Unicode: the
    # reference (serde_json) rejects it, and such a name cannot be encoded again.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidSafetensors(
            f"{source}: header is not valid JSON (the string {text!r} holds an unpaired "
            "surrogate escape)") from exc


def _parse_metadata(raw: object, source: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise InvalidSafetensors(f"{source}: __metadata__ must map strings to strings")
    return dict(raw)


def _parse_entry(name: str, value: object, source: str) -> TensorEntry:
    where = f"{source}: tensor {name!r}"
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data_offsets"}:
        raise InvalidSafetensors(f"{where} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise InvalidSafetensors(
            f"{where} has unsupported dtype {dtype!r}; supported: {', '.join(DTYPE_BYTES)}"
        )
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise InvalidSafetensors(f"{where} shape must be a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]):
        raise InvalidSafetensors(f"{where} data_offsets must be [begin, end] with begin <= end")
    nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != nbytes:
        raise InvalidSafetensors(
            f"{where} spans {offsets[1] - offsets[0]} bytes but {dtype} {shape} needs {nbytes}"
        )
    return TensorEntry(name=name, dtype=dtype, shape=tuple(shape), start=offsets[0],
                       end=offsets[1])


def _is_count(value: object) -> bool:
    # bool is an int subclass in Python; JSON true/false is not a dimension.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def header_to_dict(header: SafetensorsHeader) -> dict[str, Any]:
    """A JSON-ready copy of a validated header (the registry keeps it beside the blob)."""
    return {
        "header_len": header.header_len,
        "metadata": dict(header.metadata),
        "tensors": {e.name: {"dtype": e.dtype, "shape": list(e.shape),
                             "data_offsets": [e.start, e.end]} for e in header.tensors.values()},
    }


def header_from_dict(data: Mapping[str, Any]) -> SafetensorsHeader:
    entries = [TensorEntry(name=name, dtype=t["dtype"], shape=tuple(t["shape"]),
                           start=t["data_offsets"][0], end=t["data_offsets"][1])
               for name, t in data["tensors"].items()]
    entries.sort(key=lambda e: (e.start, e.end))
    return SafetensorsHeader(tensors={e.name: e for e in entries},
                             metadata=dict(data.get("metadata", {})),
                             header_len=int(data["header_len"]))
