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
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# Labels and sizes. Plots stay small: one picture per figure, at most this many bars.
MAX_BARS = 64
MAX_CURVES = 24
DPI = 100
CACHE_ENTRIES = 128
# pyplot keeps global state: one drawing at a time, whatever thread asks.
_DRAWING = threading.Lock()


def _rows(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """`report.<key>` (the codec's report.json), or `quality.<key>`, as a list of objects."""
    for part in ("report", "quality"):
        value = (document.get(part) or {}).get(key)
        if isinstance(value, list):
            return [row for row in value if isinstance(row, dict)]
    return []


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def layer_errors(document: dict[str, Any]) -> list[tuple[str, float]]:
    """Per-module relative weight error: LoRA `modules[].error`, BitDelta
    `tensors[].weight_rel_error` (compressed tensors only)."""
    found = [(str(r.get("module")), _finite(r.get("error"))) for r in _rows(document, "modules")]
    found += [(str(r.get("name")), _finite(r.get("weight_rel_error")))
              for r in _rows(document, "tensors") if r.get("kind") == "bitdelta"]
    return [(name, value) for name, value in found if value is not None][:MAX_BARS]


def spectra(document: dict[str, Any]) -> list[tuple[str, list[float], int | None]]:
    """LoRA: each module's leading singular values and the rank kept."""
    curves = []
    for row in _rows(document, "modules"):
        values = [v for v in (_finite(s) for s in row.get("singular_values") or []) if v]
        rank = row.get("rank")
        if values:
            curves.append((str(row.get("module")), values,
                           rank if isinstance(rank, int) else None))
    return curves[:MAX_CURVES]


def loss_curve(document: dict[str, Any]) -> list[tuple[float, float]]:
    """Distillation loss by step: `losses` (a list) or `history` ([{step, loss}])."""
    for part in ("quality", "report"):
        distill = (document.get(part) or {}).get("distillation")
        if not isinstance(distill, dict):
            continue
        losses = distill.get("losses") or distill.get("loss_curve")
        if isinstance(losses, list):
            points = [(float(i), _finite(v)) for i, v in enumerate(losses)]
        else:
            history = distill.get("history")
            rows = history if isinstance(history, list) else []
            points = [(_finite(r.get("step")) or 0.0, _finite(r.get("loss")))
                      for r in rows if isinstance(r, dict)]
        clean = [(x, y) for x, y in points if y is not None]
        if clean:
            return clean
    return []


def verify_errors(document: dict[str, Any]) -> list[tuple[str, float]]:
    """Verification: each layer's output error against the fine-tune."""
    rows: list[Any] = []
    for part in ("quality", "report"):
        verify = (document.get(part) or {}).get("verify")
        if isinstance(verify, dict) and isinstance(verify.get("layers"), list):
            rows = verify["layers"]
            break
    else:
        report = document.get("report") or {}
        if isinstance(report.get("summary"), dict) and "kernel_failures" in report["summary"]:
            rows = report.get("layers") or []  # a `deltahub verify` report pushed as is
    found = [(str(r.get("module")), _finite(r.get("compression_rel_error")))
             for r in rows if isinstance(r, dict)]
    return [(name, value) for name, value in found if value is not None][:MAX_BARS]


def _short(name: str) -> str:
    return name.removeprefix("base_model.model.").removeprefix("model.").removesuffix(".weight")


def _bars(title: str, xlabel: str, data: list[tuple[str, float]]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.22 * len(data)), dpi=DPI)
    labels = [_short(n) for n, _ in data]
    ax.barh(range(len(data)), [v for _, v in data], color="#3b6ea5")
    ax.set_yticks(range(len(data)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return fig


def _draw_errors(document: dict[str, Any]) -> Any:
    return _bars("Weight error per layer", "‖W − Ŵ‖ / ‖W‖", layer_errors(document))


def _draw_verify(document: dict[str, Any]) -> Any:
    return _bars("Verification: output error per layer", "relative error of x·Wᵀ",
                 verify_errors(document))


def _draw_spectra(document: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=DPI)
    for name, values, rank in spectra(document):
        (line,) = ax.semilogy(range(1, len(values) + 1), values, lw=1, label=_short(name))
        if rank is not None and 0 < rank <= len(values):
            ax.plot([rank], [values[rank - 1]], "o", ms=3, color=line.get_color())
    ax.set_xlabel("singular value index (dot: rank kept)")
    ax.set_ylabel("σ")
    ax.set_title("Singular values of ΔW per module", fontsize=10)
    ax.legend(fontsize=5, ncol=2)
    return fig


def _draw_loss(document: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    points = loss_curve(document)
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=DPI)
    ax.plot([x for x, _ in points], [y for _, y in points], color="#a5523b")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Scale distillation loss", fontsize=10)
    return fig


PLOTS: dict[str, tuple[str, Callable[[dict[str, Any]], bool],
                       Callable[[dict[str, Any]], Any]]] = {
    "errors": ("Per-layer weight error", lambda d: bool(layer_errors(d)), _draw_errors),
    "spectra": ("LoRA singular-value spectra", lambda d: bool(spectra(d)), _draw_spectra),
    "loss": ("Distillation loss", lambda d: bool(loss_curve(d)), _draw_loss),
    "verify": ("Verification error per layer", lambda d: bool(verify_errors(d)),
               _draw_verify),
}


def available(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, title) of every plot the document has data for."""
    return [(kind, title) for kind, (title, has, _) in PLOTS.items() if has(document)]


def render_png(kind: str, document: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display; harmless when already chosen
    import matplotlib.pyplot as plt

    with _DRAWING:
        fig = PLOTS[kind][2](document)
        try:
            fig.tight_layout()
            out = io.BytesIO()
            fig.savefig(out, format="png")
            return out.getvalue()
        finally:
            plt.close(fig)


def content_key(quality: dict[str, Any] | None, report_sha256: str | None, kind: str) -> str:
    canonical = json.dumps(quality, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{canonical}|{report_sha256}|{kind}".encode()).hexdigest()


class PlotCache:
    """The last CACHE_ENTRIES pictures drawn, by content key (an in-process LRU)."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)
            return found

    def put(self, key: str, png: bytes) -> None:
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
