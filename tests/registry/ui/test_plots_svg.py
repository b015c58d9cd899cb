"""Plots are SVG, readable at the size the page shows them, and summarise (issue 27, item 6).

An adapter of 28 LoRA modules (7 kinds × 4 layers) keeping ranks 16 to 126: the spectra
draw one panel per kind, every kept singular value (past 64), a median and a band, and
each module's rank as a dot; every label is text of 11 px or more at 720 px shown.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from registry.jobs.layer_rows import codec_layers
from registry.ui import plots
from registry.ui.plot_cache import PlotCache

KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANKS = (16, 64, 96, 126)  # one per layer
PAST_RANK = 8
SHOWN_PX = 720  # the page shows a plot at its own size (ui.css `.plots img`)
MIN_LABEL_PX = 11


def _modules() -> list[dict[str, object]]:
    return [{"module": f"base_model.model.model.layers.{layer}.self_attn.{kind}", "rank": rank,
             "error": 0.1, "weight_rel_error": 0.01,
             "singular_values": [10.0 * 0.97 ** i for i in range(rank + PAST_RANK)]}
            for layer, rank in enumerate(RANKS) for kind in KINDS]


def _figures() -> plots.Figures:
    return plots.Figures.of(None, {"modules": _modules()})


def test_the_spectra_are_small_multiples_over_every_kept_value() -> None:
    figure = plots.PLOTS["spectra"][2](_figures())
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == list(KINDS)
    longest = max(RANKS) + PAST_RANK
    for ax in panels:
        median, dots = ax.get_lines()  # the median, then the ranks kept
        assert len(median.get_xdata()) == longest  # past 64: every value kept is drawn
        assert sorted(dots.get_xdata()) == list(RANKS)  # one dot per module, 126 included
        assert ax.get_title().endswith(f"4 modules, rank {min(RANKS)}–{max(RANKS)}")
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "range over layers", "median over layers", "rank kept (one per module)"]
    assert all(ax.get_legend() is None for ax in panels)  # the figure's, over no curve


def _svg(kind: str, figures: plots.Figures) -> ET.Element:
    picture = plots.render_svg(kind, figures)
    assert picture == plots.render_svg(kind, figures)  # deterministic: cached by content
    return ET.fromstring(picture)


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def _smallest_font_px(root: ET.Element) -> float:
    """The smallest text as the page shows it: user units scaled to SHOWN_PX wide."""
    width_pt = float(root.attrib["width"].removesuffix("pt"))
    view_width = float(root.attrib["viewBox"].split()[2])
    sizes = [float(s) for s in re.findall(r"font-size:\s*([0-9.]+)px",
                                          ET.tostring(root, encoding="unicode"))]
    assert sizes, "no text drawn as text"
    assert width_pt * 4 / 3 == SHOWN_PX  # pt to CSS px: the size the page shows
    return min(sizes) * SHOWN_PX / view_width


def test_every_plot_is_svg_with_readable_labels_naming_its_quantity() -> None:
    from registry.adapters.quality import Quality

    layers = [{"module": m["module"], "compression_rel_error": 0.1} for m in _modules()]
    job = plots.Figures.of(Quality.parse({"distillation": {"loss": "kl", "losses": [1.0, 0.5]},
                                          "verify": {"layers": layers}}), None)
    expected = {"spectra": (_figures(), ["σᵢ / σ₁ (log scale)", "singular value index i"]),
                "errors": (_figures(), ["delta_rel_error", "weight_rel_error",
                                        "‖ΔW − ΔŴ‖ / ‖ΔW‖", "‖W_ft − Ŵ_ft‖ / ‖W_ft‖"]),
                "verify": (job, ["output_rel_error = ‖y − y_ft‖ / ‖y_ft‖"]),
                "loss": (job, ["KL divergence to the fine-tune (nats per token)",
                               "training step"])}
    for kind, (figures, labels) in expected.items():
        root = _svg(kind, figures)
        assert root.tag == "{http://www.w3.org/2000/svg}svg", kind
        texts = _texts(root)
        for wanted in labels:
            assert wanted in texts, (kind, wanted)
        assert _smallest_font_px(root) >= MIN_LABEL_PX, kind
        assert "layers.3.self_attn.down_proj" in texts or kind in ("spectra", "loss"), kind


def test_a_job_keeps_every_singular_value_up_to_its_rank_and_past_it() -> None:
    kept = codec_layers({"modules": _modules()})["modules"]
    assert [len(m["singular_values"]) for m in kept][-1] == 126 + PAST_RANK  # was cut at 64
    short = codec_layers({"modules": [{"module": "m", "rank": 2,
                                       "singular_values": [1.0] * 300}]})
    assert len(short["modules"][0]["singular_values"]) == 64  # the decay past a small rank


def test_drawn_plots_outlive_the_process_on_disk(tmp_path: Path) -> None:
    drawn: list[str] = []

    async def draw() -> bytes:
        drawn.append("x")
        return b"<svg/>"

    async def twice() -> tuple[bytes, bytes]:
        first = await PlotCache(folder=tmp_path).picture("a" * 64, draw)
        again = await PlotCache(folder=tmp_path).picture("a" * 64, draw)  # restarted
        return first, again

    assert asyncio.run(twice()) == (b"<svg/>", b"<svg/>")
    assert drawn == ["x"]
    assert [p.name for p in tmp_path.iterdir()] == ["a" * 64 + ".svg"]
