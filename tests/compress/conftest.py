"""Tiny models shared by the codec tests, built once per session (no downloads).

- `tiny_base`, `tiny_finetune`: a float32 tiny Llama (tests/models.py) and a fine-tune of it;
- `tiny_pair(dtype)`: the same pair stored in float16 or bfloat16 (or float32), cached;
- `tiny_sharded_finetune`: `tiny_finetune` re-saved as three shards plus an index.

They are session-scoped and shared: treat them as read-only (copy before changing one).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from compress.tensorio import Checkpoint, ShardedWriter, plan_for
from tests.models import make_finetune, make_tiny_llama


@dataclass(frozen=True)
class TinyPair:
    base: Path
    finetune: Path


TinyPairFactory = Callable[[torch.dtype], TinyPair]


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPairFactory:
    cache: dict[torch.dtype, TinyPair] = {}

    def make(dtype: torch.dtype = torch.float32) -> TinyPair:
        if dtype not in cache:
            root = tmp_path_factory.mktemp(f"tiny-{str(dtype).removeprefix('torch.')}")
            base = make_tiny_llama(root / "base", seed=0, dtype=dtype)
            cache[dtype] = TinyPair(base, make_finetune(base, root / "finetune", seed=1))
        return cache[dtype]

    return make


@pytest.fixture(scope="session")
def tiny_base(tiny_pair: TinyPairFactory) -> Path:
    return tiny_pair(torch.float32).base


@pytest.fixture(scope="session")
def tiny_finetune(tiny_pair: TinyPairFactory) -> Path:
    return tiny_pair(torch.float32).finetune


@pytest.fixture(scope="session")
def tiny_sharded_finetune(tiny_finetune: Path, tmp_path_factory: pytest.TempPathFactory
                          ) -> Path:
    out = tmp_path_factory.mktemp("tiny-sharded") / "finetune"
    out.mkdir()
    with Checkpoint.open(tiny_finetune) as ckpt:
        names = ckpt.manifest.names
        plan = [plan_for(n, ckpt.entry(n).torch_dtype, ckpt.entry(n).shape) for n in names]
        limit = sum(p.nbytes for p in plan) // 3 + 1  # three shards of about a third
        writer = ShardedWriter(out, plan, {"format": "pt"}, max_shard_bytes=limit)
        for name in names:
            writer.write(name, ckpt.tensor(name))
        writer.close()
    shutil.copyfile(tiny_finetune / "config.json", out / "config.json")
    return out


@pytest.fixture
def forwards() -> Iterator[list[str]]:
    """The class of every whole causal LM run (teacher, student, or a model evaluated), in
    order: tests count model runs to show where a cancelled run stopped."""
    runs: list[str] = []

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        if type(module).__name__.endswith("ForCausalLM"):
            runs.append(type(module).__name__)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield runs
    handle.remove()
