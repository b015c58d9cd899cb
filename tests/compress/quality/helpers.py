"""What the quality tests share: the evaluation settings and the held-out data sets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import typer

from compress.quality import QualityReport, evaluate_quality
from registry.cli import evaluate_commands
from tests.finetune import FinetunePair

# Small enough for the suite (64 rows of 64 tokens per set), large enough that gains of
# a tenth of a nat stand far above the spread between rows.
BATCH_SIZE, MAX_BATCHES, SEQ_LEN = 16, 4, 64


def heldout(pair: FinetunePair) -> list[Path]:
    """The fine-tune's domain first (the headline gain kept), then the base's."""
    return [pair.python.heldout, pair.prose.heldout]


def evaluate(pair: FinetunePair, compressed: str | os.PathLike[str],
             data: Sequence[str | os.PathLike[str]] | None = None) -> QualityReport:
    return evaluate_quality(pair.base, pair.finetune, compressed,
                            heldout(pair) if data is None else data, batch_size=BATCH_SIZE,
                            max_batches=MAX_BATCHES, seq_len=SEQ_LEN)


def cli() -> typer.Typer:
    """An app holding `evaluate`, as registry/cli/app.py will once it lists the command."""
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """A group, so that the command keeps its name."""

    evaluate_commands.register(app)
    return app
