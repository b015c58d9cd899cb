"""Check a pushed adapter's files against its base, per kind, and summarise them.

Only headers (kept in the database at upload) and small JSON files are read: the
tensor data was already checked for NaN/Inf while it streamed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compress.bitdelta_format import (
    CONFIG_FILE,
    DELTA_FILE,
    DELTA_INDEX,
    REPORT_FILE,
    inspect_bitdelta,
)
from compress.errors import CodecError
from compress.manifest import Manifest, parse_weight_map
from compress.peft_format import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    check_lora_against_base,
    parse_adapter_config,
)
from compress.tensorfile import header_from_dict
from registry.errors import MissingFiles, from_codec_error
from registry.storage.base import BlobStore
from registry.tables import AdapterFile, AdapterKind


@dataclass(frozen=True)
class AdapterContents:
    params: dict[str, Any]
    quality: dict[str, Any] | None = None


def inspect_adapter(kind: AdapterKind, files: Mapping[str, AdapterFile], base: Manifest,
                    store: BlobStore) -> AdapterContents:
    try:
        if kind is AdapterKind.LORA:
            return _inspect_lora(files, base, store)
        return _inspect_bitdelta(files, base, store)
    except CodecError as exc:
        raise from_codec_error(exc) from exc


def content_digest(files: Mapping[str, AdapterFile]) -> str:
    """Identity of an adapter's content: its file names and their sha256."""
    canonical = json.dumps(sorted((name, f.sha256) for name, f in files.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _inspect_lora(files: Mapping[str, AdapterFile], base: Manifest,
                  store: BlobStore) -> AdapterContents:
    _require(files, [ADAPTER_CONFIG, ADAPTER_WEIGHTS], "a LoRA adapter")
    config = parse_adapter_config(_read_json(store, files[ADAPTER_CONFIG]))
    weights = files[ADAPTER_WEIGHTS]
    assert weights.header is not None  # safetensors uploads always record their header
    summary = check_lora_against_base(config, header_from_dict(weights.header).tensors, base)
    return AdapterContents(params=summary.to_params())


def _inspect_bitdelta(files: Mapping[str, AdapterFile], base: Manifest,
                      store: BlobStore) -> AdapterContents:
    shards = {name: f for name, f in files.items() if name.endswith(".safetensors")}
    if not shards:
        raise MissingFiles(f"a BitDelta adapter needs {DELTA_FILE} (or its shards) before it "
                           "can be finalized")
    _require(files, [CONFIG_FILE], "a BitDelta adapter (to merge into a loadable model)")
    weight_map = None
    if len(shards) > 1 or DELTA_INDEX in files:
        _require(files, [DELTA_INDEX], "a sharded BitDelta adapter")
        weight_map = parse_weight_map(_read_json(store, files[DELTA_INDEX]), DELTA_INDEX)
    headers = {}
    for name, f in shards.items():
        assert f.header is not None  # safetensors uploads always record their header
        headers[name] = header_from_dict(f.header)
    summary = inspect_bitdelta(headers, weight_map, base)
    quality = None
    if REPORT_FILE in files:
        report = _read_json(store, files[REPORT_FILE])
        if isinstance(report, dict):
            # The client's own compression report: keep its summary, not the per-tensor
            # list, and say where it came from (the server did not measure it).
            quality = {k: v for k, v in report.items() if k not in ("tensors", "files")}
            quality["source"] = f"{REPORT_FILE} pushed with the adapter"
    return AdapterContents(params=summary.to_params(), quality=quality)


def _require(files: Mapping[str, AdapterFile], names: list[str], what: str) -> None:
    missing = [n for n in names if n not in files]
    if missing:
        raise MissingFiles(f"{what} needs {', '.join(missing)} before it can be finalized")


def _read_json(store: BlobStore, file: AdapterFile) -> Any:
    return json.loads(store.read_bytes(file.sha256))
