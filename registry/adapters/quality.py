"""An adapter's quality: the JSON document its row holds and the API serves, read once.

Two sources build one: a compression job (`from_job`) and a pushed report.json
(`from_report`); `parse` reads one back, from a row or from the API's JSON on a client
(this module is plain Python: the client installs without pydantic or torch). A pushed
report is the pusher's text, so reading is lenient: a figure of the wrong type reads as
None and a row that is not an object is skipped, never an error; the document itself is
served as it was built. docs/architecture.md ("Typed documents").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from registry.adapters.json_values import (
    JSONObject,
    finite,
    integer,
    json_object,
    json_objects,
    string,
)
from registry.adapters.quality_evaluation import (
    MIN_CHANGE_NATS,
    EvaluatedSet,
    Evaluation,
    Score,
    change_of,
)

__all__ = ["MIN_CHANGE_NATS", "EvaluatedSet", "Evaluation", "JSONObject", "Score",
           "change_of", "finite", "integer"]


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
# Set on a distilled job's quality: its per-layer weight errors are the undistilled delta's.
BEFORE_DISTILLATION = "weight_errors_before_distillation"
# A distilled job's quality whose verification measured the weight errors of the delta it
# uploads: those are its `*_rel_error_max`, and the codec's (before distillation changed
# α) are kept under these names.
DELTA_BEFORE = "delta_rel_error_max_before_distillation"
WEIGHT_BEFORE = "weight_rel_error_max_before_distillation"


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
    sets = json_objects(distill.get("calibration"))
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
                 for r in json_objects(distill.get("history")) or [])


@dataclass(frozen=True)
class LayerError:
    """A layer's relative output error against the fine-tune (verification), and the
    verified delta's weight errors when verification measured them."""

    module: str
    error: float | None
    delta_error: float | None = None  # delta_rel_error
    weight_error: float | None = None  # weight_rel_error


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
        LayerError(str(r.get("module")), finite(r.get("compression_rel_error")),
                   finite(r.get("delta_rel_error")), finite(r.get("weight_rel_error")))
        for r in rows)


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
        TensorFigures(str(r.get("name")), string(r.get("kind")), finite(r.get("weight_rel_error")),
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
        checked = "kernel_failures" in json_object(doc.get("summary"))
        evaluation = Evaluation.parse(doc.get("evaluation"))
        delta_max, weight_max = _lora_maxima(doc)
        return cls(
            doc, string(doc.get("source")), _headline(finite(doc.get("gain_kept")), evaluation),
            string(doc.get("gain_kept_on")), finite(doc.get("output_rel_error_max")),
            weight_max,
            string(doc.get("verified_with")), evaluation,
            Distillation.parse(doc.get("distillation"), doc),
            _layers(json_objects(json_object(doc.get("verify")).get("layers"))),
            _layers(json_objects(doc.get("layers"))) if checked else None,
            _modules(json_objects(doc.get("modules"))), _tensors(json_objects(doc.get("tensors"))),
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

    @property
    def weight_errors_predate_distillation(self) -> bool:
        """Whether the weight errors are the codec's, measured before scale distillation
        changed α (a job's verification, run after it, is of the distilled delta)."""
        return self.document.get(BEFORE_DISTILLATION) is True or (
            self.document.get("distilled") is True and self.source == JOB_SOURCE
            and not self.remeasured_after_distillation)

    @property
    def remeasured_after_distillation(self) -> bool:
        """Whether the top-level weight errors are the distilled delta's (verification
        measured them), the codec's earlier ones kept under DELTA_BEFORE / WEIGHT_BEFORE."""
        return WEIGHT_BEFORE in self.document or DELTA_BEFORE in self.document

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
        return summary_of(self.document, self.gain_kept, max_string_chars)


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
              or "max_error" in json_object(doc.get("summary")))
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
        summary = json_object(codec.get("summary"))
        headline.update(delta_rel_error_max=summary.get("max_error"),
                        delta_rel_error_mean=summary.get("mean_error"),
                        weight_rel_error_max=summary.get("weight_rel_error_max"),
                        weight_rel_error_mean=summary.get("weight_rel_error_mean"),
                        verified_with=LORA_FACTORS_AS_STORED)
    if method == "bitdelta":  # the same quantities a LoRA states, for listings
        worst = Quality.parse(dict(layers)).error_maxima()
        headline.update(delta_rel_error_max=worst["delta_rel_error"],
                        weight_rel_error_max=worst["weight_rel_error"])
        after = {k: finite(verified.get(k)) for k in ("delta_rel_error_max",
                                                      "weight_rel_error_max")} \
            if verified is not None else {}
        if distilled is not None and None not in after.values() and after:
            # Verification measured the delta it uploads: the distilled one.
            headline.update({DELTA_BEFORE: worst["delta_rel_error"],
                             WEIGHT_BEFORE: worst["weight_rel_error"], **after})
        elif distilled is not None:  # the codec measured them; distillation then moved α
            headline[BEFORE_DISTILLATION] = True
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


def summary_of(document: Mapping[str, object], headline_gain: float | None,
               max_string_chars: int) -> Quality:
    """`Quality.parse(document).summary(...)` without parsing the nested tables (a
    listing's cost per item): `headline_gain` is the document's headline gain kept, as
    `Quality.gain_kept` gives it and the adapters' `gain_kept` column keeps it."""
    kept = {k: v for k, v in document.items()
            if v is None or (isinstance(v, bool | int | float) or
                             (isinstance(v, str) and len(v) <= max_string_chars))}
    if "gain_kept" in kept:  # as ranked: the evaluation, left out here, may void it
        kept["gain_kept"] = headline_gain
    return Quality.parse(kept)
