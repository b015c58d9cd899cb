"""The compressed model being judged: a BitDelta delta, a LoRA adapter, or a whole model.

`open_variant(path, base)` recognises the directory and validates it against the base from
headers and small JSON, with the formats' own validators; `Variant.tensors(base)` yields its
weights one tensor at a time for `build_model`.
See docs/codecs.md, "Quality evaluation and shared model code".
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from compress.bitdelta import (
    DELTA_FILE,
    DELTA_INDEX,
    apply_bitdelta,
    inspect_bitdelta,
    load_bitdelta,
)
from compress.errors import IncompatibleModels, InvalidDelta, InvalidModel
from compress.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraAdapterConfig,
    LoraAdapterSummary,
    check_lora_against_base,
    lora_key,
    parse_adapter_config,
    saved_module_key,
)
from compress.lora.format import KEY_PREFIX
from compress.tensorio import Checkpoint, Manifest, ensure_finite, shape_mismatches, strictjson

MAX_ADAPTER_CONFIG_BYTES = 2**20  # a config with the largest rank_pattern allowed fits


class VariantKind(StrEnum):
    BITDELTA = "bitdelta"
    LORA = "lora"
    MODEL = "model"


class CheckpointState(Mapping[str, torch.Tensor]):
    """A checkpoint as a read-only state dict: each tensor is read when asked for, not kept."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self._checkpoint = checkpoint

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._checkpoint.manifest:
            raise KeyError(name)
        return self._checkpoint.finite_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._checkpoint.manifest.names)

    def __len__(self) -> int:
        return len(self._checkpoint.manifest)


@dataclass(frozen=True)
class BitDeltaVariant:
    path: Path
    config: dict[str, Any] | None  # the fine-tune's, which the delta carries
    kind: VariantKind = VariantKind.BITDELTA

    def tensors(self, base: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
        delta = load_bitdelta(self.path, base.manifest)
        merged = apply_bitdelta(CheckpointState(base), delta)
        del delta
        for name in list(merged):
            yield name, merged.pop(name)  # let each go once the model holds its copy


@dataclass(frozen=True)
class LoraVariant:
    path: Path
    adapter: LoraAdapterConfig
    summary: LoraAdapterSummary
    saved_keys: dict[str, str]  # base tensor name -> its key in the adapter
    rslora: bool
    config: None = None  # the base's config.json applies
    kind: VariantKind = VariantKind.LORA

    def tensors(self, base: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
        with Checkpoint.open(self.path / ADAPTER_WEIGHTS) as adapter:
            for name in base.manifest.names:
                yield name, self._adapted(name, base, adapter)

    def scale(self, module: str) -> float:
        rank = self.summary.ranks[module]
        alpha = self.adapter.alpha_of(module)
        return alpha / math.sqrt(rank) if self.rslora else alpha / rank

    def _adapted(self, name: str, base: Checkpoint, adapter: Checkpoint) -> torch.Tensor:
        saved = self.saved_keys.get(name)  # peft loads these into the base, LoRA or not
        weight = adapter.finite_tensor(saved) if saved else base.finite_tensor(name)
        module, _, leaf = name.rpartition(".")
        if module not in self.summary.ranks:
            return weight
        if leaf == "weight":
            return _added(name, weight, self.scale(module) * self._delta(module, adapter))
        bias_key = f"{KEY_PREFIX}{module}.lora_B.bias"
        if leaf == "bias" and bias_key in adapter.manifest:
            return _added(name, weight, self.scale(module) * adapter.finite_tensor(bias_key))
        return weight

    def _delta(self, module: str, adapter: Checkpoint) -> torch.Tensor:
        """B·A in float32, laid out like the base weight."""
        if lora_key(module, "lora_A") in adapter.manifest:
            a = adapter.finite_tensor(lora_key(module, "lora_A")).float()
            b = adapter.finite_tensor(lora_key(module, "lora_B")).float()
            return (b @ a).T if self.adapter.fan_in_fan_out else b @ a
        # peft's embedding factors: A [r, num_embeddings], B [dim, r]; the weight is [num, dim]
        a = adapter.finite_tensor(f"{KEY_PREFIX}{module}.lora_embedding_A").float()
        b = adapter.finite_tensor(f"{KEY_PREFIX}{module}.lora_embedding_B").float()
        return (b @ a).T


@dataclass(frozen=True)
class ModelVariant:
    path: Path
    config: dict[str, Any] | None
    kind: VariantKind = VariantKind.MODEL

    def tensors(self, base: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
        with Checkpoint.open(self.path) as model:
            for name in model.manifest.names:
                yield name, model.finite_tensor(name)


Variant = BitDeltaVariant | LoraVariant | ModelVariant


def variant_kind(path: str | os.PathLike[str]) -> VariantKind:
    """What the directory holds, by its files."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidModel(f"{path} is not a directory; give a BitDelta delta, a LoRA adapter "
                           "or a model directory")
    names = {entry.name for entry in path.iterdir()}
    if ADAPTER_CONFIG in names:
        return VariantKind.LORA
    if DELTA_FILE in names or DELTA_INDEX in names:
        return VariantKind.BITDELTA
    if any(name.endswith(".safetensors") for name in names):
        return VariantKind.MODEL
    raise InvalidModel(f"{path} holds neither a LoRA adapter ({ADAPTER_CONFIG}), a BitDelta "
                       f"delta ({DELTA_FILE}) nor a safetensors model")


def open_variant(path: str | os.PathLike[str], base: Manifest) -> Variant:
    """Recognise and validate the variant at `path` against the base's manifest."""
    path = Path(path)
    kind = variant_kind(path)
    if kind is VariantKind.LORA:
        return _open_lora(path, base)
    with Checkpoint.open(path) as checkpoint:
        if kind is VariantKind.BITDELTA:
            inspect_bitdelta(checkpoint.headers, None, base)  # the index was checked on open
            return BitDeltaVariant(path, checkpoint.config)
        mismatches = shape_mismatches(base, checkpoint.manifest)
        if mismatches:
            raise IncompatibleModels(f"the model {path}", mismatches)
        return ModelVariant(path, checkpoint.config)


def _open_lora(path: Path, base: Manifest) -> LoraVariant:
    config_path = path / ADAPTER_CONFIG
    if config_path.stat().st_size > MAX_ADAPTER_CONFIG_BYTES:
        raise InvalidDelta(f"{config_path} is over {MAX_ADAPTER_CONFIG_BYTES} bytes; no "
                           "adapter config needs that")
    raw = strictjson.loads(config_path.read_bytes(), str(config_path))
    adapter = parse_adapter_config(raw)
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise InvalidDelta(f"{path} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    with Checkpoint.open(weights) as checkpoint:
        entries = checkpoint.headers[ADAPTER_WEIGHTS].tensors
    summary = check_lora_against_base(adapter, entries, base)
    saved_keys = {name: _saved_key(name, entries) for name in summary.saved_tensors}
    return LoraVariant(path, adapter, summary, saved_keys, rslora=bool(raw.get("use_rslora")))


def _saved_key(name: str, entries: Mapping[str, object]) -> str:
    """The adapter key of a saved base tensor: plain, or with peft's `.base_layer`."""
    owner, _, leaf = name.rpartition(".")
    for key in (saved_module_key(name), f"{KEY_PREFIX}{owner}.base_layer.{leaf}"):
        if key in entries:
            return key
    raise InvalidDelta(f"the adapter carries {name!r} under a key deltahub does not know")


def _added(name: str, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """weight + delta in float32, back in the weight's dtype, checked finite."""
    merged = (weight.float() + delta).to(weight.dtype)
    ensure_finite(name, merged, "the base with the LoRA adapter applied")
    return merged
