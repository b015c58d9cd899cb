"""What an evaluation found: losses, perplexities and the gain kept, per data set.

gain kept = (loss_base − loss_compressed) / (loss_base − loss_finetune): the share of the
fine-tune's change in loss that the compressed model keeps (1 as the fine-tune, 0 as the
base), whichever way the fine-tune moved the loss; each data set says which
(`finetune_change`), since where the fine-tune regressed a higher figure is a worse loss.
None when the change is under MIN_GAIN_NATS (noise over noise). The headline is the first
data set's, and only where the fine-tune improved it. Defined once, with a worked example:
docs/architecture.md, "Gain kept".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MIN_GAIN_NATS = 1e-3  # per token: the dead-band of "no meaningful change"


class Change(StrEnum):
    """What the fine-tune did to the base's loss on a data set."""

    IMPROVED = "improved"
    REGRESSED = "regressed"
    UNCHANGED = "unchanged"  # within MIN_GAIN_NATS: gain kept is undefined there


def finetune_change(loss_base: float, loss_finetune: float) -> Change | None:
    """Which way the fine-tune moved the loss; None when a loss is not finite."""
    change = loss_finetune - loss_base
    if not math.isfinite(change):
        return None
    if abs(change) < MIN_GAIN_NATS:
        return Change.UNCHANGED
    return Change.IMPROVED if change < 0 else Change.REGRESSED


def gain_kept(loss_base: float, loss_finetune: float, loss_compressed: float) -> float | None:
    """The share of the fine-tune's loss change that the compressed model keeps."""
    gain = loss_base - loss_finetune
    if not math.isfinite(gain) or abs(gain) < MIN_GAIN_NATS:
        return None
    return (loss_base - loss_compressed) / gain


@dataclass(frozen=True)
class Score:
    """Mean next-token loss (nats per predicted token) and its perplexity."""

    loss: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else math.inf  # exp overflows past 709

    def to_dict(self) -> dict[str, Any]:
        return {"loss": _finite(self.loss), "perplexity": _finite(self.perplexity)}


@dataclass(frozen=True)
class DatasetQuality:
    name: str
    rows: int
    seq_len: int
    tokens: int  # predicted tokens: rows × (seq_len − 1)
    base: Score
    finetune: Score
    compressed: Score
    truncated: bool = False  # a bound (the token budget, max_batches) cut the set short

    @property
    def gain_kept(self) -> float | None:
        return gain_kept(self.base.loss, self.finetune.loss, self.compressed.loss)

    @property
    def change(self) -> Change | None:
        return finetune_change(self.base.loss, self.finetune.loss)

    def gain_kept_note(self) -> str | None:
        """Why gain kept is missing, or what it means here when the fine-tune regressed."""
        if self.change is Change.UNCHANGED:
            return (f"undefined: the fine-tune changed the loss by less than "
                    f"{MIN_GAIN_NATS} nats per token")
        if self.change is None:
            return "undefined: a loss is not finite"
        if self.change is Change.REGRESSED:
            return ("the fine-tune made this set worse: a higher figure keeps more of that "
                    "regression (0 recovers the base)")
        return None

    def to_dict(self) -> dict[str, Any]:
        delta = self.finetune.loss - self.base.loss
        return {"name": self.name, "rows": self.rows, "seq_len": self.seq_len,
                "tokens": self.tokens, "base": self.base.to_dict(),
                "finetune": self.finetune.to_dict(), "compressed": self.compressed.to_dict(),
                "gain_kept": self.gain_kept,
                "finetune_change": None if self.change is None else self.change.value,
                "finetune_loss_change": _finite(delta),
                "gain_kept_note": self.gain_kept_note(), "truncated": self.truncated}


@dataclass
class QualityReport:
    base: str
    finetune: str
    compressed: str
    compressed_kind: str  # "bitdelta", "lora" or "model"
    batch_size: int
    max_batches: int | None
    dtype: str
    device: str
    datasets: list[DatasetQuality] = field(default_factory=list)
    resident_bytes: int = 0  # the largest model held (one at a time), parameters and buffers
    seconds: float = 0.0
    max_tokens: int | None = None  # the token budget per data set (None: none)

    @property
    def gain_kept(self) -> float | None:
        """The headline: gain kept on the first data set (the fine-tune's domain), only
        where the fine-tune improved it (elsewhere a higher figure is not better)."""
        first = self.datasets[0] if self.datasets else None
        return first.gain_kept if first and first.change is Change.IMPROVED else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gain_kept": self.gain_kept,
            "base": self.base, "finetune": self.finetune, "compressed": self.compressed,
            "compressed_kind": self.compressed_kind, "batch_size": self.batch_size,
            "max_batches": self.max_batches, "max_tokens": self.max_tokens,
            "dtype": self.dtype, "device": self.device,
            "datasets": [d.to_dict() for d in self.datasets],
            "resident_bytes": self.resident_bytes, "seconds": self.seconds,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def _finite(value: float) -> float | None:
    # JSON has no NaN or Infinity; a perplexity past 1e304 is reported as null.
    return value if math.isfinite(value) else None
