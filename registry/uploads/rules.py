"""Which files a model or an adapter accepts, and how each kind of file is checked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from compress.bitdelta_format import CONFIG_FILE, DELTA_INDEX, DELTA_STEM, REPORT_FILE
from compress.errors import PickleRefused
from compress.peft_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from compress.strictjson import DEFAULT_MAX_DEPTH
from compress.tensorfile import DEFAULT_MAX_HEADER_BYTES, refuse_pickle_name
from registry.errors import UnsupportedFile, from_codec_error
from registry.names import check_filename
from registry.settings import Settings
from registry.tables import AdapterKind


class ContentKind(StrEnum):
    SAFETENSORS = "safetensors"  # header, layout, length and finite floats, while streaming
    JSON = "json"  # UTF-8 JSON
    TEXT = "text"  # UTF-8 text (README.md, merges.txt)
    BINARY = "binary"  # opaque but never a pickle (tokenizer.model)


@dataclass(frozen=True)
class FileRule:
    kind: ContentKind
    max_bytes: int  # the whole file
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES  # a safetensors header
    max_json_depth: int = DEFAULT_MAX_DEPTH  # a JSON file, or a safetensors header

    @classmethod
    def of(cls, kind: ContentKind, max_bytes: int, settings: Settings) -> FileRule:
        """A rule with the server's header and JSON limits."""
        return cls(kind, max_bytes, max_header_bytes=settings.MAX_HEADER_BYTES,
                   max_json_depth=settings.MAX_JSON_DEPTH)


_MODEL_TEXT = re.compile(r"^.+\.(txt|md)$")
_BITDELTA_SHARD = re.compile(rf"^{DELTA_STEM}(-\d{{5}}-of-\d{{5}})?\.safetensors$")
_BITDELTA_JSON = {DELTA_INDEX, CONFIG_FILE}


def model_file_rule(filename: str, settings: Settings) -> FileRule:
    check_filename(filename)
    _refuse_pickle(filename)
    if filename.endswith(".safetensors"):
        return FileRule.of(ContentKind.SAFETENSORS, settings.MAX_UPLOAD_BYTES, settings)
    if filename.endswith(".json"):
        return FileRule.of(ContentKind.JSON, settings.MAX_JSON_BYTES, settings)
    if filename.endswith(".model"):
        return FileRule.of(ContentKind.BINARY, settings.MAX_JSON_BYTES, settings)
    if _MODEL_TEXT.match(filename):
        return FileRule.of(ContentKind.TEXT, settings.MAX_JSON_BYTES, settings)
    raise UnsupportedFile(
        f"{filename!r}: a model takes .safetensors weights, JSON files (config.json, "
        "model.safetensors.index.json, tokenizer files), tokenizer.model and .txt/.md text"
    )


def adapter_file_rule(kind: AdapterKind, filename: str, settings: Settings) -> FileRule:
    check_filename(filename)
    _refuse_pickle(filename)
    if filename == "README.md":
        return FileRule.of(ContentKind.TEXT, settings.MAX_JSON_BYTES, settings)
    if kind is AdapterKind.LORA:
        if filename == ADAPTER_WEIGHTS:
            return FileRule.of(ContentKind.SAFETENSORS, settings.MAX_UPLOAD_BYTES, settings)
        if filename == ADAPTER_CONFIG:
            return FileRule.of(ContentKind.JSON, settings.MAX_JSON_BYTES, settings)
        raise UnsupportedFile(
            f"{filename!r}: a LoRA adapter takes the files peft writes: {ADAPTER_CONFIG}, "
            f"{ADAPTER_WEIGHTS} and README.md"
        )
    if _BITDELTA_SHARD.match(filename):
        return FileRule.of(ContentKind.SAFETENSORS, settings.MAX_UPLOAD_BYTES, settings)
    if filename == REPORT_FILE:  # kept as the adapter's quality: a summary, not a log
        return FileRule.of(ContentKind.JSON, settings.MAX_REPORT_BYTES, settings)
    if filename in _BITDELTA_JSON:
        return FileRule.of(ContentKind.JSON, settings.MAX_JSON_BYTES, settings)
    raise UnsupportedFile(
        f"{filename!r}: a BitDelta adapter takes delta.safetensors (or delta-0000i-of-0000N"
        ".safetensors shards with delta.safetensors.index.json), config.json, report.json "
        "and README.md"
    )


def _refuse_pickle(filename: str) -> None:
    try:
        refuse_pickle_name(filename)
    except PickleRefused as exc:
        raise from_codec_error(exc) from exc
