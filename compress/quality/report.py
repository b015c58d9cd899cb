"""What an evaluation found: losses, perplexities and the gain kept, per data set.

gain kept = (loss_base − loss_compressed) / (loss_base − loss_finetune): 1 as the fine-tune,
0 as the base; None when the fine-tune's gain is under MIN_GAIN_NATS (noise over noise).
See docs/codecs.md, "Quality evaluation and shared model code".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

MIN_GAIN_NATS = 1e-3  # per token


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

    @property
    def gain_kept(self) -> float | None:
        return gain_kept(self.base.loss, self.finetune.loss, self.compressed.loss)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows, "seq_len": self.seq_len,
                "tokens": self.tokens, "base": self.base.to_dict(),
                "finetune": self.finetune.to_dict(), "compressed": self.compressed.to_dict(),
                "gain_kept": self.gain_kept}


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

    @property
    def gain_kept(self) -> float | None:
        """The headline: gain kept on the first data set (the fine-tune's domain)."""
        return self.datasets[0].gain_kept if self.datasets else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "gain_kept": self.gain_kept,
            "base": self.base, "finetune": self.finetune, "compressed": self.compressed,
            "compressed_kind": self.compressed_kind, "batch_size": self.batch_size,
            "max_batches": self.max_batches, "dtype": self.dtype, "device": self.device,
            "datasets": [d.to_dict() for d in self.datasets],
            "resident_bytes": self.resident_bytes, "seconds": self.seconds,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"


def _finite(value: float) -> float | None:
    # JSON has no NaN or Infinity; a perplexity past 1e304 is reported as null.
    return value if math.isfinite(value) else None
