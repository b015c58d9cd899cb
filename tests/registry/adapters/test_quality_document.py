"""An adapter's quality as one typed document: one builder per source, read once, numbers
checked for finiteness in one place, and the JSON it stores and serves unchanged."""

from __future__ import annotations

import math
from typing import Any

import pytest

from compress.quality.report import MIN_GAIN_NATS
from registry.adapters.quality import (
    DETAIL_KEYS,
    ERROR_QUANTITIES,
    JOB_SOURCE,
    MIN_CHANGE_NATS,
    Evaluation,
    Quality,
    finite,
    from_job,
    from_report,
)
from registry.tables import Adapter


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, True, False, 10**400, "1.0",
                                   None, [1.0], {"v": 1.0}])
def test_only_finite_numbers_are_numbers(value: object) -> None:
    assert finite(value) is None


@pytest.mark.parametrize(("value", "number"), [(0, 0.0), (3, 3.0), (-2.5, -2.5), (1e308, 1e308)])
def test_finite_numbers_read_as_floats(value: object, number: float) -> None:
    assert finite(value) == number


def test_a_job_quality_keeps_its_json_shape() -> None:
    codec: dict[str, Any] = {"format": "bitdelta-report/1", "summary": {"ratio": 9.5},
                             "tensors": [{"name": "t", "kind": "bitdelta"}], "files": ["a"]}
    verified = {"compression_rel_error_max": 0.02, "compression_rel_error_mean": 0.01,
                "backend": "reference", "device": "cpu", "layers": []}
    evaluated = {"gain_kept": 0.9, "datasets": [{"name": "py", "gain_kept": 0.9}]}
    layers = {"tensors": [{"name": "t", "kind": "bitdelta", "weight_rel_error": 0.3}]}
    quality = from_job(7, "bitdelta", codec, layers, verified, None, evaluated, "py-set")
    assert list(quality.document) == [
        "source", "job", "method", "gain_kept", "gain_kept_on", "output_rel_error_max",
        "output_rel_error_mean", "verified_with", "delta_rel_error_max",
        "weight_rel_error_max", "codec", "distillation", "verify", "evaluation", "tensors"]
    assert quality.document["codec"] == {"format": "bitdelta-report/1",
                                         "summary": {"ratio": 9.5}}
    assert quality.source == JOB_SOURCE
    assert quality.gain_kept == 0.9
    assert quality.gain_kept_on == "py-set"  # the first data set, by its registered name
    assert quality.worst_error() == 0.02
    assert quality.verified_with == "reference on cpu"
    assert quality.evaluation is not None
    assert quality.evaluation.datasets[0].name == "py"
    assert quality.tensors is not None
    assert quality.tensors[0].weight_error == 0.3


def test_a_lora_job_states_its_weight_errors() -> None:
    codec = {"summary": {"max_error": 0.2, "mean_error": 0.1}, "modules": [{"module": "m"}]}
    quality = from_job(1, "lora", codec, {}, None, None, None)
    assert quality.worst_error() == 0.2
    assert quality.document["delta_rel_error_mean"] == 0.1
    assert quality.delta_rel_error_max == 0.2  # ‖ΔW − BA‖/‖ΔW‖, under its own name
    assert quality.weight_rel_error_max is None  # this summary does not state it
    assert "modules" not in quality.document["codec"]  # type: ignore[operator]


def test_a_pushed_report_keeps_its_summary_without_the_detail() -> None:
    report = {key: [] for key in DETAIL_KEYS} | {
        "format": "lora-report/1", "summary": {"max_error": 0.25, "mean_error": 0.125},
        "gain_kept": 0.5}
    quality = from_report(report, source="report.json pushed with the adapter", lora=True,
                          pictures=["errors.png"])
    assert not DETAIL_KEYS & set(quality.document)
    assert quality.delta_rel_error_max == 0.25
    assert quality.weight_rel_error_max is None
    assert quality.document["pictures"] == ["errors.png"]
    assert quality.gain_kept == 0.5
    not_lora = from_report(report, source="s", lora=False, pictures=[])
    assert not_lora.weight_rel_error_max is None
    assert not_lora.delta_rel_error_max is None
    assert "pictures" not in not_lora.document


def test_a_document_of_odd_types_reads_as_missing_figures_and_is_kept_as_is() -> None:
    """A pushed report's figures are the pusher's text: wrong types read as None, the
    document itself is stored and served untouched."""
    odd: dict[str, Any] = {
        "gain_kept": "high", "output_rel_error_max": True, "verified_with": 3,
        "evaluation": {"datasets": [5, {"name": "d", "base": [], "gain_kept": math.inf}]},
        "distillation": {"history": "none", "steps": 2.5, "calibration": [1, {"rows": 2}]},
        "verify": {"layers": {"module": "x"}}, "modules": "m", "tensors": [None]}
    quality = Quality.parse(odd)
    assert quality.document == odd
    assert quality.gain_kept is None
    assert quality.output_rel_error_max is None
    assert quality.verified_with is None
    assert quality.evaluation is not None
    [row] = quality.evaluation.datasets
    assert (row.name, row.base.loss, row.gain_kept) == ("d", None, None)
    assert quality.distillation is not None
    assert quality.distillation.steps is None
    assert quality.distillation.curve == ()
    assert quality.distillation.calibration == ("",)
    assert quality.verify_layers is None
    assert quality.modules is None
    assert quality.tensors == ()


def test_a_row_stored_before_the_typing_reads_back() -> None:
    """A job's quality as rows already hold it (no field added or renamed since)."""
    row: dict[str, Any] = {
        "source": "deltahub job", "job": 3, "method": "bitdelta", "distilled": True,
        "distill_loss_initial": 2.0, "distill_loss_final": 1.5,
        "codec": {}, "distillation": {"losses": [2.0, 1.5], "lr": 1e-4},
        "verify": {"layers": [{"module": "q", "compression_rel_error": 0.01}]},
        "evaluation": None}
    quality = Quality.parse(row)
    assert quality.distillation is not None
    assert quality.distillation.initial_loss == 2.0  # from the headline
    assert quality.distillation.curve == ((0.0, 2.0), (1.0, 1.5))
    assert quality.verify_layers is not None
    assert quality.verify_layers[0].error == 0.01
    assert quality.evaluation is None
    assert Quality.parse(quality.document) == quality


@pytest.mark.parametrize(("quality", "gain_kept"), [
    ({"gain_kept": 0.75, "nested": {"a": 1}}, 0.75), ({"gain_kept": math.nan}, None),
    ({"gain_kept": "0.75"}, None), (None, None)])
def test_the_row_stores_the_document_and_its_gain_kept(quality: dict[str, Any] | None,
                                                       gain_kept: float | None) -> None:
    adapter = Adapter()
    adapter.set_quality(Quality.parse_optional(quality))
    assert adapter.quality == quality
    assert adapter.gain_kept == gain_kept


def test_a_listing_summary_keeps_only_top_level_figures() -> None:
    quality = Quality.parse({"a": 1, "b": "x" * 300, "c": {"d": 1}, "e": None, "f": "ok"})
    assert quality.summary(200).document == {"a": 1, "e": None, "f": "ok"}


def _regressing_first() -> dict[str, Any]:
    """An evaluation whose first set is off the fine-tune's domain: it got worse there."""
    return {"gain_kept": 0.985, "datasets": [
        {"name": "english", "base": {"loss": 1.283}, "finetune": {"loss": 1.503},
         "compressed": {"loss": 1.4997}, "gain_kept": 0.985},
        {"name": "python", "base": {"loss": 2.0}, "finetune": {"loss": 1.5},
         "compressed": {"loss": 1.6}, "gain_kept": 0.8}]}


def test_a_regressing_headline_set_gives_no_rankable_gain_kept() -> None:
    """Where the fine-tune regressed, a higher gain kept is a worse loss: listings, which
    rank by the headline (and the adapters.gain_kept column), must not see it."""
    quality = from_job(3, "bitdelta", {}, {}, None, None, _regressing_first(), "english")
    assert quality.document["gain_kept"] is None
    assert quality.gain_kept is None
    adapter = Adapter()
    adapter.set_quality(quality)
    assert adapter.gain_kept is None
    # A report stored before the rule still states it: read back, it is dropped too.
    stored = Quality.parse({"gain_kept": 0.985, "evaluation": _regressing_first()})
    assert stored.gain_kept is None
    assert stored.summary(100).gain_kept is None
    assert stored.evaluation is not None
    english, python = stored.evaluation.datasets
    assert (english.change, python.change) == ("regressed", "improved")
    assert english.loss_change == pytest.approx(0.22)
    assert english.gain_kept_shown == 0.985  # shown, beside its direction


def test_a_set_the_fine_tune_did_not_change_shows_no_gain_kept() -> None:
    evaluated = {"datasets": [{"name": "flat", "base": {"loss": 2.0},
                               "finetune": {"loss": 2.0004}, "compressed": {"loss": 1.0},
                               "gain_kept": -2500.0}]}
    [flat] = Evaluation.parse(evaluated).datasets  # type: ignore[union-attr]
    assert flat.change == "unchanged"
    assert flat.gain_kept_shown is None
    assert MIN_CHANGE_NATS == MIN_GAIN_NATS  # restated where torch is not imported


def test_each_error_is_one_quantity_under_one_name_for_both_codecs() -> None:
    """Issue 27: a LoRA's ‖ΔW − BA‖/‖ΔW‖ (0.30) was stated as weight_rel_error_max beside
    BitDelta's ‖W_ft − Ŵ_ft‖/‖W_ft‖ (0.095). Each name now means one quantity."""
    lora = from_job(1, "lora", {"summary": {
        "max_error": 0.30, "mean_error": 0.2, "weight_rel_error_max": 0.046,
        "weight_rel_error_mean": 0.03}}, {"modules": [
            {"module": "m", "rank": 4, "error": 0.30, "weight_rel_error": 0.046}]},
        None, None, None)
    bitdelta = from_job(2, "bitdelta", {}, {"tensors": [
        {"name": "t", "kind": "bitdelta", "weight_rel_error": 0.095, "delta_rel_error": 0.7}]},
        None, None, None)
    assert lora.error_maxima() == {"output_rel_error": None, "delta_rel_error": 0.30,
                                   "weight_rel_error": 0.046}
    assert bitdelta.error_maxima() == {"output_rel_error": None, "delta_rel_error": 0.7,
                                       "weight_rel_error": 0.095}
    assert lora.worst_error() == 0.30  # a job's max_error still bounds the factor error
    assert bitdelta.worst_error() is None  # unverified: max_error has nothing to bound
    assert (bitdelta.document["delta_rel_error_max"],
            bitdelta.document["weight_rel_error_max"]) == (0.7, 0.095)
    assert set(ERROR_QUANTITIES) == set(lora.error_maxima())


@pytest.mark.parametrize("document", [
    {"source": JOB_SOURCE, "method": "lora", "weight_rel_error_max": 0.3,
     "verified_with": "factor errors measured as stored"},
    {"format": "deltahub-lora-report", "summary": {"max_error": 0.3},
     "weight_rel_error_max": 0.3}])
def test_a_lora_row_stored_before_the_names_reads_its_figure_as_delta_relative(
        document: dict[str, Any]) -> None:
    quality = Quality.parse(document)
    assert (quality.delta_rel_error_max, quality.weight_rel_error_max) == (0.3, None)
    assert quality.document == document  # served as stored


def test_a_distilled_job_says_its_weight_errors_predate_distillation() -> None:
    """Issue 27, item 3: a distilled delta's weight-error figures were the plain delta's
    (the codec measured them before α was trained) and nothing said so."""
    layers = {"tensors": [{"name": "t", "kind": "bitdelta", "weight_rel_error": 0.095,
                           "delta_rel_error": 0.7}]}
    distilled = from_job(4, "bitdelta", {}, layers, None, {"initial_loss": 1.0}, None)
    plain = from_job(5, "bitdelta", {}, layers, None, None, None)
    assert distilled.document["weight_errors_before_distillation"] is True
    assert distilled.weight_errors_predate_distillation
    assert not plain.weight_errors_predate_distillation
    # A row stored before the flag: a job's distilled adapter, read the same way.
    assert Quality.parse({"source": JOB_SOURCE, "distilled": True}
                         ).weight_errors_predate_distillation
