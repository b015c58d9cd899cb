"""Models and helpers for the LoRA extraction tests (the tiny Llama pair itself comes from
tests/compress/conftest.py: `tiny_base`, `tiny_finetune`).

`make_planted_finetune` moves every target projection of the tiny Llama by an exactly
low-rank ΔW whose rank differs from module to module (the planted ranks), and every
norm, the embedding and lm_head by a little noise: extraction at a tight target error
must find exactly the planted ranks, and writes a non-trivial rank_pattern.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from compress.targets import DEFAULT_TARGET_MODULES, module_name

TIGHT_ERROR = 1e-3  # far below any truncation error of these deltas, far above round-off


def planted_rank(tensor_name: str) -> int:
    """1..5, fixed per name (crc32 is stable across runs, unlike hash())."""
    return 1 + zlib.crc32(tensor_name.encode()) % 5


def is_target(tensor_name: str) -> bool:
    return any(module_name(tensor_name).endswith("." + t) for t in DEFAULT_TARGET_MODULES)


def make_planted_finetune(base: Path, out: Path, seed: int = 2) -> Path:
    generator = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True)
    tensors = load_file(base / "model.safetensors")
    tuned = {}
    for name, w in tensors.items():
        if is_target(name):
            r = planted_rank(name)
            left = torch.randn(w.shape[0], r, generator=generator)
            right = torch.randn(r, w.shape[1], generator=generator)
            tuned[name] = w + 0.02 * (left @ right) / r
        else:
            tuned[name] = w + 0.01 * torch.randn(w.shape, generator=generator)
    save_file(tuned, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text((base / "config.json").read_text())
    return out


def write_model(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """A bare safetensors model (no config) for layouts the tiny Llama lacks."""
    directory.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / "model.safetensors")
    return directory


def read_config(adapter: Path) -> dict[str, object]:
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert isinstance(config, dict)
    return config
