"""An adapter's quality report as pictures, drawn on the server with matplotlib as SVG.

The data comes from two places: the adapter's `quality` JSON (headline figures, the
verification and distillation summaries a job records) and the codec's own
`report.json` when one was pushed with the adapter (per-module errors and singular
values). Each kind of plot says whether the document has what it needs, so a page
only shows pictures that can be drawn.

Pictures are cached by content: the key is the sha256 of the quality JSON, the
report file's sha256 (blobs are content-addressed) and the plot kind. The same key is
the ETag, so a browser that has the picture gets a 304. matplotlib is imported on the
first drawing only: the API never pays for it.

Names in a report are the pusher's text: each is drawn as a short, literal label (never
math text, which matplotlib would parse out of `$...$`). Each picture is its own
`Figure`, never pyplot's global state, so pictures of different adapters draw at once;
the same picture asked for again while it is drawn waits for that drawing
(registry/ui/plot_cache.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from registry.adapters.quality import ERROR_QUANTITIES, ModuleFigures, Quality, TensorFigures

if TYPE_CHECKING:  # matplotlib is imported when the first picture is drawn
    from matplotlib.typing import RcKeyType

# Labels and sizes. Plots stay small: one picture per figure, at most this many bars.
MAX_BARS = 64
MAX_CURVES = 256  # modules drawn in the spectra (summarised per kind, not a line each)
MAX_POINTS = 2048  # per curve: a loss curve is thinned to this, a spectrum cut
MAX_LABEL_CHARS = 48  # a longer name is shown as its start, "…" and its end
DPI = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The largest magnitude drawn. A report's numbers are only finite, and matplotlib's tick
# arithmetic overflows well below 1.8e308 (a loss of 1e308, singular values of 1e300 and
# 1e150); no error, loss or singular value of a real model is near this.
MAX_DRAWN = 1e100


@dataclass(frozen=True)
class Figures:
    """What the plots draw from: the adapter's quality and its pushed report.json, each
    read once (registry/adapters/quality.py)."""

    quality: Quality
    report: Quality

    @classmethod
    def of(cls, quality: Quality | None, report: object) -> Figures:
        """`report`: the report file's JSON (anything but an object reads as none)."""
        return cls(quality or Quality.parse({}), Quality.parse_optional(report)
                   or Quality.parse({}))

    def modules(self) -> tuple[ModuleFigures, ...]:
        """The codec report's per-module rows, else the quality's compact copy."""
        return next((m for m in (self.report.modules, self.quality.modules) if m is not None),
                    ())

    def tensors(self) -> tuple[TensorFigures, ...]:
        return next((t for t in (self.report.tensors, self.quality.tensors) if t is not None),
                    ())


def _drawable(value: float | None) -> float | None:
    """A finite figure that can be drawn, or None (past MAX_DRAWN)."""
    return value if value is not None and abs(value) <= MAX_DRAWN else None


def layer_errors(figures: Figures, quantity: str = "delta_rel_error"
                 ) -> list[tuple[str, float]]:
    """Per-layer `quantity` (ERROR_QUANTITIES: delta_rel_error or weight_rel_error) of
    either codec: LoRA `modules[]`, BitDelta `tensors[]` (compressed tensors only)."""
    delta = quantity == "delta_rel_error"
    found = [(m.module, _drawable(m.error if delta else m.weight_error))
             for m in figures.modules()]
    found += [(t.name, _drawable(t.delta_error if delta else t.weight_error))
              for t in figures.tensors() if t.kind == "bitdelta"]
    return [(name, value) for name, value in found if value is not None][:MAX_BARS]


def verified_weight_errors(figures: Figures, quantity: str) -> list[tuple[str, float]]:
    """Per-layer `quantity` as verification measured it on the delta a job uploaded:
    the distilled one's, drawn beside the codec's (before distillation)."""
    delta = quantity == "delta_rel_error"
    found = [(layer.module, _drawable(layer.delta_error if delta else layer.weight_error))
             for layer in figures.quality.verify_layers or ()]
    return [(name, value) for name, value in found if value is not None][:MAX_BARS]


def _has_errors(figures: Figures) -> bool:
    return any(layer_errors(figures, q) for q in _WEIGHT_ERRORS)


def spectra(figures: Figures) -> list[tuple[str, list[float], int | None]]:
    """LoRA: each module's leading singular values and the rank kept."""
    curves = []
    for module in figures.modules():
        # σ ≥ 0; a zero or a negative one (a hostile report) has no place on a log axis.
        values = [v for v in map(_drawable, module.singular_values[:MAX_POINTS])
                  if v is not None and v > 0]
        if values:
            curves.append((module.module, values, module.rank))
    return curves[:MAX_CURVES]


def loss_curve(figures: Figures) -> list[tuple[float, float]]:
    """Distillation loss by step."""
    for part in (figures.quality, figures.report):
        if part.distillation is None:
            continue
        clean = [(_drawable(x) or 0.0, y) for x, y in
                 ((x, _drawable(y)) for x, y in part.distillation.curve) if y is not None]
        if clean:
            return _thin(clean)
    return []


def verify_errors(figures: Figures) -> list[tuple[str, float]]:
    """Verification: each layer's output error against the fine-tune."""
    layers = next((part.verify_layers for part in (figures.quality, figures.report)
                   if part.verify_layers is not None),
                  figures.report.checked_layers)  # a `deltahub verify` report pushed as is
    found = [(layer.module, _drawable(layer.error)) for layer in layers or ()]
    return [(name, value) for name, value in found if value is not None][:MAX_BARS]


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most MAX_POINTS of a curve, evenly spaced, keeping its last point."""
    if len(points) <= MAX_POINTS:
        return points
    step = math.ceil(len(points) / MAX_POINTS)
    return points[::step] + ([points[-1]] if (len(points) - 1) % step else [])


def label(name: str) -> str:
    """A name from a report as a plot shows it: the common prefixes dropped, on one line,
    at most MAX_LABEL_CHARS, and its `$` escaped so that matplotlib draws it literally."""
    short = _CONTROL.sub(" ", name.removeprefix("base_model.model.").removeprefix("model.")
                         .removesuffix(".weight"))
    if len(short) > MAX_LABEL_CHARS:
        head = (MAX_LABEL_CHARS - 1) // 3
        short = short[:head] + "…" + short[len(short) - (MAX_LABEL_CHARS - 1 - head):]
    return short.replace("$", r"\$")


# Every picture is SVG with its text as text (svg.fonttype "none": the browser sets it,
# crisp at any zoom), drawn WIDTH_IN wide: 540 pt, which a browser shows as 720 CSS px.
# The page shows it at that size (on a phone its box scrolls sideways), so FONT_PT, the
# smallest text, reads as 13.3 px; tests/registry/ui/test_plots_svg.py holds it at 11 px.
WIDTH_IN = 7.5
FONT_PT = 10
TITLE_PT = 11
ROW_IN = 0.24  # a bar's row: room for a FONT_PT label
_SVG_SETTINGS: dict[RcKeyType, Any] = {
    "svg.fonttype": "none", "svg.hashsalt": "deltahub", "font.size": FONT_PT,
    "axes.titlesize": TITLE_PT, "axes.labelsize": FONT_PT, "xtick.labelsize": FONT_PT,
    "ytick.labelsize": FONT_PT, "legend.fontsize": FONT_PT, "figure.titlesize": TITLE_PT}
_settings_applied = threading.Lock()
_settings_done = False


def _matplotlib() -> None:
    """Apply the SVG settings once, before the first drawing (rcParams are process-wide;
    every picture wants the same, so setting them once shares nothing that varies)."""
    global _settings_done
    with _settings_applied:
        if not _settings_done:
            import matplotlib

            matplotlib.rcParams.update(_SVG_SETTINGS)
            _settings_done = True


def _new_figure(height: float) -> Any:
    """A figure of its own: no pyplot, so no state shared with other renders."""
    _matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")


def _formula(quantity: str) -> str:
    return ERROR_QUANTITIES[quantity].partition(": ")[0]


def _bars(title: str, xlabel: str, data: list[tuple[str, float]]) -> Any:
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(1.3 + ROW_IN * len(data))
    ax = fig.subplots()
    ax.barh(range(len(data)), [v for _, v in data], color="#3b6ea5")
    ax.set_yticks(range(len(data)), [label(n) for n, _ in data])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.grid(True, axis="x", alpha=0.3)
    return fig


# The two weight errors drawn side by side, each under its one name (ERROR_QUANTITIES).
_WEIGHT_ERRORS = ("delta_rel_error", "weight_rel_error")


def _draw_errors(figures: Figures) -> Any:
    """delta_rel_error and weight_rel_error per layer, side by side, on shared rows; for a
    distilled delta whose verification measured them again, before and after distillation
    as two bars per layer."""
    from matplotlib.ticker import MaxNLocator

    series = {q: dict(layer_errors(figures, q)) for q in _WEIGHT_ERRORS}
    after = {q: {_tensor_module(n): v for n, v in verified_weight_errors(figures, q)}
             for q in _WEIGHT_ERRORS} if figures.quality.remeasured_after_distillation else {}
    names = list(dict.fromkeys(n for q in _WEIGHT_ERRORS for n in series[q]))[:MAX_BARS]
    both = any(after.get(q) for q in _WEIGHT_ERRORS)
    fig = _new_figure(1.6 + ROW_IN * len(names) * (1.6 if both else 1))
    axes = fig.subplots(1, 2, sharey=True)
    rows = [i * (1.6 if both else 1) for i in range(len(names))]
    for ax, quantity in zip(axes, _WEIGHT_ERRORS, strict=True):
        values = [series[quantity].get(n) for n in names]
        if both:
            later = [after[quantity].get(_tensor_module(n)) for n in names]
            ax.barh([r - 0.35 for r in rows], [v or 0.0 for v in values], height=0.7,
                    color="#b9c9dc", label="before distillation (the codec's)")
            ax.barh([r + 0.35 for r in rows], [v or 0.0 for v in later], height=0.7,
                    color="#3b6ea5", label="after distillation (verified)")
        else:
            ax.barh(rows, [v or 0.0 for v in values], color="#3b6ea5")
        ax.set_xlabel(_formula(quantity))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # 13 px ticks that never touch
        ax.set_title(quantity if any(v is not None for v in values)
                     else f"{quantity}: not in this report")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(rows, [label(n) for n in names])
    axes[0].invert_yaxis()
    if both:
        handles, words = axes[0].get_legend_handles_labels()
        fig.legend(handles, words, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Weight errors per layer (lower is better)" + (
        "\nmeasured before scale distillation changed α"
        if figures.quality.weight_errors_predate_distillation else ""))
    return fig


def _tensor_module(name: str) -> str:
    """A tensor's module (verification names modules, the codec their weights)."""
    return name.removesuffix(".weight")


def _draw_verify(figures: Figures) -> Any:
    return _bars("Output error per layer, on probe inputs (lower is better)",
                 f"output_rel_error = {_formula('output_rel_error')}", verify_errors(figures))


SPECTRA_COLUMNS = 3
MAX_PANELS = 12  # module kinds drawn apart; any more share one panel
OTHER_KINDS = "other kinds"


def spectra_groups(figures: Figures) -> dict[str, list[tuple[str, list[float], int | None]]]:
    """The spectra by module kind (q_proj, …: a name's last part), in first-seen order:
    one small panel each."""
    groups: dict[str, list[tuple[str, list[float], int | None]]] = {}
    for name, values, rank in spectra(figures):
        kind = label(name.removesuffix(".weight").rsplit(".", 1)[-1])
        if kind not in groups and len(groups) >= MAX_PANELS - 1:
            kind = OTHER_KINDS
        groups.setdefault(kind, []).append((name, values, rank))
    return groups


def _draw_spectra(figures: Figures) -> Any:
    """Small multiples, one per module kind: the median of σ_i/σ_1 over its layers, the
    band from the lowest to the highest, and each module's rank kept as a dot on its own
    curve. Every value a report keeps is drawn (no curve is cut at the rank)."""
    from matplotlib.ticker import LogFormatter, MaxNLocator, NullFormatter

    groups = spectra_groups(figures)
    rows = math.ceil(len(groups) / SPECTRA_COLUMNS)
    fig = _new_figure(1.1 + 2.2 * rows)
    axes = fig.subplots(rows, SPECTRA_COLUMNS, squeeze=False, sharey=True).ravel()
    for ax, (kind, group) in zip(axes, groups.items(), strict=False):
        curves = [[v / values[0] for v in values] for _, values, _ in group]
        length = max(len(c) for c in curves)
        index = list(range(1, length + 1))
        columns = [[c[i] for c in curves if i < len(c)] for i in range(length)]
        ax.fill_between(index, [min(c) for c in columns], [max(c) for c in columns],
                        color="#9db7d5", alpha=0.6, lw=0, label="range over layers")
        ax.semilogy(index, [_median(c) for c in columns], color="#1d3f66", lw=1.5,
                    label="median over layers")
        dots = [(rank, curve[rank - 1]) for (_, _, rank), curve in zip(group, curves,
                                                                       strict=True)
                if rank is not None and 0 < rank <= len(curve)]
        ax.plot([r for r, _ in dots], [v for _, v in dots], "o", ms=4, color="#a5523b",
                label="rank kept (one per module)")
        ranks = sorted({r for r, _ in dots})
        kept = "" if not ranks else f", rank {ranks[0]}" if len(ranks) == 1 \
            else f", rank {ranks[0]}–{ranks[-1]}"
        ax.set_title(f"{kind}\n{len(group)} modules{kept}", fontsize=FONT_PT)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        # Plain tick labels: the default ones are math text, whose parser threads share.
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    fig.supylabel("σᵢ / σ₁ (log scale)", fontsize=FONT_PT)
    fig.supxlabel("singular value index i", fontsize=FONT_PT)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper center", ncols=3, frameon=False)
    return fig


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def distillation_loss_unit(document: Mapping[str, object]) -> str:
    """What a distillation's loss is (compress/bitdelta/distill.py LOSSES)."""
    found = document.get("distillation")
    kind = found.get("loss") if isinstance(found, Mapping) else None
    return {"kl": "KL divergence to the fine-tune (nats per token)",
            "mse": "mean squared error of the logits"}.get(str(kind), "distillation loss")


def _draw_loss(figures: Figures) -> Any:
    points = loss_curve(figures)
    fig = _new_figure(3.4)
    ax = fig.subplots()
    ax.plot([x for x, _ in points], [y for _, y in points], color="#a5523b")
    ax.set_xlabel("training step")
    ax.set_ylabel(distillation_loss_unit(figures.quality.document))
    ax.set_title("Scale distillation: loss against the fine-tune's outputs (lower is better)")
    ax.grid(True, alpha=0.3)
    return fig


PLOTS: dict[str, tuple[str, Callable[[Figures], bool],
                       Callable[[Figures], Any]]] = {
    "errors": ("Weight errors per layer: delta_rel_error and weight_rel_error", _has_errors,
               _draw_errors),
    "spectra": ("LoRA singular-value spectra, by module kind", lambda d: bool(spectra(d)),
                _draw_spectra),
    "loss": ("Distillation loss", lambda d: bool(loss_curve(d)), _draw_loss),
    "verify": ("Verification: output_rel_error per layer", lambda d: bool(verify_errors(d)),
               _draw_verify),
}
MEDIA_TYPE = "image/svg+xml"
STYLE = "svg-2"  # in the cache key: a change of drawing makes new pictures


def available(figures: Figures) -> list[tuple[str, str]]:
    """(kind, title) of every plot the document has data for."""
    return [(kind, title) for kind, (title, has, _) in PLOTS.items() if has(figures)]


def render_svg(kind: str, figures: Figures) -> bytes:
    """The picture as SVG (deterministic: the same figures give the same bytes)."""
    fig = PLOTS[kind][2](figures)
    out = io.BytesIO()
    fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    return out.getvalue()


def content_key(quality: Quality | None, report_sha256: str | None, kind: str) -> str:
    document = None if quality is None else quality.document
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{canonical}|{report_sha256}|{kind}|{STYLE}".encode()).hexdigest()
