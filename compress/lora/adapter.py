"""Write extracted LoRA factors as the files `peft.save_pretrained` writes.

`lora_alpha = r` everywhere, so PEFT's scaling is exactly 1; one unsharded safetensors file
(peft loads no sharded adapter), whose header waits for every rank, so the factors wait in a
`FactorSpill` on disk. See docs/codecs.md, "LoRA extraction".
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from compress.lora.format import (
    ADAPTER_WEIGHTS,
    check_lora_against_base,
    parse_adapter_config,
    saved_module_key,
)
from compress.lora.report import ModuleResult
from compress.targets import matches, module_kind, owner_module
from compress.tensorio import (
    Checkpoint,
    Manifest,
    PlannedTensor,
    ShardedWriter,
    plan_for,
    read_header,
)

_ONE_FILE = 2**62  # a shard limit no adapter reaches


class FactorSpill:
    """LoRA factors parked in a file until every rank is known and the header can be written."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: io.BufferedRandom = path.open("w+b")
        self._where: dict[str, tuple[int, torch.dtype, tuple[int, ...]]] = {}

    def put(self, key: str, tensor: torch.Tensor) -> None:
        self._file.seek(0, io.SEEK_END)
        self._where[key] = (self._file.tell(), tensor.dtype, tuple(tensor.shape))
        self._file.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)

    def names(self) -> list[str]:
        return list(self._where)

    def plan(self, key: str) -> PlannedTensor:
        _, dtype, shape = self._where[key]
        return plan_for(key, dtype, shape)

    def get(self, key: str) -> torch.Tensor:
        offset, dtype, shape = self._where[key]
        buffer = bytearray(math.prod(shape) * dtype.itemsize)
        self._file.seek(offset)
        if self._file.readinto(buffer) != len(buffer):
            raise OSError(f"{self._path}: short read of spilled factor {key!r}")
        return torch.frombuffer(buffer, dtype=torch.uint8).view(dtype).reshape(shape)

    def remove(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


def write_adapter_weights(out_dir: Path, spill: FactorSpill, finetune: Checkpoint,
                          modules_to_save: Sequence[str]) -> Path:
    """adapter_model.safetensors: the spilled factors and every tensor of the saved modules."""
    saved = set(modules_to_save)
    sources: dict[str, str | None] = {key: None for key in spill.names()}  # None: the spill
    sources.update({saved_module_key(s.name): s.name for s in finetune.manifest
                    if owner_module(s.name) in saved})
    plan = []
    for key in sorted(sources):
        name = sources[key]
        entry = finetune.entry(name) if name is not None else None
        plan.append(spill.plan(key) if entry is None
                    else plan_for(key, entry.torch_dtype, entry.shape))
    stem = ADAPTER_WEIGHTS.removesuffix(".safetensors")
    writer = ShardedWriter(out_dir, plan, {"format": "pt"}, stem=stem, max_shard_bytes=_ONE_FILE)
    for item in plan:
        name = sources[item.name]
        writer.write(item.name, spill.get(item.name) if name is None else finetune.tensor(name))
    writer.close()
    return out_dir / ADAPTER_WEIGHTS


def adapter_config(modules: Sequence[ModuleResult], manifest: Manifest,
                   modules_to_save: Sequence[str], base_model_name_or_path: str
                   ) -> dict[str, Any]:
    """The adapter_config.json for these ranks, with scaling alpha/r = 1 for every module."""
    ranks = {m.module: m.rank for m in modules}
    counts = Counter(ranks.values())
    r = max(counts, key=lambda value: (counts[value], value))
    pattern = {module: rank for module, rank in sorted(ranks.items()) if rank != r}
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": r, "lora_alpha": r, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
        "target_modules": _target_modules_field(sorted(ranks), manifest),
        "modules_to_save": list(modules_to_save) or None,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "init_lora_weights": True, "use_rslora": False, "use_dora": False,
        "inference_mode": True,
    }


def _target_modules_field(adapted: list[str], manifest: Manifest) -> list[str]:
    """Module kinds (q_proj, ...) if they select exactly `adapted`, else the full names."""
    kinds = sorted({module_kind(m) for m in adapted})
    every_module = {prefix for spec in manifest for prefix in _prefixes(spec.name)}
    selected = sorted(m for m in every_module if matches(m, kinds))
    return kinds if selected == adapted else adapted


def _prefixes(tensor_name: str) -> list[str]:
    parts = tensor_name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def self_check(weights: Path, config: dict[str, Any], base: Manifest) -> None:
    """Run the registry's own adapter validation on what was just written.

    Catches, before anything is published, any disagreement between the rank_pattern
    (matched as peft matches it) and the factor shapes.
    """
    check_lora_against_base(parse_adapter_config(config), read_header(weights).tensors, base)
