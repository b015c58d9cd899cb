"""Write a distilled delta: the input delta's files with new α, its report, a loss plot.

Same format and version: only the `<module>.weight.scale` tensors change, every other tensor
is copied byte for byte, and `__metadata__` gains `distillation`.
See docs/codecs.md, "Scale distillation".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from compress.bitdelta.format import DELTA_INDEX, REPORT_FILE
from compress.filenames import CONFIG_FILE, MODEL_CARD
from compress.tensorio import Checkpoint, PlannedTensor
from compress.tensorio.writer import SafetensorsWriter

DISTILLATION_KEY = "distillation"  # in __metadata__ and in report.json
LOSS_PLOT = "distill_loss.png"


def write_distilled(delta: Checkpoint, scales: Mapping[str, torch.Tensor], out: Path,
                    metadata: Mapping[str, Any]) -> list[Path]:
    """The delta's shards in `out` with `scales` (by tensor name) replacing its α."""
    meta = {**delta.metadata, DISTILLATION_KEY: json.dumps(dict(metadata), sort_keys=True)}
    written: list[Path] = []
    for file_name in delta.filenames:
        header = delta.headers[file_name]
        entries = sorted(header.tensors.values(), key=lambda e: e.start)
        writer = SafetensorsWriter(out / file_name,
                                   [PlannedTensor(e.name, e.dtype, e.shape) for e in entries],
                                   meta)
        try:
            for entry in entries:
                tensor = scales.get(entry.name)
                writer.write(entry.name, tensor if tensor is not None
                             else delta.tensor(entry.name))
            writer.close()
        except BaseException:
            writer.abort()
            raise
        written.append(out / file_name)
    files = set(delta.source.files())
    if DELTA_INDEX in files:
        index = json.loads(delta.source.read_bytes(DELTA_INDEX))
        index["metadata"] = {**index.get("metadata", {}), DISTILLATION_KEY: meta[DISTILLATION_KEY]}
        (out / DELTA_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        written.append(out / DELTA_INDEX)
    for name in (CONFIG_FILE, MODEL_CARD):
        if name in files:
            (out / name).write_bytes(delta.source.read_bytes(name))
    return written


def write_report(delta: Checkpoint, out: Path, distillation: Mapping[str, Any]) -> None:
    """The delta's report.json (if it has one) with a "distillation" section added."""
    report: dict[str, Any] = {}
    if REPORT_FILE in delta.source.files():
        loaded = json.loads(delta.source.read_bytes(REPORT_FILE))
        report = loaded if isinstance(loaded, dict) else {}
    report[DISTILLATION_KEY] = dict(distillation)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")


def plot_losses(losses: Sequence[float], initial: float, final: float, path: Path,
                title: str, loss_name: str) -> None:
    """Loss per step (log scale), with the probe batches' loss before and after.

    Drawn on a bare `Figure` (the Agg canvas): no display, no global pyplot state.
    matplotlib is imported here, not with the module, so the codec loads without it.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, linewidth=1, label="training batch (before its update)")
    ax.axhline(initial, color="tab:red", linestyle="--", linewidth=1,
               label=f"probe batches, α as compressed: {initial:.4g}")
    ax.axhline(final, color="tab:green", linestyle="--", linewidth=1,
               label=f"probe batches, α distilled: {final:.4g}")
    if min([*losses, initial, final]) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss ({loss_name})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
