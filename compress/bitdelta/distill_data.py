"""Calibration data for scale distillation: the rows, and which rows each step trains on.

Rows of every file are pooled and cut to one length; each step takes the next `batch_size`
rows of a seeded random order, drawn lazily, so every row is seen once before any twice and
memory does not grow with the number of steps. See docs/codecs.md, "Scale distillation".
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from compress.errors import InvalidParameter
from compress.modeling.data import DataKind, data_kind, load_eval_data
from compress.modeling.tokenizer import TextTokenizer, model_tokenizer
from compress.tensorio import Checkpoint


@dataclass(frozen=True)
class CalibrationSet:
    """One calibration file as used: its name, rows and tokens per row."""

    name: str
    rows: int
    seq_len: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "rows": self.rows, "seq_len": self.seq_len,
                "tokens": self.rows * self.seq_len}


@dataclass(frozen=True)
class Calibration:
    rows: torch.Tensor  # int64 [n, seq], every file's rows pooled
    sets: list[CalibrationSet]

    @property
    def seq_len(self) -> int:
        return int(self.rows.shape[1])


def load_calibration(data: Sequence[str | os.PathLike[str]], base: Checkpoint,
                     finetune: Checkpoint, tokenizer: TextTokenizer | None, *, seq_len: int,
                     max_rows: int) -> Calibration:
    """Every file's rows (at most `max_rows` each), checked against the vocabulary, pooled."""
    if not data:
        raise InvalidParameter("give at least one calibration data file")
    if tokenizer is None and any(data_kind(path) is not DataKind.TOKENS for path in data):
        tokenizer = model_tokenizer(base.source, finetune.source)
    vocab = (base.config or {}).get("vocab_size")
    loaded = [load_eval_data(path, tokenizer=tokenizer, seq_len=seq_len, max_rows=max_rows,
                             vocab_size=vocab if isinstance(vocab, int) else None)
              for path in data]
    length = min(min(d.seq_len, seq_len) for d in loaded)
    rows = torch.cat([d.rows[:, :length] for d in loaded])
    sets = [CalibrationSet(d.name, int(d.rows.shape[0]), length) for d in loaded]
    return Calibration(rows.contiguous(), sets)


@dataclass(frozen=True)
class BatchSchedule:
    """Which rows each step trains on (docs/codecs.md); iterate it for the batches."""

    rows: int
    steps: int
    batch_size: int
    seed: int

    def __iter__(self) -> Iterator[torch.Tensor]:
        """int64 [batch_size] row indices per step, in step order, the same on every pass."""
        generator = torch.Generator().manual_seed(self.seed)
        order, used = torch.empty(0, dtype=torch.int64), 0
        for _ in range(self.steps):
            parts, wanted = [], self.batch_size
            while wanted:
                if used == order.numel():
                    order, used = torch.randperm(self.rows, generator=generator), 0
                take = min(wanted, order.numel() - used)
                parts.append(order[used:used + take])
                used, wanted = used + take, wanted - take
            yield parts[0] if len(parts) == 1 else torch.cat(parts)


def batch_schedule(rows: int, steps: int, batch_size: int, seed: int) -> BatchSchedule:
    if rows < 1:
        raise InvalidParameter("the calibration data has no rows")
    return BatchSchedule(rows, steps, batch_size, seed)


def data_names(data: Sequence[str | os.PathLike[str]]) -> list[str]:
    return [Path(path).name for path in data]
