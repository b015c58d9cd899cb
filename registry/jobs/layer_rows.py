"""Per-layer figures a job keeps in the adapter's quality, cut to what pages draw.

A job's codec report is not stored as a file (it carries timings, so identical weights
would make new content each time), and its full per-tensor detail is more than a quality
record needs. These keep, per layer, the numbers the adapter page plots: the weight
error of each compressed tensor (BitDelta) or module (LoRA, with its leading singular
values), and verification's output error per layer. Listings never carry them: they show
only a quality's top-level figures.
"""

from __future__ import annotations

from collections.abc import Mapping

from registry.adapters.quality import JSONObject

# Singular values kept per LoRA module: every one up to the rank it keeps and a few past
# it (the decay the rank was cut at), at least MIN_SINGULAR_VALUES; never more than
# MAX_SINGULAR_VALUES (a module's row stays small). Issue 27: a cut at 64 hid ranks 64–126.
MIN_SINGULAR_VALUES = 64
PAST_RANK = 8
MAX_SINGULAR_VALUES = 1024


def codec_layers(codec: Mapping[str, object]) -> dict[str, list[JSONObject]]:
    """`tensors` (BitDelta's compressed ones) and/or `modules` (LoRA), compacted."""
    kept: dict[str, list[JSONObject]] = {}
    tensors = [_pick(row, ("name", "kind", "weight_rel_error", "delta_rel_error"))
               for row in _rows(codec.get("tensors")) if row.get("kind") == "bitdelta"]
    if tensors:
        kept["tensors"] = tensors
    modules = []
    for row in _rows(codec.get("modules")):
        module = _pick(row, ("module", "rank", "error", "weight_rel_error"))
        values = row.get("singular_values")
        if isinstance(values, list):
            module["singular_values"] = values[:_kept(row.get("rank"))]
        modules.append(module)
    if modules:
        kept["modules"] = modules
    return kept


def _kept(rank: object) -> int:
    past = rank + PAST_RANK if isinstance(rank, int) and not isinstance(rank, bool) else 0
    return min(max(MIN_SINGULAR_VALUES, past), MAX_SINGULAR_VALUES)


def verify_layers(report: Mapping[str, object]) -> list[JSONObject]:
    """Each verified layer's output error against the fine-tune, the kernel's, and the
    verified delta's weight errors (after distillation, when the job distilled)."""
    return [_pick(row, ("module", "compression_rel_error", "kernel_max_rel_error",
                        "delta_rel_error", "weight_rel_error"))
            for row in _rows(report.get("layers"))]


def _rows(value: object) -> list[JSONObject]:
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else []


def _pick(row: JSONObject, keys: tuple[str, ...]) -> JSONObject:
    return {key: row[key] for key in keys if key in row}
