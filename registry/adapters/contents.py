"""Check a pushed adapter's files against its base, per kind, and summarise them.

Only headers (kept in the database at upload) and small JSON files are read: the
tensor data was already checked for NaN/Inf while it streamed in. The JSON files are
parsed strictly (compress/tensorio/strictjson.py), and a pushed report.json (LoRA or
BitDelta) is kept as the adapter's quality only within the report limits: its size, and
for every value in it, finite numbers, integers within MAX_INTEGER, bounded strings
and arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compress.bitdelta import (
    CONFIG_FILE,
    DELTA_FILE,
    DELTA_INDEX,
    REPORT_FILE,
    inspect_bitdelta,
)
from compress.errors import CodecError
from compress.filenames import PICTURE_SUFFIX
from compress.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from compress.lora.report import REPORT_FORMAT as LORA_REPORT_FORMAT
from compress.peft import adapter_kind, check_peft_against_base, peft_type_of
from compress.tensorio import Manifest, header_from_dict, parse_weight_map, strictjson
from registry.adapters.quality import JSONObject, Quality, from_report
from registry.adapters.serving import PEFT_KEY
from registry.errors import MissingFiles, Unprocessable, from_codec_error
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import AdapterFile, AdapterKind
from registry.uploads.drafts import files_digest


@dataclass(frozen=True)
class AdapterContents:
    params: dict[str, Any]  # the codec's summary of the files
    quality: Quality | None = None
    peft_type: str | None = None


def inspect_adapter(kind: AdapterKind, files: Mapping[str, AdapterFile], base: Manifest,
                    store: BlobStore, settings: Settings) -> AdapterContents:
    reader = _JSONReader(store, settings)
    try:
        if kind in (AdapterKind.LORA, AdapterKind.PEFT):
            return _inspect_peft(kind, files, base, reader)
        return _inspect_bitdelta(files, base, reader)
    except CodecError as exc:
        raise from_codec_error(exc) from exc


def content_digest(files: Mapping[str, AdapterFile]) -> str:
    """Identity of an adapter's content: its file names and their sha256."""
    return files_digest({name: f.sha256 for name, f in files.items()})


@dataclass(frozen=True)
class _JSONReader:
    """Reads the adapter's JSON blobs under the server's limits."""

    store: BlobStore
    settings: Settings

    def read(self, name: str, file: AdapterFile) -> Any:
        return strictjson.loads(self.store.read_bytes(file.sha256), name,
                                max_depth=self.settings.MAX_JSON_DEPTH)

    def read_report(self, file: AdapterFile) -> JSONObject:
        # Uploads cap report.json; one pushed before the cap (or a lowered cap) is
        # refused here rather than read whole and kept in the adapter's row.
        limit = self.settings.MAX_REPORT_BYTES
        if file.size > limit:
            raise Unprocessable(
                f"{REPORT_FILE} is {file.size} bytes, over the {limit}-byte limit for "
                f"reports; upload a smaller {REPORT_FILE} (its summary, without the "
                "per-tensor list) or leave it out", name="ReportTooLarge")
        report = self.read(REPORT_FILE, file)
        if not isinstance(report, dict):
            raise Unprocessable(f"{REPORT_FILE} must be a JSON object (the codec's report); "
                                f"this one is a JSON {type(report).__name__}",
                                name="InvalidReport")
        # The whole document, not only the summary kept in the row: pages and plots read
        # the file too, and a number no float holds or a name of pages would break them.
        bounds = strictjson.Bounds(max_string_chars=self.settings.MAX_REPORT_STRING_CHARS,
                                   max_items=self.settings.MAX_REPORT_ITEMS)
        if (where := strictjson.past_bounds(report, bounds)) is not None:
            raise Unprocessable(
                f"{REPORT_FILE} holds {where}; numbers must be finite and integers within "
                f"±{bounds.max_integer} (write large counts as floats), names at most "
                f"{bounds.max_string_chars} characters, arrays and objects at most "
                f"{bounds.max_items} items. Fix the report and upload it again",
                name="InvalidReport")
        return report


def _inspect_peft(kind: AdapterKind, files: Mapping[str, AdapterFile], base: Manifest,
                  reader: _JSONReader) -> AdapterContents:
    _require(files, [ADAPTER_CONFIG, ADAPTER_WEIGHTS], f"a {kind.value} adapter")
    raw = reader.read(ADAPTER_CONFIG, files[ADAPTER_CONFIG])
    peft_type = peft_type_of(raw)
    if adapter_kind(peft_type) != kind.value:
        raise Unprocessable(
            f"{ADAPTER_CONFIG} has peft_type {peft_type!r}, an adapter of kind "
            f"{adapter_kind(peft_type)!r}, not {kind.value!r}; push it with kind "
            f"{adapter_kind(peft_type)!r} (`deltahub push` infers it from the folder)",
            name="WrongAdapterKind")
    weights = files[ADAPTER_WEIGHTS]
    assert weights.header is not None  # safetensors uploads always record their header
    record = check_peft_against_base(raw, header_from_dict(weights.header).tensors, base)
    return AdapterContents(params=record.params | {PEFT_KEY: record.peft},
                           quality=_pushed_quality(files, reader), peft_type=peft_type)


def _inspect_bitdelta(files: Mapping[str, AdapterFile], base: Manifest,
                      reader: _JSONReader) -> AdapterContents:
    shards = {name: f for name, f in files.items() if name.endswith(".safetensors")}
    if not shards:
        raise MissingFiles(f"a BitDelta adapter needs {DELTA_FILE} (or its shards) before it "
                           "can be finalized")
    _require(files, [CONFIG_FILE], "a BitDelta adapter (to merge into a loadable model)")
    weight_map = None
    if len(shards) > 1 or DELTA_INDEX in files:
        _require(files, [DELTA_INDEX], "a sharded BitDelta adapter")
        weight_map = parse_weight_map(reader.read(DELTA_INDEX, files[DELTA_INDEX]),
                                      DELTA_INDEX)
    headers = {}
    for name, f in shards.items():
        assert f.header is not None  # safetensors uploads always record their header
        headers[name] = header_from_dict(f.header)
    summary = inspect_bitdelta(headers, weight_map, base)
    return AdapterContents(params=summary.to_params(), quality=_pushed_quality(files, reader))


def _pushed_quality(files: Mapping[str, AdapterFile],
                    reader: _JSONReader) -> Quality | None:
    """The quality a pushed report.json states (None without one)."""
    if REPORT_FILE not in files:
        return None
    report = reader.read_report(files[REPORT_FILE])
    return from_report(report, source=f"{REPORT_FILE} pushed with the adapter",
                       lora=report.get("format") == LORA_REPORT_FORMAT,
                       pictures=sorted(name for name in files if name.endswith(PICTURE_SUFFIX)))


def _require(files: Mapping[str, AdapterFile], names: list[str], what: str) -> None:
    missing = [n for n in names if n not in files]
    if missing:
        raise MissingFiles(f"{what} needs {', '.join(missing)} before it can be finalized")

