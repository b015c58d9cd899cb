"""The BitDelta compression report: per-tensor errors and sizes, totals, the ratio.

Errors are for Ŵ_ft in float32 (a merge's rounding to the fine-tune's dtype is not in them);
ratio = bytes_in / bytes_out of the safetensors files. See docs/codecs.md, "BitDelta
compression".
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from compress.bitdelta.codec import ErrorSums, ErrorTotals
from compress.bitdelta.format import FORMAT, FORMAT_VERSION, ScaleMode
from compress.targets import module_kind, module_name

GB = 10**9


@dataclass(frozen=True)
class TensorReport(ErrorSums):
    """One tensor of the delta: compressed to bits ("bitdelta") or stored as is ("full")."""

    name: str  # the fine-tune tensor, e.g. "model.layers.0.self_attn.q_proj.weight"
    kind: Literal["bitdelta", "full"]
    shape: tuple[int, ...]
    dtype: str  # the fine-tune's
    bytes_in: int  # the fine-tune tensor's bytes
    bytes_out: int  # bytes it takes in the delta
    delta_sq: float = 0.0  # ‖ΔW‖²
    error_sq: float = 0.0  # ‖ΔW − α·sign(ΔW)‖² = ‖W_ft − Ŵ_ft‖²
    finetune_sq: float = 0.0  # ‖W_ft‖²

    @property
    def module_kind(self) -> str:
        """The kind of module the tensor belongs to, e.g. "q_proj"."""
        return module_kind(module_name(self.name))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "dtype": self.dtype, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "delta_rel_error": json_float(self.delta_rel_error),
                "weight_rel_error": json_float(self.weight_rel_error)}


@dataclass(frozen=True)
class BitDeltaReport:
    scale_mode: ScaleMode
    tensors: list[TensorReport]  # in delta order
    omitted: list[str]  # fine-tune tensors equal to the base's, left out of the delta
    bytes_in: int
    bytes_out: int
    seconds: float
    files: list[str] = field(default_factory=list)  # the delta's files, by name

    @property
    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else math.inf

    @property
    def compressed(self) -> list[TensorReport]:
        return [t for t in self.tensors if t.kind == "bitdelta"]

    @property
    def errors(self) -> ErrorTotals:
        """The errors over all compressed weights taken together."""
        return ErrorTotals.of(self.compressed)

    def errors_by_kind(self) -> dict[str, ErrorTotals]:
        """The errors of each kind of compressed module (q_proj, ...), by kind."""
        groups: dict[str, list[TensorReport]] = defaultdict(list)
        for t in self.compressed:
            groups[t.module_kind].append(t)
        return {kind: ErrorTotals.of(group) for kind, group in sorted(groups.items())}

    @property
    def delta_rel_error(self) -> float:
        """Over all compressed weights: √(Σ‖ΔW − α·sign‖² / Σ‖ΔW‖²)."""
        return self.errors.delta_rel_error

    @property
    def weight_rel_error(self) -> float:
        """Over all compressed weights: √(Σ‖W_ft − Ŵ_ft‖² / Σ‖W_ft‖²)."""
        return self.errors.weight_rel_error

    @property
    def throughput_gb_s(self) -> float:
        """GB of fine-tune read per second."""
        return self.bytes_in / GB / self.seconds if self.seconds > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": int(FORMAT_VERSION),
            "scale_mode": self.scale_mode.value,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "gb_in": self.bytes_in / GB, "gb_out": self.bytes_out / GB,
            "ratio": json_float(self.ratio),
            "delta_rel_error": json_float(self.delta_rel_error),
            "weight_rel_error": json_float(self.weight_rel_error),
            "compressed_count": len(self.compressed),
            "full_count": len(self.tensors) - len(self.compressed),
            "omitted": self.omitted,
            "seconds": self.seconds,
            "throughput_gb_s": json_float(self.throughput_gb_s),
            "files": self.files,
            "tensors": [t.to_dict() for t in self.tensors],
        }


def json_float(value: float) -> float | None:
    """`value` for a JSON report, None where it is not defined (JSON has no NaN or Infinity).

    E.g. a relative error to a reference of 0 (W_ft = 0 with Ŵ_ft ≠ 0, y_ft = 0 with y ≠ 0).
    """
    return value if math.isfinite(value) else None
