"""BitDelta on tensors: ΔW ≈ α ⊙ sign(ΔW), α the least-squares scale per row or per matrix.

α = mean|ΔW|, so the error follows from Σ|ΔW| and ‖ΔW‖² in one pass over ΔW, a chunk of rows
at a time, without materialising α·sign; sign bits and α are bit-identical to the plain
computation. See docs/codecs.md, "BitDelta compression" (the arithmetic and its precision).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from compress.bitdelta import cpu_encoder
from compress.bitdelta.cpu_encoder import ChunkSums
from compress.bitdelta.cpu_encoder import EncoderPool as EncoderPool
from compress.bitdelta.cpu_encoder import encoder_pool as encoder_pool
from compress.bitdelta.format import ScaleMode
from compress.errors import InvalidModel, InvalidParameter
from compress.tensorio import ensure_finite
from kernels.packing import pack_signs, unpack_signs


class ErrorSums:
    """The relative errors of a BitDelta reconstruction, from the three sums kept for it."""

    delta_sq: float  # ‖ΔW‖²
    error_sq: float  # ‖ΔW − α·sign(ΔW)‖² = ‖W_ft − Ŵ_ft‖²
    finetune_sq: float  # ‖W_ft‖²

    @property
    def delta_rel_error(self) -> float:
        """‖ΔW − α·sign(ΔW)‖ / ‖ΔW‖ (0 when ΔW = 0: reconstruction is exact)."""
        return relative_error(self.error_sq, self.delta_sq)

    @property
    def weight_rel_error(self) -> float:
        """‖W_ft − Ŵ_ft‖ / ‖W_ft‖ with Ŵ_ft = W_base + α·sign(ΔW) in float32 (NaN if unknown)."""
        return relative_error(self.error_sq, self.finetune_sq)


@dataclass(frozen=True)
class ErrorTotals(ErrorSums):
    """The sums of several tensors' ErrorSums: their errors taken together."""

    delta_sq: float
    error_sq: float
    finetune_sq: float

    @classmethod
    def of(cls, parts: Iterable[ErrorSums]) -> ErrorTotals:
        chosen = list(parts)
        return cls(delta_sq=sum(p.delta_sq for p in chosen),
                   error_sq=sum(p.error_sq for p in chosen),
                   finetune_sq=sum(p.finetune_sq for p in chosen))


@dataclass(frozen=True)
class CompressedDelta(ErrorSums):
    """bits int32 [ceil(K/32), N] and α float32 [N] or [], with the norms the report needs."""

    bits: torch.Tensor
    scale: torch.Tensor
    delta_sq: float  # ‖ΔW‖²
    error_sq: float  # ‖ΔW − α·sign(ΔW)‖² for the stored α
    finetune_sq: float  # ‖W_ft‖², when encoded from a (base, fine-tune) pair; else NaN


def relative_error(error_sq: float, reference_sq: float) -> float:
    """√(error² / reference²); 0 for an exact zero reference, inf if only the reference is 0."""
    if reference_sq > 0 or math.isnan(reference_sq):
        return math.sqrt(error_sq / reference_sq)
    return 0.0 if error_sq == 0 else math.inf


def compress_delta(delta: torch.Tensor, scale: ScaleMode | str = ScaleMode.ROW,
                   name: str = "ΔW", pool: EncoderPool | None = None) -> CompressedDelta:
    """Compress a [N, K] ΔW of any float dtype (computed in float32); `name` is for errors."""
    _check_matrix(delta, name)
    encoded = _encode(_Rows(delta, None), ScaleMode.parse(scale), pool,
                      lambda: ensure_finite(name, delta), name)
    return dataclasses.replace(encoded, finetune_sq=math.nan)


def compress_pair(base: torch.Tensor, finetune: torch.Tensor, scale: ScaleMode, name: str,
                  where: tuple[str, str] = ("base", "fine-tune"), pool: EncoderPool | None = None
                  ) -> CompressedDelta:
    """Compress ΔW = finetune − base (as stored, any float dtypes) without materialising ΔW.

    NaN or Inf in either input is refused with the tensor's name and `where` it is.
    `pool` (see `encoder_pool`) shares the rows out among CPU worker threads.
    """
    _check_matrix(finetune, name)
    if base.shape != finetune.shape:
        raise InvalidModel(f"{name!r}: base is {list(base.shape)}, fine-tune is "
                           f"{list(finetune.shape)}")

    def explain_non_finite() -> None:
        ensure_finite(name, base, where[0])
        ensure_finite(name, finetune, where[1])

    return _encode(_Rows(finetune, base), scale, pool, explain_non_finite, name)


def decompress_delta(bits: torch.Tensor, scale: torch.Tensor, k: int) -> torch.Tensor:
    """α ⊙ sign(ΔW) as float32 [N, K] from the stored bits and scale."""
    signs = unpack_signs(bits, k, torch.float32)
    alpha = scale.to(device=signs.device, dtype=torch.float32)
    return signs.mul_(alpha.view(-1, 1) if alpha.dim() == 1 else alpha)


@dataclass(frozen=True)
class _Rows:
    """Where ΔW's rows come from: ΔW itself (`base` None), or a fine-tune and its base."""

    first: torch.Tensor  # ΔW, or the fine-tune
    base: torch.Tensor | None

    @property
    def device(self) -> torch.device:
        return self.first.device

    def fill(self, d: torch.Tensor, finetune32: torch.Tensor, start: int, stop: int) -> None:
        """ΔW[start:stop] in float32 into `d`; for a pair, W_ft's rows into `finetune32`.

        Each input is converted to float32 first and subtracted in float32: faster on the CPU than
        a mixed-dtype `d.sub_(fp16)` (docs/benchmarks.md, "Figures quoted from code"), and the same
        float32 ft − base either way (one rounding of the exact difference).
        """
        if self.base is None:
            d.copy_(self.first[start:stop])
            return
        finetune32.copy_(self.first[start:stop])
        d.copy_(self.base[start:stop])
        torch.sub(finetune32, d, out=d)


def _encode(rows: _Rows, mode: ScaleMode, pool: EncoderPool | None,
            explain_non_finite: Callable[[], None], name: str) -> CompressedDelta:
    """One pass over ΔW, a chunk of rows at a time: signs, Σ|ΔW| per row, ‖ΔW‖²."""
    n, k = rows.first.shape
    device = rows.device
    abs_sums = torch.empty(n, dtype=torch.float32, device=device)
    if device.type == "cpu":
        bits, chunk_sums = cpu_encoder.encode_matrix(n, k, rows.first, rows.base, abs_sums, pool)
    else:
        bits, chunk_sums = _encode_whole(n, k, rows, abs_sums)
    # Summed chunk by chunk in row order from 0.0, as one worker does: the totals do
    # not depend on how many workers shared the rows.
    delta_sq = sum((s[0] for s in chunk_sums), 0.0)
    filled_sq = sum((s[1] for s in chunk_sums), 0.0)
    l1 = abs_sums.double()
    # NaN or Inf anywhere in ΔW (hence in either input) makes these sums non-finite: the
    # check costs nothing, where torch.isfinite over both inputs would cost a full pass.
    if not (math.isfinite(delta_sq) and math.isfinite(filled_sq)
            and bool(torch.isfinite(l1).all())):
        explain_non_finite()
        raise _overflow(name)
    if mode is ScaleMode.ROW:
        alpha = (l1 / max(k, 1)).float()  # an empty row (K = 0) has α = 0
        a = alpha.double()
        error_sq = delta_sq - 2.0 * float((a * l1).sum()) + k * float((a * a).sum())
    else:
        alpha = torch.tensor(float(l1.sum()) / max(n * k, 1), dtype=torch.float32, device=device)
        a_value = float(alpha)
        error_sq = delta_sq - 2.0 * a_value * float(l1.sum()) + n * k * a_value * a_value
    filled = filled_sq if rows.base is not None else 0.0
    return CompressedDelta(bits.cpu(), alpha.cpu(), delta_sq, max(error_sq, 0.0), filled)


def _encode_whole(n: int, k: int, rows: _Rows, abs_sums: torch.Tensor
                  ) -> tuple[torch.Tensor, ChunkSums]:
    """On a GPU the whole matrix is one chunk, with torch's packing kernel."""
    d = torch.empty(n, k, dtype=torch.float32, device=rows.device)
    finetune32 = torch.empty_like(d) if rows.base is not None else d
    rows.fill(d, finetune32, 0, n)
    finetune_sq = _sum_of_squares(finetune32) if rows.base is not None else 0.0
    bits = pack_signs(d)
    delta_sq = _sum_of_squares(d)
    d.abs_()
    torch.sum(d, dim=1, out=abs_sums)
    return bits, [(delta_sq, finetune_sq)]


def _sum_of_squares(t: torch.Tensor) -> float:
    """Σ t² in float64 (at least as accurate as the CPU loop's sums); a row block at a
    time, to bound memory."""
    step = max(1, cpu_encoder.CHUNK_ELEMENTS * 8 // max(t.shape[1], 1))
    return sum((float(t[i:i + step].double().square().sum()) for i in range(0, t.shape[0], step)),
               0.0)


def _check_matrix(t: torch.Tensor, name: str) -> None:
    if t.dim() != 2 or not t.is_floating_point():
        raise InvalidParameter(f"{name!r}: BitDelta compresses 2-D float matrices, got "
                               f"{t.dtype} {list(t.shape)}")


def _overflow(name: str) -> InvalidModel:
    return InvalidModel(
        f"{name!r}: the inputs are finite but ΔW or its norms overflow float32 (values "
        "above ~1e19); this is not a trained weight: check the checkpoint"
    )
