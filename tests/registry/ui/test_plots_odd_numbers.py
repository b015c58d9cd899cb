"""Pushed reports whose values are valid JSON of the wrong shape or of absurd size.

Finalize accepts any finite number and any shape (the report is the pusher's); the
adapter page lists the plots it can draw and each plot draws, rather than a 500.
"""

from __future__ import annotations

from typing import Any

import pytest

from registry.adapters.quality import JOB_SOURCE, Quality
from registry.ui import plots

SVG = b"<?xml"


def test_a_verify_report_whose_layers_are_not_a_list_has_no_verify_plot() -> None:
    # `deltahub verify`'s shape (summary.kernel_failures) with `layers` a number: the
    # page asks every plot whether it can draw, so this broke the whole page.
    for layers in (5, 2.5, True, "layers", {"module": "q_proj"}):
        document = plots.Figures.of(None, {"summary": {"kernel_failures": 0}, "layers": layers})
        assert plots.verify_errors(document) == [], layers
        assert "verify" not in dict(plots.available(document)), layers


@pytest.mark.parametrize(("kind", "report"), [
    ("loss", {"distillation": {"losses": [1e308, -1e308, 0.5]}}),
    ("loss", {"distillation": {"history": [{"step": 1e308, "loss": 1.0},
                                           {"step": -1e308, "loss": 2.0},
                                           {"step": 3, "loss": 0.5}]}}),
    ("spectra", {"modules": [{"module": "q_proj", "rank": 1,
                              "singular_values": [1e300, 1e150, 0.5]}]}),
    ("errors", {"modules": [{"module": "a", "error": 1e308},
                            {"module": "b", "error": -1e308},
                            {"module": "c", "error": 0.5}]}),
])
def test_numbers_too_large_to_draw_are_left_out_of_the_picture(
        kind: str, report: dict[str, Any]) -> None:
    document = plots.Figures.of(None, report)
    assert kind in dict(plots.available(document))  # the sane point is still drawn
    assert plots.render_svg(kind, document)[:5] == SVG


def test_what_is_drawn_is_within_the_drawable_magnitude() -> None:
    document = plots.Figures.of(None, {"modules": [
        {"module": "a", "error": plots.MAX_DRAWN, "singular_values": [1e101, 2.0]},
        {"module": "b", "error": -1e101}]})
    assert plots.layer_errors(document) == [("a", plots.MAX_DRAWN)]
    assert plots.spectra(document) == [("a", [2.0], None)]


def test_both_codecs_draw_the_same_two_named_weight_errors_side_by_side() -> None:
    """Issue 27: the LoRA plot said ‖W−Ŵ‖/‖W‖ over ‖ΔW−BA‖/‖ΔW‖. Each panel is now one
    quantity, named and labelled with its formula, for either codec."""
    lora = plots.Figures.of(None, {"modules": [
        {"module": "m", "error": 0.30, "weight_rel_error": 0.046}]})
    bitdelta = plots.Figures.of(None, {"tensors": [
        {"name": "t", "kind": "bitdelta", "delta_rel_error": 0.7, "weight_rel_error": 0.095}]})
    for document, (delta, weight) in ((lora, (0.30, 0.046)), (bitdelta, (0.7, 0.095))):
        assert plots.layer_errors(document, "delta_rel_error")[0][1] == delta
        assert plots.layer_errors(document, "weight_rel_error")[0][1] == weight
        figure = plots.PLOTS["errors"][2](document)
        labels = [(ax.get_title().split("\n")[0], ax.get_xlabel()) for ax in figure.axes]
        assert labels == [("delta_rel_error", "‖ΔW − ΔŴ‖ / ‖ΔW‖"),
                          ("weight_rel_error", "‖W_ft − Ŵ_ft‖ / ‖W_ft‖")]
    old = plots.Figures.of(None, {"modules": [{"module": "m", "error": 0.3}]})
    figure = plots.PLOTS["errors"][2](old)
    assert figure.axes[1].get_title() == "weight_rel_error: not in this report"


def test_a_distilled_jobs_weight_errors_are_titled_as_predating_distillation() -> None:
    rows = {"tensors": [{"name": "t", "kind": "bitdelta", "weight_rel_error": 0.1,
                         "delta_rel_error": 0.7}]}
    distilled = plots.Figures.of(Quality.parse({"source": JOB_SOURCE, "distilled": True,
                                                **rows}), None)
    plain = plots.Figures.of(Quality.parse({"source": JOB_SOURCE, **rows}), None)
    assert "before scale distillation" in plots.PLOTS["errors"][2](distilled).get_suptitle()
    assert "before" not in plots.PLOTS["errors"][2](plain).get_suptitle()
