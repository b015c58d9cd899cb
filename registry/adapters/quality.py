"""An adapter's quality: the JSON document its row holds and the API serves, read once.

Two sources build one: a compression job (`from_job`) and a pushed report.json
(`from_report`); `parse` reads one back, from a row or from the API's JSON on a client
(this module is plain Python: the client installs without pydantic or torch). A pushed
report is the pusher's text, so reading is lenient: a figure of the wrong type reads as
None and a row that is not an object is skipped, never an error; the document itself is
served as it was built. docs/architecture.md ("Typed documents").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# A JSON object as `json.loads` gives it: each reader narrows what it takes out of one.
JSONObject = dict[str, object]

# Per-tensor and per-module lists of a codec report: in the pushed file, which stays
# downloadable, but not in the adapter's row, which every GET of the adapter carries (a
# job keeps a compact copy of some: registry/jobs/layer_rows.py).
DETAIL_KEYS = frozenset({"tensors", "files", "modules", "saved", "left_out",
                         "unchanged_targets", "omitted"})
JOB_SOURCE = "deltahub job"
# The relative errors a quality states, each under one name for every codec (a figure
# under a name means that quantity, whoever measured it).
ERROR_QUANTITIES = {
    "output_rel_error": "‖y − y_ft‖ / ‖y_ft‖: a layer's outputs on probe inputs (verification)",
    "delta_rel_error": "‖ΔW − ΔŴ‖ / ‖ΔW‖: the error relative to the fine-tune's change",
    "weight_rel_error": "‖W_ft − Ŵ_ft‖ / ‖W_ft‖: the error relative to the fine-tuned weights",
}
LORA_FACTORS_AS_STORED = "factor errors measured as stored"
# compress.quality.report.MIN_GAIN_NATS, restated: this module is read where torch is not.
MIN_CHANGE_NATS = 1e-3


def finite(value: object) -> float | None:
    """`value` as a float when it is a finite JSON number (a bool is not one), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer no float holds
        return None
    return number if math.isfinite(number) else None


def integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: object) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _objects(value: object) -> list[JSONObject] | None:
    """A list's objects (anything else in it skipped); None when `value` is no list."""
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else None


@dataclass(frozen=True)
class Score:
    loss: float | None
    perplexity: float | None

    @classmethod
    def parse(cls, value: object) -> Score:
        found = _object(value)
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
        rows = _objects(value.get("datasets")) or []
        return cls(_text(value.get("compressed_kind")), tuple(
            EvaluatedSet(str(r.get("name", "")), integer(r.get("tokens")),
                         Score.parse(r.get("base")), Score.parse(r.get("finetune")),
                         Score.parse(r.get("compressed")), finite(r.get("gain_kept")),
                         integer(r.get("rows")), _flag(r.get("truncated")))
            for r in rows), integer(value.get("max_tokens")), integer(value.get("max_batches")),
            integer(value.get("batch_size")))

    def bound(self) -> str:
        """What each data set was cut to, in words."""
        if self.max_tokens is not None:
            return (f"each data set scored whole, up to a budget of {self.max_tokens:,} "
                    "predicted tokens")
        if self.max_batches is not None and self.batch_size is not None:
            return (f"each data set's first {self.max_batches * self.batch_size:,} rows at "
                    f"most ({self.max_batches} batches of {self.batch_size})")
        return "each data set scored whole"


@dataclass(frozen=True)
class Distillation:
    initial_loss: float | None
    final_loss: float | None
    steps: int | None
    lr: float | None
    calibration: tuple[str, ...]  # its files as used: "name (rows × seq_len tokens)"
    curve: tuple[tuple[float | None, float | None], ...]  # (step, loss)

    @classmethod
    def parse(cls, value: object, headline: JSONObject) -> Distillation | None:
        if not isinstance(value, dict):
            return None
        return cls(finite(value.get("initial_loss", headline.get("distill_loss_initial"))),
                   finite(value.get("final_loss", headline.get("distill_loss_final"))),
                   integer(value.get("steps")), finite(value.get("lr")),
                   _calibration(value), _curve(value))


def _calibration(distill: JSONObject) -> tuple[str, ...]:
    sets = _objects(distill.get("calibration"))
    if sets is not None:
        found = []
        for s in sets:
            rows, seq = integer(s.get("rows")), integer(s.get("seq_len"))
            shape = f" ({rows} rows × {seq} tokens)" if rows is not None and seq else ""
            found.append(f"{s.get('name', '')}{shape}")
        return tuple(found)
    named = distill.get("data", distill.get("dataset"))
    if isinstance(named, list):
        return tuple(str(n) for n in named)
    return (str(named),) if named is not None else ()


def _curve(distill: JSONObject) -> tuple[tuple[float | None, float | None], ...]:
    """Loss by step: `losses` (a list) or `history` ([{step, loss}])."""
    losses = distill.get("losses") or distill.get("loss_curve")
    if isinstance(losses, list):
        return tuple((float(i), finite(v)) for i, v in enumerate(losses))
    return tuple((finite(r.get("step")), finite(r.get("loss")))
                 for r in _objects(distill.get("history")) or [])


@dataclass(frozen=True)
class LayerError:
    """A layer's relative output error against the fine-tune (verification)."""

    module: str
    error: float | None


@dataclass(frozen=True)
class ModuleFigures:
    """A LoRA module: its errors, rank kept and leading singular values."""

    module: str
    error: float | None  # delta_rel_error (the report's `error`)
    rank: int | None
    singular_values: tuple[float | None, ...]
    weight_error: float | None = None  # weight_rel_error; None in reports before it


@dataclass(frozen=True)
class TensorFigures:
    name: str
    kind: str | None  # "bitdelta" for a compressed one
    weight_error: float | None  # weight_rel_error
    delta_error: float | None = None  # delta_rel_error


def _layers(rows: list[JSONObject] | None) -> tuple[LayerError, ...] | None:
    return None if rows is None else tuple(
        LayerError(str(r.get("module")), finite(r.get("compression_rel_error"))) for r in rows)


def _modules(rows: list[JSONObject] | None) -> tuple[ModuleFigures, ...] | None:
    if rows is None:
        return None
    return tuple(ModuleFigures(
        str(r.get("module")), finite(r.get("delta_rel_error", r.get("error"))),
        integer(r.get("rank")),
        tuple(finite(v) for v in values) if isinstance(values := r.get("singular_values"),
                                                      list) else (),
        finite(r.get("weight_rel_error")))
        for r in rows)


def _tensors(rows: list[JSONObject] | None) -> tuple[TensorFigures, ...] | None:
    return None if rows is None else tuple(
        TensorFigures(str(r.get("name")), _text(r.get("kind")), finite(r.get("weight_rel_error")),
                      finite(r.get("delta_rel_error")))
        for r in rows)


@dataclass(frozen=True)
class Quality:
    """A quality document (`document`, as stored and served) and its figures."""

    document: JSONObject
    source: str | None
    gain_kept: float | None  # on the first evaluation data set
    gain_kept_on: str | None  # that data set's name
    output_rel_error_max: float | None  # verification's worst layer (BitDelta)
    weight_rel_error_max: float | None  # the worst ‖W_ft − Ŵ_ft‖/‖W_ft‖ stated (LoRA)
    verified_with: str | None
    evaluation: Evaluation | None
    distillation: Distillation | None
    verify_layers: tuple[LayerError, ...] | None  # `verify.layers`
    checked_layers: tuple[LayerError, ...] | None  # a `deltahub verify` report's `layers`
    modules: tuple[ModuleFigures, ...] | None
    tensors: tuple[TensorFigures, ...] | None
    delta_rel_error_max: float | None = None  # the worst ‖ΔW − ΔŴ‖/‖ΔW‖ stated (LoRA)

    @classmethod
    def parse(cls, document: Mapping[str, object]) -> Quality:
        doc = dict(document)
        checked = "kernel_failures" in _object(doc.get("summary"))
        evaluation = Evaluation.parse(doc.get("evaluation"))
        delta_max, weight_max = _lora_maxima(doc)
        return cls(
            doc, _text(doc.get("source")), _headline(finite(doc.get("gain_kept")), evaluation),
            _text(doc.get("gain_kept_on")), finite(doc.get("output_rel_error_max")),
            weight_max,
            _text(doc.get("verified_with")), evaluation,
            Distillation.parse(doc.get("distillation"), doc),
            _layers(_objects(_object(doc.get("verify")).get("layers"))),
            _layers(_objects(doc.get("layers"))) if checked else None,
            _modules(_objects(doc.get("modules"))), _tensors(_objects(doc.get("tensors"))),
            delta_max)

    @classmethod
    def parse_optional(cls, document: object) -> Quality | None:
        """A row's or a response's `quality` (null: none)."""
        return cls.parse(document) if isinstance(document, dict) else None

    def worst_error(self) -> float | None:
        """What a job's max_error bounds: the worst output error when verified, else a
        LoRA's worst delta-relative factor error (as it always has)."""
        if self.output_rel_error_max is not None:
            return self.output_rel_error_max
        lora = self.verified_with == LORA_FACTORS_AS_STORED
        return self.delta_rel_error_max if lora else None

    def error_maxima(self) -> dict[str, float | None]:
        """The worst of each quantity of ERROR_QUANTITIES, stated or from the layers."""
        tensors = [t for t in self.tensors or () if t.kind == "bitdelta"]
        modules = self.modules or ()
        return {
            "output_rel_error": self.output_rel_error_max,
            "delta_rel_error": _worst(self.delta_rel_error_max,
                                      [t.delta_error for t in tensors]
                                      + [m.error for m in modules]),
            "weight_rel_error": _worst(self.weight_rel_error_max,
                                       [t.weight_error for t in tensors]
                                       + [m.weight_error for m in modules]),
        }

    def figures(self) -> list[tuple[str, object]]:
        """The top-level figures (no nested tables), in the document's order."""
        return [(k, v) for k, v in self.document.items()
                if v is None or isinstance(v, bool | int | float | str)]

    def summary(self, max_string_chars: int) -> Quality:
        """The top-level figures only, strings past `max_string_chars` left out."""
        kept = {k: v for k, v in self.figures()
                if not isinstance(v, str) or len(v) <= max_string_chars}
        if "gain_kept" in kept:  # as ranked: the evaluation, left out here, may void it
            kept["gain_kept"] = self.gain_kept
        return Quality.parse(kept)


def _worst(stated: float | None, values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return stated if stated is not None else (max(found) if found else None)


def _lora_maxima(doc: JSONObject) -> tuple[float | None, float | None]:
    """(delta_rel_error_max, weight_rel_error_max). A LoRA quality stored before the two
    were told apart put its delta-relative factor error under `weight_rel_error_max`
    (without `delta_rel_error_max`): that figure reads as what it is."""
    weight = finite(doc.get("weight_rel_error_max"))
    if "delta_rel_error_max" in doc:
        return finite(doc.get("delta_rel_error_max")), weight
    legacy = (doc.get("verified_with") == LORA_FACTORS_AS_STORED
              or "max_error" in _object(doc.get("summary")))
    return (weight, None) if legacy else (None, weight)


def _headline(gain: float | None, evaluation: Evaluation | None) -> float | None:
    """The headline gain kept, which listings rank by: only where the first data set shows
    the fine-tune improving (elsewhere a higher figure is a worse loss, or noise). A
    report stored before that rule may state one for a regressing set: it is dropped."""
    first = evaluation.datasets[0] if evaluation and evaluation.datasets else None
    if first is not None and first.change in ("regressed", "unchanged"):
        return None
    return gain


def from_job(job: int, method: str, codec: Mapping[str, object],
             layers: Mapping[str, object], verified: Mapping[str, object] | None,
             distilled: Mapping[str, object] | None,
             evaluated: Mapping[str, object] | None, evaluated_on: str | None = None) -> Quality:
    """A job's quality: headline figures at the top (listings show those), the codec's
    summary, the distillation, the verification and the evaluation below, then the
    compacted per-layer `layers` (`tensors`, `modules`). `evaluated_on` names the first
    evaluation data set as registered (the evaluation itself names its files)."""
    headline: JSONObject = {"source": JOB_SOURCE, "job": job, "method": method}
    if evaluated is not None:
        # On the first data set, where the fine-tune improved it (`_headline`).
        headline["gain_kept"] = _headline(finite(evaluated.get("gain_kept")),
                                          Evaluation.parse(evaluated))
        headline["gain_kept_on"] = evaluated_on  # the registry's name of that data set
    if distilled is not None:
        headline.update(distilled=True, distill_loss_initial=distilled.get("initial_loss"),
                        distill_loss_final=distilled.get("final_loss"))
    if verified is not None:
        headline.update(output_rel_error_max=verified["compression_rel_error_max"],
                        output_rel_error_mean=verified["compression_rel_error_mean"],
                        verified_with=f"{verified['backend']} on {verified['device']}")
    elif method == "lora":
        summary = _object(codec.get("summary"))
        headline.update(delta_rel_error_max=summary.get("max_error"),
                        delta_rel_error_mean=summary.get("mean_error"),
                        weight_rel_error_max=summary.get("weight_rel_error_max"),
                        weight_rel_error_mean=summary.get("weight_rel_error_mean"),
                        verified_with=LORA_FACTORS_AS_STORED)
    if method == "bitdelta":  # the same quantities a LoRA states, for listings
        worst = Quality.parse(dict(layers)).error_maxima()
        headline.update(delta_rel_error_max=worst["delta_rel_error"],
                        weight_rel_error_max=worst["weight_rel_error"])
    details = {k: v for k, v in codec.items() if k not in DETAIL_KEYS}
    return Quality.parse({**headline, "codec": details, "distillation": distilled,
                          "verify": verified, "evaluation": evaluated, **layers})


def from_report(report: Mapping[str, object], *, source: str, lora: bool,
                pictures: Sequence[str]) -> Quality:
    """The quality a pushed report states: its summary, marked with `source` as the
    client's own, since the server did not measure it.

    A LoRA report's error figures (`lora`) also go to the top level under the names a
    LoRA compression job uses (ERROR_QUANTITIES), so listings show pushed and compressed
    adapters alike.
    """
    document = {k: v for k, v in report.items() if k not in DETAIL_KEYS}
    summary = report.get("summary")
    if lora and isinstance(summary, dict):
        document.update(delta_rel_error_max=summary.get("max_error"),
                        delta_rel_error_mean=summary.get("mean_error"),
                        weight_rel_error_max=summary.get("weight_rel_error_max"),
                        weight_rel_error_mean=summary.get("weight_rel_error_mean"))
    document["source"] = source
    if pictures:
        document["pictures"] = list(pictures)
    return Quality.parse(document)
