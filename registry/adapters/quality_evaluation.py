"""An evaluation as a quality document holds it (compress/quality `QualityReport.to_dict()`),
read leniently; plain Python, as registry/adapters/quality.py, which re-exports it."""

from __future__ import annotations

from dataclasses import dataclass

from registry.adapters.json_values import (
    boolean,
    finite,
    integer,
    json_object,
    json_objects,
    string,
)

# compress.quality.report.MIN_GAIN_NATS, restated: this module is read where torch is not.
MIN_CHANGE_NATS = 1e-3


@dataclass(frozen=True)
class Score:
    loss: float | None
    perplexity: float | None

    @classmethod
    def parse(cls, value: object) -> Score:
        found = json_object(value)
        return cls(finite(found.get("loss")), finite(found.get("perplexity")))


def change_of(base: Score, finetune: Score) -> str | None:
    """"improved", "regressed" or "unchanged": what the fine-tune did to the base's loss
    (a report before this was stated says it through its losses); None when unknown."""
    if base.loss is None or finetune.loss is None:
        return None
    delta = finetune.loss - base.loss
    if abs(delta) < MIN_CHANGE_NATS:
        return "unchanged"
    return "improved" if delta < 0 else "regressed"


@dataclass(frozen=True)
class EvaluatedSet:
    name: str
    tokens: int | None
    base: Score
    finetune: Score
    compressed: Score
    gain_kept: float | None  # the share of the fine-tune's change kept, either direction
    rows: int | None = None  # rows scored
    truncated: bool | None = None  # a bound cut the set short (None: not stated)

    @property
    def change(self) -> str | None:
        return change_of(self.base, self.finetune)

    @property
    def loss_change(self) -> float | None:
        """The fine-tune's loss minus the base's (nats per token; negative: improved)."""
        if self.base.loss is None or self.finetune.loss is None:
            return None
        return self.finetune.loss - self.base.loss

    @property
    def gain_kept_shown(self) -> float | None:
        """Gain kept, None where the fine-tune changed nothing (a ratio of noise)."""
        return None if self.change == "unchanged" else self.gain_kept


@dataclass(frozen=True)
class Evaluation:
    """Losses and gain kept per data set (compress/quality `QualityReport.to_dict()`)."""

    compressed_kind: str | None
    datasets: tuple[EvaluatedSet, ...]  # the first is the headline
    max_tokens: int | None = None  # the token budget per data set, when one was stated
    max_batches: int | None = None
    batch_size: int | None = None

    @classmethod
    def parse(cls, value: object) -> Evaluation | None:
        if not isinstance(value, dict):
            return None
        rows = json_objects(value.get("datasets")) or []
        return cls(string(value.get("compressed_kind")), tuple(
            EvaluatedSet(str(r.get("name", "")), integer(r.get("tokens")),
                         Score.parse(r.get("base")), Score.parse(r.get("finetune")),
                         Score.parse(r.get("compressed")), finite(r.get("gain_kept")),
                         integer(r.get("rows")), boolean(r.get("truncated")))
            for r in rows), integer(value.get("max_tokens")), integer(value.get("max_batches")),
            integer(value.get("batch_size")))

    def bound(self) -> str:
        """What each data set was cut to, in words."""
        bounds = []
        if self.max_batches is not None and self.batch_size is not None:
            bounds.append(f"its first {self.max_batches * self.batch_size:,} rows "
                          f"({self.max_batches} batches of {self.batch_size})")
        if self.max_tokens is not None:
            bounds.append(f"a budget of {self.max_tokens:,} predicted tokens")
        return ("each data set scored whole" if not bounds
                else "each data set scored up to " + " and ".join(bounds))
