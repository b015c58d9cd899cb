"""The real fine-tune (tests/finetune.py) and its compressed variants, made once a session.

`measured` evaluates every variant once on the held-out splits of both domains; the
tests read its reports rather than running the models again. Session-scoped and shared:
treat every path as read-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from compress.bitdelta import compress_bitdelta
from compress.lora import extract_lora
from compress.quality import QualityReport
from tests.compress.quality.helpers import evaluate
from tests.finetune import FinetunePair

LORA_RANKS = (4, 16)


@dataclass(frozen=True)
class Variants:
    bitdelta: Path
    lora: dict[int, Path]  # rank -> adapter of the target projections only (targets_only)
    lora_saved: Path  # the top rank by default (embeddings, norms, lm_head carried)


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    # Exact equalities between runs need one thread count; one is also the fastest on a
    # shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def variants(finetune_pair: FinetunePair,
             tmp_path_factory: pytest.TempPathFactory) -> Variants:
    root = tmp_path_factory.mktemp("quality-variants")
    pair = finetune_pair
    compress_bitdelta(pair.base, pair.finetune, root / "bitdelta", workers=1)
    lora = {}
    for rank in LORA_RANKS:
        lora[rank] = root / f"lora-r{rank}"
        extract_lora(pair.base, pair.finetune, lora[rank], rank=rank, targets_only=True)
    saved = root / f"lora-r{LORA_RANKS[-1]}-saved"
    extract_lora(pair.base, pair.finetune, saved, rank=LORA_RANKS[-1])
    return Variants(root / "bitdelta", lora, saved)


@pytest.fixture(scope="session")
def measured(finetune_pair: FinetunePair, variants: Variants
             ) -> dict[str, QualityReport]:
    """Reports by variant: "bitdelta", "lora-r4", "lora-r16", "lora-r16-saved"."""
    paths = {"bitdelta": variants.bitdelta,
             **{f"lora-r{rank}": path for rank, path in variants.lora.items()},
             f"lora-r{LORA_RANKS[-1]}-saved": variants.lora_saved}
    return {name: evaluate(finetune_pair, path) for name, path in paths.items()}
