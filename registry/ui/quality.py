"""An adapter's evaluation and distillation, read out of its `quality` JSON for a page.

A job writes both (registry/jobs/runner.py `_quality`), but a pushed adapter's quality
is whatever its pusher's report held, so every field is checked for its type here and
a missing or odd one shows as "–" rather than breaking the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# What the adapter page says gain kept is, in one line.
GAIN_KEPT_MEANING = ("Gain kept = (base loss − compressed loss) / (base loss − fine-tune "
                     "loss): the share of the fine-tune's improvement over its base that the "
                     "compressed adapter keeps (1.000 keeps all of it, 0 none).")
MAX_ROWS = 64  # a report names at most 8 data sets; a pushed one may claim more


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Score:
    loss: float | None
    perplexity: float | None

    @classmethod
    def of(cls, value: Any) -> Score:
        found = _mapping(value)
        return cls(_float(found.get("loss")), _float(found.get("perplexity")))


@dataclass(frozen=True)
class EvaluationRow:
    name: str
    tokens: int | None
    base: Score
    finetune: Score
    compressed: Score
    gain_kept: float | None


def evaluation(quality: dict[str, Any]) -> list[EvaluationRow]:
    """`quality.evaluation.datasets`, one row per data set (the first is the headline)."""
    rows = _mapping(quality.get("evaluation")).get("datasets")
    if not isinstance(rows, list):
        return []
    return [EvaluationRow(str(r.get("name", "")), _int(r.get("tokens")), Score.of(r.get("base")),
                          Score.of(r.get("finetune")), Score.of(r.get("compressed")),
                          _float(r.get("gain_kept")))
            for r in rows[:MAX_ROWS] if isinstance(r, dict)]


@dataclass(frozen=True)
class Distillation:
    initial_loss: float | None
    final_loss: float | None
    steps: int | None
    lr: float | None
    dataset: str | None  # the registered data set the job pinned, when a job made it
    calibration: list[str]  # its files as used: "name (rows × seq_len tokens)"


def _calibration(distill: dict[str, Any]) -> list[str]:
    sets = distill.get("calibration")
    if isinstance(sets, list):
        found = []
        for s in sets[:MAX_ROWS]:
            if isinstance(s, dict):
                rows, seq = _int(s.get("rows")), _int(s.get("seq_len"))
                shape = f" ({rows} rows × {seq} tokens)" if rows is not None and seq else ""
                found.append(f"{s.get('name', '')}{shape}")
        return found
    named = distill.get("data", distill.get("dataset"))
    if isinstance(named, list):
        return [str(n) for n in named[:MAX_ROWS]]
    return [str(named)] if named is not None else []


def distillation(quality: dict[str, Any], params: dict[str, Any]) -> Distillation | None:
    """`quality.distillation` as a summary; None when the adapter was not distilled."""
    distill = quality.get("distillation")
    if not isinstance(distill, dict):
        return None
    # A job's adapter records the job's options under params.codec (registry/jobs/queue.py).
    pinned = _mapping(_mapping(_mapping(params.get("codec")).get("distill")).get("dataset"))
    name = pinned.get("name")
    return Distillation(
        _float(distill.get("initial_loss", quality.get("distill_loss_initial"))),
        _float(distill.get("final_loss", quality.get("distill_loss_final"))),
        _int(distill.get("steps")), _float(distill.get("lr")),
        name if isinstance(name, str) else None, _calibration(distill))
