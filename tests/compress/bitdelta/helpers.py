"""Helpers shared by the BitDelta tests: models with a few tensors changed, deltas."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from compress.bitdelta import ScaleMode, compress_bitdelta
from compress.tensorio import Checkpoint


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    with Checkpoint.open(path) as ckpt:
        return {name: ckpt.tensor(name) for name in ckpt.manifest.names}


def variant(model: Path, out: Path, changes: Mapping[str, torch.Tensor | None]) -> Path:
    """A copy of a single-file model with some tensors replaced (or removed, for None)."""
    out.mkdir()
    tensors = load_file(model / "model.safetensors")
    for name, value in changes.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    shutil.copyfile(model / "config.json", out / "config.json")
    return out


def make_delta(base: Path, finetune: Path, out: Path, scale: ScaleMode = ScaleMode.ROW) -> Path:
    compress_bitdelta(base, finetune, out, scale=scale)
    return out
