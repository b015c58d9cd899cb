"""The BitDelta compression report: per-tensor errors and sizes, totals, the ratio.

Errors are reported for Ŵ_ft = W_base + α·sign(ΔW) in float32, i.e. for what the delta
encodes. A merge then rounds Ŵ_ft to the fine-tune's dtype, which adds at most half a unit
in the last place per element (for fp16 about 2⁻¹¹ relative), usually far below the
1-bit error; that rounding is not in these numbers.

Sizes: `bytes_in` is the fine-tune's safetensors files (headers included), `bytes_out` the
delta's safetensors files (not config.json, report.json or the shard index); the ratio is
bytes_in / bytes_out. GB = 10⁹ bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from compress.bitdelta_codec import ErrorSums, relative_error
from compress.bitdelta_format import FORMAT, FORMAT_VERSION, ScaleMode

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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "dtype": self.dtype, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "delta_rel_error": _json_float(self.delta_rel_error),
                "weight_rel_error": _json_float(self.weight_rel_error)}


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
    def delta_rel_error(self) -> float:
        """Over all compressed weights: √(Σ‖ΔW − α·sign‖² / Σ‖ΔW‖²)."""
        chosen = self.compressed
        return relative_error(sum(t.error_sq for t in chosen), sum(t.delta_sq for t in chosen))

    @property
    def weight_rel_error(self) -> float:
        """Over all compressed weights: √(Σ‖W_ft − Ŵ_ft‖² / Σ‖W_ft‖²)."""
        chosen = self.compressed
        return relative_error(sum(t.error_sq for t in chosen), sum(t.finetune_sq for t in chosen))

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
            "ratio": _json_float(self.ratio),
            "delta_rel_error": _json_float(self.delta_rel_error),
            "weight_rel_error": _json_float(self.weight_rel_error),
            "compressed_count": len(self.compressed),
            "full_count": len(self.tensors) - len(self.compressed),
            "omitted": self.omitted,
            "seconds": self.seconds,
            "throughput_gb_s": _json_float(self.throughput_gb_s),
            "files": self.files,
            "tensors": [t.to_dict() for t in self.tensors],
        }


def _json_float(value: float) -> float | None:
    # JSON has no Infinity or NaN; None says "not defined" (e.g. W_ft = 0 but Ŵ_ft ≠ 0).
    return value if math.isfinite(value) else None
