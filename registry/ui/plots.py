"""An adapter's quality report as pictures, drawn on the server with matplotlib (Agg).

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
the same picture asked for again while it is drawn waits for that drawing (PlotCache).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from registry.adapters.quality import ERROR_QUANTITIES, ModuleFigures, Quality, TensorFigures
from registry.errors import PlotsBusy

# Labels and sizes. Plots stay small: one picture per figure, at most this many bars.
MAX_BARS = 64
MAX_CURVES = 24
MAX_POINTS = 2048  # per curve: a loss curve is thinned to this, a spectrum cut
MAX_LABEL_CHARS = 48  # a longer name is shown as its start, "…" and its end
DPI = 100
CACHE_ENTRIES = 128
DEFAULT_RENDERS = 4  # pictures drawn at once (DELTAHUB_MAX_PLOT_RENDERS)
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


def _has_errors(figures: Figures) -> bool:
    return any(layer_errors(figures, q) for q in _WEIGHT_ERRORS)


def spectra(figures: Figures) -> list[tuple[str, list[float], int | None]]:
    """LoRA: each module's leading singular values and the rank kept."""
    curves = []
    for module in figures.modules():
        values = [v for v in map(_drawable, module.singular_values[:MAX_POINTS]) if v]
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


def _figure(height: float) -> tuple[Any, Any]:
    """A figure of its own and its axes: no pyplot, so no state shared with other renders."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, height), dpi=DPI)
    return fig, fig.subplots()


def _bars(title: str, xlabel: str, data: list[tuple[str, float]]) -> Any:
    fig, ax = _figure(0.9 + 0.22 * len(data))
    ax.barh(range(len(data)), [v for _, v in data], color="#3b6ea5")
    ax.set_yticks(range(len(data)), [label(n) for n, _ in data], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return fig


# The two weight errors drawn side by side, each under its one name (ERROR_QUANTITIES).
_WEIGHT_ERRORS = ("delta_rel_error", "weight_rel_error")


def _draw_errors(figures: Figures) -> Any:
    """delta_rel_error and weight_rel_error per layer, side by side, on shared rows."""
    from matplotlib.figure import Figure

    series = {q: dict(layer_errors(figures, q)) for q in _WEIGHT_ERRORS}
    names = list(dict.fromkeys(n for q in _WEIGHT_ERRORS for n in series[q]))[:MAX_BARS]
    fig = Figure(figsize=(9, 2.4 + 0.22 * len(names)), dpi=DPI)  # room for two titles
    axes = fig.subplots(1, 2, sharey=True)
    for ax, quantity in zip(axes, _WEIGHT_ERRORS, strict=True):
        values = [series[quantity].get(n) for n in names]
        ax.barh(range(len(names)), [v or 0.0 for v in values], color="#3b6ea5")
        formula, _, meaning = ERROR_QUANTITIES[quantity].partition(": ")
        ax.set_xlabel(formula)
        ax.set_title(f"{quantity}\n({meaning})" if any(v is not None for v in values)
                     else f"{quantity}: not in this report", fontsize=9)
    axes[0].set_yticks(range(len(names)), [label(n) for n in names], fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("Weight errors per layer" + (
        " (measured before scale distillation changed α)"
        if figures.quality.weight_errors_predate_distillation else ""), fontsize=10)
    return fig


def _draw_verify(figures: Figures) -> Any:
    return _bars("Verification: output_rel_error per layer",
                 ERROR_QUANTITIES["output_rel_error"].partition(": ")[0],
                 verify_errors(figures))


def _draw_spectra(figures: Figures) -> Any:
    from matplotlib.ticker import LogFormatter, NullFormatter

    fig, ax = _figure(4)
    for name, values, rank in spectra(figures):
        (line,) = ax.semilogy(range(1, len(values) + 1), values, lw=1, label=label(name))
        if rank is not None and 0 < rank <= len(values):
            ax.plot([rank], [values[rank - 1]], "o", ms=3, color=line.get_color())
    # Plain tick labels: the default ones are math text, whose parser is shared by threads.
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("singular value index (dot: rank kept)")
    ax.set_ylabel("σ")
    ax.set_title("Singular values of ΔW per module", fontsize=10)
    ax.legend(fontsize=5, ncol=2)
    return fig


def _draw_loss(figures: Figures) -> Any:
    points = loss_curve(figures)
    fig, ax = _figure(3.2)
    ax.plot([x for x, _ in points], [y for _, y in points], color="#a5523b")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Scale distillation loss", fontsize=10)
    return fig


PLOTS: dict[str, tuple[str, Callable[[Figures], bool],
                       Callable[[Figures], Any]]] = {
    "errors": ("Weight errors per layer: delta_rel_error and weight_rel_error", _has_errors,
               _draw_errors),
    "spectra": ("LoRA singular-value spectra", lambda d: bool(spectra(d)), _draw_spectra),
    "loss": ("Distillation loss", lambda d: bool(loss_curve(d)), _draw_loss),
    "verify": ("Verification error per layer", lambda d: bool(verify_errors(d)),
               _draw_verify),
}


def available(figures: Figures) -> list[tuple[str, str]]:
    """(kind, title) of every plot the document has data for."""
    return [(kind, title) for kind, (title, has, _) in PLOTS.items() if has(figures)]


def render_png(kind: str, figures: Figures) -> bytes:
    fig = PLOTS[kind][2](figures)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def content_key(quality: Quality | None, report_sha256: str | None, kind: str) -> str:
    document = None if quality is None else quality.document
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{canonical}|{report_sha256}|{kind}".encode()).hexdigest()


class PlotCache:
    """The last CACHE_ENTRIES pictures drawn, by content key (an in-process LRU), and the
    pictures being drawn now.

    A picture is drawn once however many ask for it at once: the first request draws it,
    the others wait for that drawing and share its result (or its error). At most
    `renders` pictures are drawn at a time; a request for one more is refused (PlotsBusy,
    a 503 with Retry-After) rather than queued behind them.
    """

    def __init__(self, entries: int = CACHE_ENTRIES, renders: int = DEFAULT_RENDERS,
                 retry_after_seconds: int = 2) -> None:
        self.entries = entries
        self.retry_after_seconds = retry_after_seconds
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._drawing: dict[str, Future[bytes]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(renders)
        self.hits = 0
        self.misses = 0
        self.renders = 0  # pictures drawn
        self.shared = 0  # requests that waited for another request's drawing

    async def picture(self, key: str, draw: Callable[[], Awaitable[bytes]]) -> bytes:
        """The picture for `key`: cached, shared with the drawing of it under way, or drawn
        by `draw` (which draws through `bounded`)."""
        while True:
            with self._lock:
                found = self._cached(key)
                if found is not None:
                    return found
                drawing = self._drawing.get(key)
                if drawing is None:
                    drawing = self._drawing[key] = Future()
                    break
                self.shared += 1
            try:
                return await asyncio.wrap_future(drawing)
            except asyncio.CancelledError:
                if not drawing.cancelled():
                    raise  # this request was cancelled, not the drawing it waited for
        return await self._draw(key, drawing, draw)

    def bounded(self, render: Callable[[], bytes]) -> bytes:
        """`render()` in one of the drawing slots (in a worker thread), or PlotsBusy."""
        if not self._slots.acquire(blocking=False):
            raise PlotsBusy("every plot drawing slot is busy; retry shortly (the picture is "
                            "cached once drawn)", retry_after_seconds=self.retry_after_seconds)
        try:
            with self._lock:
                self.renders += 1
            return render()
        finally:
            self._slots.release()

    async def _draw(self, key: str, drawing: Future[bytes],
                    draw: Callable[[], Awaitable[bytes]]) -> bytes:
        try:
            png = await draw()
        except BaseException as exc:
            with self._lock:
                del self._drawing[key]
            if isinstance(exc, Exception):
                drawing.set_exception(exc)
            else:  # cancelled: a waiter draws it instead
                drawing.cancel()
            raise
        with self._lock:
            self._put(key, png)
            del self._drawing[key]
        drawing.set_result(png)
        return png

    def _cached(self, key: str) -> bytes | None:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return found

    def _put(self, key: str, png: bytes) -> None:
        self._items[key] = png
        self._items.move_to_end(key)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)
