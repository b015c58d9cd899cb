"""Documents as a person reads them: settings in plain words, figures with their unit.

Pages never print a Python value (`None`, `False`, a dict's repr): a setting reads
"Distillation: off", a figure says what it is, its unit, what it was measured on and
which way is good. The error quantities' formulas are ERROR_QUANTITIES' (one name each,
registry/adapters/quality.py); the raw documents stay one click away, as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from registry.adapters.quality import (
    DELTA_BEFORE,
    DETAIL_KEYS,
    ERROR_QUANTITIES,
    JOB_SOURCE,
    WEIGHT_BEFORE,
    Quality,
)
from registry.jobs.params import BitDeltaParams, EvaluateStage, JobParams, LoraParams
from registry.ui.plots import distillation_loss_unit

MAX_LIST_ITEMS = 12  # a longer list reads as its first items and "… (N in all)"
# Words for keys that documents share; any other key reads as itself, spaced.
LABELS = {
    "r": "Rank", "rank": "Rank", "ranks": "Ranks kept", "lora_alpha": "LoRA alpha",
    "target_modules": "Target modules", "targets": "Target modules",
    "module_count": "Modules factored", "saved_tensors": "Tensors kept in full",
    "parameter_count": "Parameters", "scale_mode": "Scales",
    "compressed_count": "Tensors compressed", "full_tensors": "Tensors kept in full",
    "full_count": "Tensors kept in full", "base_manifest_digest": "Base manifest digest",
    "finetune_manifest_digest": "Fine-tune manifest digest", "tool_version": "Made by",
    "job": "Job", "codec": "Job settings", "verify": "Verification", "max_error": "Error bound",
    "target_error": "Target error", "max_rank": "Rank at most", "factor_dtype": "Factor type",
    "targets_only": "Only the target modules", "format": "Format",
    "format_version": "Format version", "version": "Format version", "mode": "Rank chosen by",
    "source": "Figures from", "method": "Method", "verified_with": "Verified with",
    "distilled": "Distilled", "gain_kept_on": "Gain kept measured on", "sketch": "SVD sketch",
    "base": "Base read from", "finetune": "Fine-tune read from", "pictures": "Pictures pushed",
    "weight_errors_before_distillation": "Weight errors measured before distillation",
}
SCALE_MODES = {"row": "one per output row", "tensor": "one per tensor"}


def label(key: str) -> str:
    return LABELS.get(key) or key.replace("_", " ").capitalize()


def plain(value: object) -> str:
    """Any JSON value in words: – for none, yes/no, lists joined, objects as `k: v`."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "–"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, list):
        shown = ", ".join(plain(v) for v in value[:MAX_LIST_ITEMS]) or "none"
        return shown + (f", … ({len(value)} in all)" if len(value) > MAX_LIST_ITEMS else "")
    if isinstance(value, Mapping):
        return "; ".join(f"{label(str(k)).lower()}: {plain(v)}" for k, v in value.items()) or "–"
    return str(value)


@dataclass(frozen=True)
class Setting:
    label: str
    value: str


def _evaluate_words(stage: EvaluateStage | None) -> str:
    if stage is None:
        return "off"
    rows = "every row" if stage.max_batches is None else \
        f"at most {stage.max_batches} batches of {stage.batch_size} rows"
    budget = f", at most {stage.max_tokens:,} tokens per data set" if stage.max_tokens else ""
    return (f"on {', '.join(d.name for d in stage.datasets)} (the first is the headline); "
            f"{rows} × {stage.seq_len} tokens{budget}")


def job_settings(params: JobParams) -> list[Setting]:
    """A job's options as the compress form asked for them, in words."""
    found = [Setting("Target modules", plain(params.targets)),
             Setting("Verification", {"off": "off", "auto": "on (GPU if there is one)",
                                      "gpu": "on a GPU", "cpu": "on the CPU"}.get(
                                          str(params.verify), str(params.verify))),
             Setting("Error bound", "none" if params.max_error is None
                     else f"fail if the worst error exceeds {params.max_error:g}")]
    if isinstance(params, BitDeltaParams):
        found.append(Setting("Scales", SCALE_MODES.get(params.scale_mode, params.scale_mode)))
        d = params.distill
        found.append(Setting("Distillation", "off" if d is None else (
            f"on {d.dataset.name}: {d.steps} steps, learning rate {d.lr:g}, "
            f"batches of {d.batch_size} × {d.seq_len} tokens, seed {d.seed}")))
    if isinstance(params, LoraParams):
        found += [Setting("Rank", "chosen per module" if params.rank is None else str(params.rank)),
                  Setting("Target error", plain(params.target_error)),
                  Setting("Rank at most", plain(params.max_rank)),
                  Setting("Other changed tensors", "left out" if params.targets_only
                          else "kept in full")]
    found.append(Setting("Evaluation", _evaluate_words(params.evaluate)))
    return found


def adapter_settings(params: Mapping[str, object]) -> list[Setting]:
    """An adapter's `params` record in words (the job that made it, if one did, is shown
    apart: `job_settings`)."""
    found = []
    for key, value in params.items():
        if key in ("peft", "codec", "job"):
            continue  # "Where it can be served"; the job's own settings
        if key == "scale_mode" and isinstance(value, str):
            found.append(Setting(label(key), SCALE_MODES.get(value, value)))
        else:
            found.append(Setting(label(key), plain(value)))
    return found


@dataclass(frozen=True)
class Figure:
    key: str  # where it is in the quality document (dotted)
    what: str
    value: str
    unit: str
    measured_on: str
    good: str


@dataclass(frozen=True)
class _Spec:
    what: str
    unit: str
    good: str
    measured_on: Callable[[Quality], str]
    show: Callable[[float], str] = lambda v: f"{v:.4g}"


_RELATIVE = "relative (a ratio of norms)"
_LOWER = "lower; 0 is exact"


def _weights(quality: Quality) -> str:
    when = " (before distillation changed α)" if quality.weight_errors_predate_distillation \
        else " (after distillation, verified)" if quality.remeasured_after_distillation else ""
    return f"the weights of each compressed layer, no data{when}"


def _weights_before(_: Quality) -> str:
    return "the weights of each compressed layer, no data (before distillation changed α)"


def _codec_weights(quality: Quality) -> str:
    """The codec's own figures: a distilled delta's predate its distillation."""
    distilled = quality.weight_errors_predate_distillation or \
        quality.remeasured_after_distillation
    return _weights_before(quality) if distilled else _weights(quality)


def _outputs(quality: Quality) -> str:
    found = quality.verified_with
    # A job verifies the delta it uploads: the distilled one, when it distilled.
    after = quality.document.get("distilled") is True and quality.source == JOB_SOURCE
    return ("probe inputs through each compressed layer" + (f", {found}" if found else "")
            + (" (after distillation)" if after else ""))


def _calibration(quality: Quality) -> str:
    found = quality.distillation
    return ", ".join(found.calibration) if found and found.calibration else "calibration data"


def _error(quantity: str, which: str, on: Callable[[Quality], str]) -> _Spec:
    formula = ERROR_QUANTITIES[quantity].partition(": ")[0]
    return _Spec(f"{quantity}, {which}: {formula}", _RELATIVE, _LOWER, on)


def _everything(_: Quality) -> str:
    return "the whole delta"


FIGURES: dict[str, _Spec] = {
    "gain_kept": _Spec("Gain kept (share of the fine-tune's change in loss kept)",
                       "share: 1 is all of it", "higher, where the fine-tune improved the set",
                       lambda q: q.gain_kept_on or "the first evaluation data set"),
    "output_rel_error_max": _error("output_rel_error", "worst layer", _outputs),
    "output_rel_error_mean": _error("output_rel_error", "mean over layers", _outputs),
    "delta_rel_error_max": _error("delta_rel_error", "worst layer", _weights),
    "delta_rel_error_mean": _error("delta_rel_error", "mean over layers", _weights),
    "weight_rel_error_max": _error("weight_rel_error", "worst layer", _weights),
    "weight_rel_error_mean": _error("weight_rel_error", "mean over layers", _weights),
    DELTA_BEFORE: _error("delta_rel_error", "worst layer before distillation", _weights_before),
    WEIGHT_BEFORE: _error("weight_rel_error", "worst layer before distillation",
                          _weights_before),
    "codec.delta_rel_error": _error("delta_rel_error", "all layers together", _codec_weights),
    "codec.weight_rel_error": _error("weight_rel_error", "all layers together",
                                     _codec_weights),
    "distill_loss_initial": _Spec("Distillation loss before training the scales",
                                  "(the distillation's)", "lower; 0 matches the fine-tune",
                                  _calibration),
    "distill_loss_final": _Spec("Distillation loss after training the scales",
                                "(the distillation's)", "lower; 0 matches the fine-tune",
                                _calibration),
    # Not the page's "Compression ratio" (the fine-tune's files over the adapter's): the
    # codec's, over the tensors it compressed alone, so a name of its own.
    "codec.ratio": _Spec("Codec ratio on the compressed tensors",
                         "× (those tensors' bytes / their delta's bytes)",
                         "higher", _everything, lambda v: f"{v:.3g}"),
    "codec.bytes_in": _Spec("Target tensors' size, uncompressed", "bytes", "–", _everything,
                            lambda v: f"{v:,.0f}"),
    "codec.bytes_out": _Spec("Delta's size", "bytes", "lower", _everything,
                             lambda v: f"{v:,.0f}"),
    "codec.seconds": _Spec("Compression time", "seconds", "lower", _everything,
                           lambda v: f"{v:.3g}"),
    "summary.adapter_bytes": _Spec("Adapter's size", "bytes", "lower", _everything,
                                   lambda v: f"{v:,.0f}"),
    "summary.finetune_bytes": _Spec("Fine-tune tensors' size", "bytes", "–", _everything,
                                    lambda v: f"{v:,.0f}"),
}
# A LoRA report's summary figures that `from_report` also states at the top level.
MIRRORED = frozenset({"max_error", "mean_error", "delta_rel_error_max", "delta_rel_error_mean",
                      "weight_rel_error_max", "weight_rel_error_mean"})
# Shown elsewhere on the page (their own tables), or per layer (the plots).
SHOWN_ELSEWHERE = frozenset({"evaluation", "distillation", "verify", "layers"}) | DETAIL_KEYS


def _lookup(document: Mapping[str, object], dotted: str) -> object:
    value: object = document
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def figures(quality: Quality | None) -> list[Figure]:
    """The figures a page lists, each with what it is, its unit, what it was measured on
    and which way is good. A pushed report's figures of another name are in `made_with`."""
    if quality is None:
        return []
    found = []
    for key, spec in FIGURES.items():
        value = _lookup(quality.document, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            continue
        shown = spec.show(float(value))
        unit = distillation_loss_unit(quality.document) if key.startswith("distill_loss") \
            else spec.unit
        found.append(Figure(key, spec.what, shown, unit, spec.measured_on(quality), spec.good))
    return found


def made_with(quality: Quality | None) -> list[Setting]:
    """The rest of the quality document's top level, in words (how it was made, the
    codec's other figures); per-layer lists and the sections shown elsewhere left out."""
    if quality is None:
        return []
    listed = {key.partition(".")[0] for key in FIGURES if "." not in key}
    found = []
    for key, value in quality.document.items():
        if key in listed or key in SHOWN_ELSEWHERE:
            continue
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items()
                     if f"{key}.{k}" not in FIGURES and k not in DETAIL_KEYS | MIRRORED}
            if not value:
                continue
        found.append(Setting(label(key), plain(value)))
    return found
