"""What a LoRA extraction kept and lost: `report.json` and the `spectra.png` plot.

Per adapted module its rank, error as stored, energy kept, bytes and leading singular values;
every changed tensor that is not a factor is listed as saved or left out with its bytes and
change, so nothing is dropped silently. See docs/codecs.md, "LoRA extraction".
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compress.targets import layer_index, module_kind

REPORT_FILE = "report.json"
SPECTRA_FILE = "spectra.png"
REPORT_FORMAT = "deltahub-lora-report"
REPORT_VERSION = 1


@dataclass(frozen=True)
class ModuleResult:
    module: str
    shape: tuple[int, int]  # [out, in]
    rank: int
    error: float  # measured relative Frobenius error
    energy: float  # Σ_{i≤r} σ_i² / ‖ΔW‖²
    target_met: bool | None  # None with a fixed rank
    bytes_in: int
    bytes_out: int
    singular_values: list[float]
    # ‖W_ft − Ŵ_ft‖ / ‖W_ft‖ = error · ‖ΔW‖ / ‖W_ft‖: the figure BitDelta's
    # weight_rel_error is, so the codecs compare (`error` is delta-relative).
    weight_rel_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "shape": list(self.shape), "rank": self.rank,
                "error": self.error, "energy": self.energy, "target_met": self.target_met,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "singular_values": [float(f"{s:.6g}") for s in self.singular_values],
                "delta_rel_error": self.error, "weight_rel_error": self.weight_rel_error}


@dataclass(frozen=True)
class ChangedTensor:
    """A tensor the fine-tune changed that is not a LoRA target."""

    name: str
    nbytes: int
    relative_change: float  # ‖W_ft − W_base‖ / ‖W_base‖ (inf when the base is all zero)
    max_abs_change: float
    saved: bool  # carried through modules_to_save
    reason: str  # why it was left out; empty when saved

    def to_dict(self) -> dict[str, Any]:
        change = self.relative_change if self.relative_change != float("inf") else None
        entry: dict[str, Any] = {"tensor": self.name, "bytes": self.nbytes,
                                 "relative_change": change,
                                 "max_abs_change": self.max_abs_change}
        if not self.saved:
            entry["reason"] = self.reason
        return entry


@dataclass
class LoraReport:
    settings: dict[str, Any]  # mode, rank / target_error / max_rank, dtype, sketch constants
    modules: list[ModuleResult] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # targets with ΔW = 0: not adapted
    changed: list[ChangedTensor] = field(default_factory=list)
    finetune_bytes: int = 0
    adapter_bytes: int = 0

    @property
    def saved(self) -> list[ChangedTensor]:
        return [c for c in self.changed if c.saved]

    @property
    def left_out(self) -> list[ChangedTensor]:
        return [c for c in self.changed if not c.saved]

    def modules_by_kind(self) -> dict[str, list[ModuleResult]]:
        """The adapted modules grouped by kind (q_proj, ...), by kind."""
        return by_kind(self.modules)

    @property
    def missed_target(self) -> list[ModuleResult]:
        """Modules whose rank cap kept them above the target error."""
        return [m for m in self.modules if m.target_met is False]

    def to_dict(self) -> dict[str, Any]:
        errors = [m.error for m in self.modules]
        weight = [m.weight_rel_error for m in self.modules if m.weight_rel_error is not None]
        return {
            "format": REPORT_FORMAT, "version": REPORT_VERSION, **self.settings,
            "summary": {
                # max_error / mean_error: delta-relative, under their first names.
                "modules": len(self.modules), "max_error": max(errors, default=0.0),
                "mean_error": sum(errors) / len(errors) if errors else 0.0,
                "delta_rel_error_max": max(errors, default=0.0),
                "weight_rel_error_max": max(weight, default=0.0),
                "weight_rel_error_mean": sum(weight) / len(weight) if weight else 0.0,
                "missed_target": [m.module for m in self.missed_target],
                "finetune_bytes": self.finetune_bytes, "adapter_bytes": self.adapter_bytes,
                "lora_bytes_in": sum(m.bytes_in for m in self.modules),
                "lora_bytes_out": sum(m.bytes_out for m in self.modules),
                "saved_bytes": sum(c.nbytes for c in self.saved),
                "left_out_bytes": sum(c.nbytes for c in self.left_out),
            },
            "modules": [m.to_dict() for m in self.modules],
            "unchanged_targets": self.unchanged,
            "saved": [c.to_dict() for c in self.saved],
            "left_out": [c.to_dict() for c in self.left_out],
        }

    def write(self, out_dir: Path) -> None:
        (out_dir / REPORT_FILE).write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        plot_spectra(self.modules, out_dir / SPECTRA_FILE, _plot_title(self.settings))


def by_kind(modules: Sequence[ModuleResult]) -> dict[str, list[ModuleResult]]:
    """`modules` grouped by module kind (q_proj, ...), sorted by kind."""
    kinds: dict[str, list[ModuleResult]] = defaultdict(list)
    for m in modules:
        kinds[module_kind(m.module)].append(m)
    return dict(sorted(kinds.items()))


def plot_spectra(modules: list[ModuleResult], path: Path, title: str) -> None:
    """σ_i/σ_1 (log scale) against i, one panel per module kind, layers overlaid by colour.

    A dot on each curve marks the rank chosen for that module (a cross: target missed).
    Curves show the singular values the sketch saw: the chosen rank plus oversampling.
    Drawn on a bare `Figure` (the Agg canvas): no display, no global pyplot state.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    kinds = by_kind(modules)
    cols = min(4, max(1, len(kinds)))
    rows = -(-max(1, len(kinds)) // cols)
    fig = Figure(figsize=(4.2 * cols + 0.8, 3.3 * rows + 0.5), layout="constrained")
    fig.suptitle(title, fontsize=10)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    top_layer = max((_layer(m.module) for m in modules), default=0) or 1
    colours = ScalarMappable(Normalize(0, top_layer), colormaps["viridis"])
    for ax, (kind, group) in zip(axes, kinds.items(), strict=False):
        _draw_kind(ax, kind, group, colours)
    for ax in axes[len(kinds):]:
        ax.set_axis_off()
    bar = fig.colorbar(colours, ax=list(axes), label="layer", shrink=0.8)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    fig.savefig(path, dpi=100)


def _draw_kind(ax: Any, kind: str, group: list[ModuleResult], colours: Any) -> None:
    for m in group:
        sv = [s for s in m.singular_values if s > 0]
        if not sv:
            continue
        ratios = [s / sv[0] for s in sv]
        colour = colours.to_rgba(_layer(m.module))
        ax.semilogy(range(1, len(ratios) + 1), ratios, color=colour, linewidth=1)
        if 0 < m.rank <= len(ratios):
            marker = "o" if m.target_met is not False else "x"
            ax.plot([m.rank], [ratios[m.rank - 1]], marker, color=colour, markersize=6,
                    markeredgewidth=1.5)
    ranks = sorted({m.rank for m in group})
    shown = f"{ranks[0]}" if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
    ax.set_title(f"{kind}: {len(group)} modules, rank {shown}", fontsize=9)
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i / σ_1")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.25)


def _layer(module: str) -> int:
    return layer_index(module) or 0


def _plot_title(settings: dict[str, Any]) -> str:
    if settings.get("mode") == "rank":
        how = f"fixed rank {settings.get('rank')}"
    else:
        how = (f"target error {settings.get('target_error')}, max rank "
               f"{settings.get('max_rank')} (x: target missed)")
    return f"Singular values of ΔW per module ({how}); dot: chosen rank"
