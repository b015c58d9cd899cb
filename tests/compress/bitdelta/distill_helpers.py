"""What the distillation tests share: one thread, and deltas of the real tiny fine-tune."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from compress.bitdelta import ScaleMode, compress_bitdelta
from tests.finetune import FinetunePair

# Enough to see α move, little enough for a fast test (about a second).
QUICK_STEPS = 4


@dataclass(frozen=True)
class Deltas:
    row: Path
    tensor: Path

    def of(self, mode: ScaleMode) -> Path:
        return self.row if mode is ScaleMode.ROW else self.tensor


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Bit-identical runs need one thread count; one is also the fastest on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_deltas(pair: FinetunePair, root: Path) -> Deltas:
    for mode in ScaleMode:
        compress_bitdelta(pair.base, pair.finetune, root / mode.value, scale=mode, workers=1)
    return Deltas(root / ScaleMode.ROW.value, root / ScaleMode.TENSOR.value)


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every file in `directory`, by name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}
