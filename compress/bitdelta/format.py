"""The BitDelta delta format, version 1 (DESIGN.md, "BitDelta deltas"): names, metadata, checks.

This module reads headers only. `inspect_bitdelta` is the one validator (the registry on
uploaded headers, `load_bitdelta` / `merge_bitdelta` on files); `is_delta_file` names a
delta's files. The files, tensors and `__metadata__` table: docs/codecs.md,
"The BitDelta delta format (version 1)".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata as importlib_metadata
from typing import Any

import torch

from compress.errors import (
    IncompatibleModels,
    InvalidDelta,
    InvalidJSON,
    InvalidModel,
    InvalidParameter,
)
from compress.filenames import DELTA_FILE as DELTA_FILE
from compress.filenames import DELTA_INDEX as DELTA_INDEX
from compress.filenames import DELTA_STEM as DELTA_STEM
from compress.filenames import REPORT_FILE as REPORT_FILE
from compress.filenames import is_delta_file as is_delta_file
from compress.targets import module_kind
from compress.tensorio import (
    FLOAT_DTYPES,
    Manifest,
    SafetensorsHeader,
    TensorEntry,
    manifest_from_headers,
    strictjson,
)
from kernels import BITS_PER_WORD, packed_words

FORMAT = "bitdelta"
FORMAT_VERSION = "1"
BITS_SUFFIX = ".weight.bits"
SCALE_SUFFIX = ".weight.scale"

REQUIRED_KEYS = ("format", "format_version", "base_manifest_digest", "finetune_manifest_digest",
                 "scale_mode", "compressed_modules", "compressed_shapes", "compressed_dtypes",
                 "tool_version")


class ScaleMode(StrEnum):
    ROW = "row"  # one α per output row (deltahub's default: lower error, N floats)
    TENSOR = "tensor"  # one α per matrix, as in the BitDelta paper

    @classmethod
    def parse(cls, value: str) -> ScaleMode:
        try:
            return cls(value)
        except ValueError:
            raise InvalidParameter(
                f"scale mode {value!r} is not one of: {', '.join(m.value for m in cls)}"
            ) from None


def bits_key(module: str) -> str:
    return module + BITS_SUFFIX


def scale_key(module: str) -> str:
    return module + SCALE_SUFFIX


def weight_key(module: str) -> str:
    return module + ".weight"


def scale_shape(mode: ScaleMode, n: int) -> tuple[int, ...]:
    return (n,) if mode is ScaleMode.ROW else ()


def bits_shape(n: int, k: int) -> tuple[int, int]:
    return (packed_words(k), n)


def tool_version() -> str:
    try:
        return f"deltahub {importlib_metadata.version('deltahub')}"
    except importlib_metadata.PackageNotFoundError:  # running from a source tree
        return "deltahub (not installed)"


@dataclass(frozen=True)
class CompressedSpec:
    """One compressed linear weight: the module, its [N, K] and the fine-tune's dtype."""

    module: str
    shape: tuple[int, int]
    dtype: str

    @property
    def weight_name(self) -> str:
        return weight_key(self.module)


@dataclass(frozen=True)
class StoredTensor:
    """A fine-tune tensor the delta stores whole (its place in the files aside)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def delta_metadata(*, base_digest: str, finetune_digest: str, mode: ScaleMode,
                   compressed: list[CompressedSpec]) -> dict[str, str]:
    """The `__metadata__` of a delta (the table in docs/codecs.md)."""
    ordered = sorted(compressed, key=lambda c: c.module)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_manifest_digest": base_digest,
        "finetune_manifest_digest": finetune_digest,
        "scale_mode": mode.value,
        "compressed_modules": json.dumps([c.module for c in ordered]),
        "compressed_shapes": json.dumps({c.module: list(c.shape) for c in ordered}),
        "compressed_dtypes": json.dumps({c.module: c.dtype for c in ordered}),
        "tool_version": tool_version(),
    }


@dataclass(frozen=True)
class BitDeltaSummary:
    """What a validated delta holds; `to_params()` is what the registry records."""

    scale_mode: ScaleMode
    compressed: dict[str, CompressedSpec]  # module -> spec, sorted
    full_tensors: dict[str, StoredTensor]  # stored fine-tune tensors, by name
    base_manifest_digest: str
    finetune_manifest_digest: str
    tool_version: str
    nbytes: int  # tensor data bytes over all files

    def to_params(self) -> dict[str, Any]:
        kinds = sorted({module_kind(m) for m in self.compressed})
        return {"scale_mode": self.scale_mode.value, "target_modules": kinds,
                "compressed_count": len(self.compressed),
                "full_tensors": sorted(self.full_tensors),
                "base_manifest_digest": self.base_manifest_digest,
                "finetune_manifest_digest": self.finetune_manifest_digest,
                "tool_version": self.tool_version}


def inspect_bitdelta(headers: Mapping[str, SafetensorsHeader],
                     weight_map: Mapping[str, str] | None,
                     base: Manifest | None) -> BitDeltaSummary:
    """Validate a delta from its parsed headers (no tensor data) and summarise it.

    `headers` maps file name -> header for every delta shard; `weight_map` is the shard
    index's (None for one file, or when the caller already checked it). With `base`, the
    delta must also have been made against that base. Raises InvalidDelta when the delta
    is malformed (format, version, metadata, missing or misshapen bits/scale, another
    base) and IncompatibleModels when its tensors do not fit the base; each message names
    every problem found.
    """
    meta = _shared_metadata(headers)
    _check_format(meta)
    mode, compressed = _parse_compressed(meta)
    try:  # the cross-shard checks: no tensor in two shards, the index agrees with the shards
        manifest_from_headers(headers, weight_map)
    except InvalidModel as exc:
        raise InvalidDelta(f"the delta's files are inconsistent: {exc.detail}") from exc
    entries = {name: e for h in headers.values() for name, e in h.tensors.items()}
    full = _check_tensors(entries, compressed, mode)
    summary = BitDeltaSummary(
        scale_mode=mode, compressed=compressed, full_tensors=full,
        base_manifest_digest=meta["base_manifest_digest"],
        finetune_manifest_digest=meta["finetune_manifest_digest"],
        tool_version=meta["tool_version"],
        nbytes=sum(e.nbytes for e in entries.values()),
    )
    if base is not None:
        check_against_base(summary, base)
    return summary


def check_against_base(summary: BitDeltaSummary, base: Manifest, *,
                       check_digest: bool = True) -> None:
    """The delta was made against `base`: digest, compressed shapes and stored tensors fit.

    `check_digest=False` checks names and shapes only, for an in-memory base whose dtypes
    may legitimately differ from the checkpoint's (a model loaded in another precision).
    """
    if check_digest and summary.base_manifest_digest != base.digest():
        raise InvalidDelta(
            f"the delta was made against a base with manifest digest "
            f"{summary.base_manifest_digest[:12]}…, not this base ({base.digest()[:12]}…); "
            "apply it to the base it was compressed from"
        )
    problems: list[str] = []
    for spec in summary.compressed.values():
        theirs = base.get(spec.weight_name)
        if theirs is None:
            problems.append(f"compressed weight {spec.weight_name!r} is not in the base")
        elif theirs.shape != spec.shape:
            problems.append(f"compressed weight {spec.weight_name!r} is {list(spec.shape)}, "
                            f"base has {list(theirs.shape)}")
    for name, entry in summary.full_tensors.items():
        theirs = base.get(name)
        if theirs is None:
            problems.append(f"tensor {name!r} is not in the base")
        elif theirs.shape != entry.shape:
            problems.append(f"tensor {name!r} has shape {list(entry.shape)}, "
                            f"base has {list(theirs.shape)}")
    if problems:
        raise IncompatibleModels("the BitDelta delta", problems)


def _shared_metadata(headers: Mapping[str, SafetensorsHeader]) -> Mapping[str, str]:
    if not headers:
        raise InvalidDelta("the delta has no .safetensors file")
    ordered = sorted(headers.items())
    first_name, first = ordered[0]
    for name, header in ordered[1:]:
        if header.metadata != first.metadata:
            raise InvalidDelta(f"shards {first_name!r} and {name!r} carry different "
                               "__metadata__; they belong to different deltas")
    return first.metadata


def _check_format(meta: Mapping[str, str]) -> None:
    if meta.get("format") != FORMAT:
        raise InvalidDelta(
            f"this is not a BitDelta delta: its __metadata__ has format={meta.get('format')!r}, "
            f"expected {FORMAT!r} (LoRA adapters are pushed as PEFT adapters instead)"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise InvalidDelta(
            f"BitDelta format version {meta.get('format_version')!r} is not supported; this "
            f"deltahub reads version {FORMAT_VERSION}: upgrade deltahub or re-compress"
        )
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise InvalidDelta(f"the delta's __metadata__ lacks {', '.join(missing)}; re-compress it")


def _parse_compressed(meta: Mapping[str, str]) -> tuple[ScaleMode, dict[str, CompressedSpec]]:
    try:
        mode = ScaleMode(meta["scale_mode"])
    except ValueError:
        raise InvalidDelta(f"scale_mode {meta['scale_mode']!r} is not 'row' or 'tensor'") from None
    modules = _json_field(meta, "compressed_modules", list)
    shapes = _json_field(meta, "compressed_shapes", dict)
    dtypes = _json_field(meta, "compressed_dtypes", dict)
    if not modules or not all(isinstance(m, str) for m in modules) or len(set(modules)) != len(
            modules):
        raise InvalidDelta("compressed_modules must be a non-empty list of distinct module names")
    if set(shapes) != set(modules) or set(dtypes) != set(modules):
        raise InvalidDelta("compressed_shapes and compressed_dtypes must have exactly the "
                           "modules of compressed_modules")
    compressed: dict[str, CompressedSpec] = {}
    for module in sorted(modules):
        shape, dtype = shapes[module], dtypes[module]
        if not (isinstance(shape, list) and len(shape) == 2
                and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            raise InvalidDelta(f"compressed_shapes[{module!r}] must be [N, K], got {shape!r}")
        if dtype not in FLOAT_DTYPES:
            raise InvalidDelta(f"compressed_dtypes[{module!r}] must be a float dtype, got "
                               f"{dtype!r}")
        compressed[module] = CompressedSpec(module, (shape[0], shape[1]), dtype)
    return mode, compressed


def _json_field(meta: Mapping[str, str], key: str, kind: type) -> Any:
    try:
        # Strict: the metadata comes from clients; deep nesting or NaN must not get past.
        value = strictjson.loads(meta[key], f"__metadata__ {key}")
    except InvalidJSON as exc:
        raise InvalidDelta(f"__metadata__ {key} is not valid JSON ({exc.cause})") from exc
    if not isinstance(value, kind):
        raise InvalidDelta(f"__metadata__ {key} must be a JSON {kind.__name__}")
    return value


def _check_tensors(entries: Mapping[str, TensorEntry], compressed: Mapping[str, CompressedSpec],
                   mode: ScaleMode) -> dict[str, StoredTensor]:
    """Bits and scale for every compressed module; the rest are full tensors."""
    problems: list[str] = []
    for spec in compressed.values():
        n, k = spec.shape
        _check_part(entries.get(bits_key(spec.module)), bits_key(spec.module), "I32",
                    bits_shape(n, k), problems)
        _check_part(entries.get(scale_key(spec.module)), scale_key(spec.module), "F32",
                    scale_shape(mode, n), problems)
        if spec.weight_name in entries:
            problems.append(f"{spec.weight_name!r} is stored both compressed and in full")
    codec_names = {f(m) for m in compressed for f in (bits_key, scale_key)}
    full: dict[str, StoredTensor] = {}
    for name, entry in sorted(entries.items()):
        if name in codec_names:
            continue
        if name.endswith((BITS_SUFFIX, SCALE_SUFFIX)):
            problems.append(f"{name!r} belongs to no module of compressed_modules")
        else:
            full[name] = StoredTensor(name, entry.dtype, entry.shape)
    if problems:
        raise InvalidDelta("the BitDelta delta is malformed: " + "; ".join(problems[:20]))
    return full


def _check_part(entry: TensorEntry | None, name: str, dtype: str, shape: tuple[int, ...],
                problems: list[str]) -> None:
    if entry is None:
        problems.append(f"missing {name!r} ({dtype} {list(shape)})")
    elif entry.dtype != dtype or entry.shape != shape:
        problems.append(f"{name!r} is {entry.dtype} {list(entry.shape)}, expected {dtype} "
                        f"{list(shape)}")


def check_bits_padding(module: str, bits: torch.Tensor, k: int) -> None:
    """Padding bits past K must be 0 (DESIGN.md); set ones mean a corrupt or foreign file."""
    used = k % BITS_PER_WORD
    if used and bits.shape[0] and bool((bits[-1] >> used).ne(0).any()):
        raise InvalidDelta(f"{bits_key(module)!r} has padding bits set past K={k}; the delta "
                           "is corrupt: re-compress it")
