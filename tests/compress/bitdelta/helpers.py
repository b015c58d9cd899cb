"""Helpers shared by the BitDelta tests: models with a few tensors changed, deltas."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compress.bitdelta import ScaleMode, compress_bitdelta
from compress.bitdelta.codec import CompressedDelta
from compress.tensorio import Checkpoint
from kernels import pack_signs


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


@dataclass(frozen=True)
class Reference:
    bits: torch.Tensor
    scale: torch.Tensor
    delta_sq: float
    finetune_sq: float
    error_sq: float


def reference(delta32: torch.Tensor, finetune32: torch.Tensor | None, mode: ScaleMode
              ) -> Reference:
    """The slow, plain encoding of a float32 ΔW (and the fine-tune, for its norm)."""
    n, k = delta32.shape
    bits = pack_signs(delta32)
    l1 = torch.sum(delta32.abs(), dim=1).double()  # float32 row sums, then float64
    if mode is ScaleMode.ROW:
        scale = (l1 / k).float()
    else:
        scale = torch.tensor(float(l1.sum()) / (n * k), dtype=torch.float32)
    delta_sq = float(delta32.double().square().sum())
    finetune_sq = float(finetune32.double().square().sum()) if finetune32 is not None else 0.0
    a = scale.double()
    if mode is ScaleMode.ROW:
        error_sq = delta_sq - 2.0 * float((a * l1).sum()) + k * float((a * a).sum())
    else:
        value = float(scale)
        error_sq = delta_sq - 2.0 * value * float(l1.sum()) + n * k * value * value
    return Reference(bits, scale, delta_sq, finetune_sq, max(error_sq, 0.0))


def pair(shape: tuple[int, int], dtype: torch.dtype, seed: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    row_scale = torch.logspace(-2, 0, shape[0]).unsqueeze(1)  # rows of unlike magnitude
    base = (torch.randn(shape, generator=g) * row_scale).to(dtype)
    finetune = (base.float() + 0.05 * row_scale * torch.randn(shape, generator=g)).to(dtype)
    finetune.view(-1)[::7] = base.view(-1)[::7]  # exact zeros of ΔW: bit 1 (ΔW ≥ 0)
    return base, finetune


def assert_same(got: CompressedDelta, want: Reference, *, finetune: bool) -> None:
    assert got.bits.dtype == torch.int32
    assert torch.equal(got.bits, want.bits)
    assert got.scale.dtype == torch.float32
    assert torch.equal(got.scale, want.scale)
    assert got.delta_sq == pytest.approx(want.delta_sq, rel=1e-5)
    # error² = ‖ΔW‖² − …: what float32 rounding of ‖ΔW‖² moves it by, and no more
    assert got.error_sq == pytest.approx(want.error_sq, rel=1e-5, abs=1e-5 * want.delta_sq)
    if finetune:
        assert got.finetune_sq == pytest.approx(want.finetune_sq, rel=1e-5)
