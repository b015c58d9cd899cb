"""Which files a model, an adapter or a data set accepts, and how each kind is checked.

Which files make up a model, a LoRA adapter or a BitDelta delta is the formats' rule
(`is_model_file`, `is_adapter_file`, `is_delta_file` in compress/), the same one
`deltahub push` uses to choose what to send; here each accepted file gets its content
check and size limit. Adapters of both kinds also keep the codec's `report.json` (as
their quality) and its PNG pictures. A data set takes what compress.quality reads
(`data_kind`): .txt, .jsonl and token ids in .safetensors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from compress.bitdelta import CONFIG_FILE, DELTA_FILE, DELTA_INDEX, REPORT_FILE, is_delta_file
from compress.errors import InvalidDataset, PickleRefused
from compress.filenames import is_report_file
from compress.lora import ADAPTER_FILES, SPECTRA_FILE, is_adapter_file
from compress.modeling.data import data_kind
from compress.tensorio import (
    DEFAULT_MAX_HEADER_BYTES,
    MODEL_CARD,
    is_model_file,
    refuse_pickle_name,
    strictjson,
)
from registry.errors import UnsupportedFile, from_codec_error
from registry.names import check_filename
from registry.settings import Settings
from registry.tables import AdapterKind
from registry.uploads.checks import CheckSlots


class ContentKind(StrEnum):
    SAFETENSORS = "safetensors"  # header, layout, length and finite floats, while streaming
    JSON = "json"  # UTF-8 JSON
    TEXT = "text"  # UTF-8 text (README.md, merges.txt)
    BINARY = "binary"  # opaque but never a pickle (tokenizer.model)
    PNG = "png"  # a picture: the PNG container, checked whole (registry/uploads/png.py)
    # Calibration or evaluation data: spooled to a local file while it streams (token ids
    # also pass the safetensors checks), then read whole by compress.quality's readers.
    DATASET = "dataset"


@dataclass(frozen=True)
class FileRule:
    kind: ContentKind
    max_bytes: int  # the whole file
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES  # a safetensors header
    max_json_depth: int = strictjson.DEFAULT_MAX_DEPTH  # a JSON file, or a safetensors header
    # Where a file checked whole (a data set's) is copied while it arrives: the server's
    # WORK_DIR, not the system temp directory, which may be RAM (tmpfs).
    spool_dir: Path | None = None
    # The slots such a whole-file check waits for (registry/uploads/checks.py).
    check_slots: CheckSlots | None = None

    @classmethod
    def of(cls, kind: ContentKind, max_bytes: int, settings: Settings) -> FileRule:
        """A rule with the server's header and JSON limits."""
        return cls(kind, max_bytes, max_header_bytes=settings.MAX_HEADER_BYTES,
                   max_json_depth=settings.MAX_JSON_DEPTH)


_KINDS = {
    ".safetensors": ContentKind.SAFETENSORS,
    ".json": ContentKind.JSON,
    ".md": ContentKind.TEXT,
    ".txt": ContentKind.TEXT,
    ".model": ContentKind.BINARY,  # a sentencepiece tokenizer.model
}


def model_file_rule(filename: str, settings: Settings) -> FileRule:
    check_filename(filename)
    _refuse_pickle(filename)
    if not is_model_file(filename):
        raise UnsupportedFile(
            f"{filename!r}: a model takes .safetensors weights, JSON files (config.json, "
            "model.safetensors.index.json, tokenizer files), tokenizer.model and .txt/.md text"
        )
    return _rule(filename, settings)


def adapter_file_rule(kind: AdapterKind, filename: str, settings: Settings) -> FileRule:
    check_filename(filename)
    _refuse_pickle(filename)
    if is_report_file(filename):  # either kind keeps the codec's report and pictures
        if filename == REPORT_FILE:
            # Kept as the adapter's quality: a summary, not a log.
            return FileRule.of(ContentKind.JSON, settings.MAX_REPORT_BYTES, settings)
        return FileRule.of(ContentKind.PNG, settings.MAX_PICTURE_BYTES, settings)
    if kind in (AdapterKind.LORA, AdapterKind.PEFT) and not is_adapter_file(filename):
        raise UnsupportedFile(
            f"{filename!r}: a PEFT adapter takes the files peft writes "
            f"({', '.join(ADAPTER_FILES[:-1])} and {ADAPTER_FILES[-1]}), plus the "
            f"extraction's {REPORT_FILE} and PNG pictures ({SPECTRA_FILE})"
        )
    if kind is AdapterKind.BITDELTA and not is_delta_file(filename):
        raise UnsupportedFile(
            f"{filename!r}: a BitDelta adapter takes {DELTA_FILE} (or delta-0000i-of-0000N"
            f".safetensors shards with {DELTA_INDEX}), {CONFIG_FILE}, {REPORT_FILE}, "
            f"{MODEL_CARD} and PNG pictures"
        )
    return _rule(filename, settings)


def dataset_file_rule(filename: str, settings: Settings) -> FileRule:
    check_filename(filename)
    _refuse_pickle(filename)
    try:
        data_kind(filename)
    except InvalidDataset as exc:  # an unknown suffix: a kind of file, not bad content
        raise UnsupportedFile(exc.detail) from exc
    return dataclasses.replace(
        FileRule.of(ContentKind.DATASET, settings.MAX_DATASET_BYTES, settings),
        spool_dir=Path(settings.WORK_DIR) / "uploads", check_slots=CheckSlots.of(settings))


def _rule(filename: str, settings: Settings) -> FileRule:
    """The content check and size limit of a file the owner accepts, by its suffix."""
    kind = _KINDS[filename[filename.rindex("."):]]
    limit = (settings.MAX_UPLOAD_BYTES if kind is ContentKind.SAFETENSORS
             else settings.MAX_JSON_BYTES)
    return FileRule.of(kind, limit, settings)


def _refuse_pickle(filename: str) -> None:
    try:
        refuse_pickle_name(filename)
    except PickleRefused as exc:
        raise from_codec_error(exc) from exc
