"""BitDelta on tensors: ΔW ≈ α ⊙ sign(ΔW), α the least-squares scale per row or per matrix.

For fixed signs s = sign(ΔW) (s = +1 where ΔW ≥ 0), ‖ΔW − α·s‖² over a row of K values is
‖ΔW‖² − 2α·Σ|ΔW| + α²·K, minimised by α = Σ|ΔW| / K = mean|ΔW| (over the whole matrix for
one α per matrix). The error is therefore known from two sums, Σ|ΔW| and ‖ΔW‖², without
materialising α·s: the encoder makes one pass over ΔW, a slab of rows at a time, and
never holds more than the inputs plus a cache-sized float32 slab.

Statistics: row sums accumulate in float32 (torch's cascaded reductions, relative error
about 1e-7) and are combined in float64. The error formula uses the stored float32 α, so it
is the error of exactly what is written. Where ΔW has nearly constant magnitude the
cancellation in ‖ΔW‖² − 2α·Σ|ΔW| + α²K leaves an absolute error of about 1e-7·‖ΔW‖², i.e.
relative errors below ~3e-4 read as noise; such deltas do not occur in practice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from compress.bitdelta.format import ScaleMode
from compress.errors import InvalidModel, InvalidParameter
from compress.tensorio import ensure_finite
from kernels import pack_signs, packed_words, unpack_signs

# Rows per slab on the CPU: 2^20 float32 values (4 MB) stay in the L2/L3 caches, so the
# sign, |ΔW| and norm passes over a slab do not go back to DRAM. On a GPU the whole
# matrix is one slab.
_SLAB_ELEMENTS = 1 << 20


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
    n, k = delta.shape

    def fill(d: torch.Tensor, spare: torch.Tensor, start: int, stop: int) -> float:
        d.copy_(delta[start:stop])
        return 0.0

    encoded = _encode(n, k, fill, ScaleMode.parse(scale), delta.device, pool,
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
    n, k = finetune.shape

    def fill(d: torch.Tensor, spare: torch.Tensor, start: int, stop: int) -> float:
        # Converting to float32 into preallocated slabs first and subtracting float32 from
        # float32 is ~5x faster on the CPU than a mixed-dtype `d.sub_(fp16)`.
        d.copy_(finetune[start:stop])
        finetune_sq = float(torch.linalg.vector_norm(d)) ** 2
        spare.copy_(base[start:stop])
        d.sub_(spare)
        return finetune_sq

    def explain_non_finite() -> None:
        ensure_finite(name, base, where[0])
        ensure_finite(name, finetune, where[1])

    return _encode(n, k, fill, scale, finetune.device, pool, explain_non_finite, name)


def decompress_delta(bits: torch.Tensor, scale: torch.Tensor, k: int) -> torch.Tensor:
    """α ⊙ sign(ΔW) as float32 [N, K] from the stored bits and scale."""
    signs = unpack_signs(bits, k, torch.float32)
    alpha = scale.to(device=signs.device, dtype=torch.float32)
    return signs.mul_(alpha.view(-1, 1) if alpha.dim() == 1 else alpha)


@dataclass(frozen=True)
class EncoderPool:
    executor: Executor
    workers: int


@contextlib.contextmanager
def encoder_pool(workers: int | None = None) -> Iterator[EncoderPool]:
    """CPU worker threads for `compress_pair`, each running torch ops on one thread.

    The encoder's ops work on cache-sized slabs, too small for torch's intra-op threads to
    pay off: beside a reader thread they oversubscribe the cores, and on a busy machine
    every op then waits for a time slice (measured on the shared 2-core dev box, two
    7B-shaped layers: 2.7 s with two single-threaded workers, 20 s with torch's two
    intra-op threads in one). Splitting the rows among single-threaded workers uses every
    core without that. `workers` defaults to one less than `torch.get_num_threads()`
    (at least 1): the reader thread needs about a core of its own, since copying pages
    from the page cache costs about as much CPU as encoding them.
    """
    count = max(1, torch.get_num_threads() - 1 if workers is None else workers)
    # set_num_threads in a worker thread is local to it with torch's OpenMP backend
    # (the default); the caller's own setting is untouched.
    with ThreadPoolExecutor(count, "deltahub-encode", initializer=torch.set_num_threads,
                            initargs=(1,)) as executor:
        yield EncoderPool(executor, count)


Fill = Callable[[torch.Tensor, torch.Tensor, int, int], float]


def _encode(n: int, k: int, fill: Fill, mode: ScaleMode, device: torch.device,
            pool: EncoderPool | None, explain_non_finite: Callable[[], None], name: str
            ) -> CompressedDelta:
    """One pass over ΔW, a slab of rows at a time: signs, Σ|ΔW| per row, ‖ΔW‖²."""
    bits = torch.empty(packed_words(k), n, dtype=torch.int32, device=device)
    abs_sums = torch.empty(n, dtype=torch.float32, device=device)

    def rows(span: tuple[int, int]) -> tuple[float, float]:
        return _encode_rows(span, k, fill, bits, abs_sums)

    if pool is None or device.type != "cpu":
        partials = [rows((0, n))]
    else:
        partials = list(pool.executor.map(rows, _spans(n, pool.workers)))
    delta_sq = sum(p[0] for p in partials)
    filled_sq = sum(p[1] for p in partials)
    l1 = abs_sums.double()
    # NaN or Inf anywhere in ΔW (hence in either input) makes these sums non-finite: the
    # check costs nothing, where torch.isfinite over both inputs would cost a full pass.
    if not (math.isfinite(delta_sq) and math.isfinite(filled_sq)
            and bool(torch.isfinite(l1).all())):
        explain_non_finite()
        raise _overflow(name)
    if mode is ScaleMode.ROW:
        alpha = (l1 / k).float()
        a = alpha.double()
        error_sq = delta_sq - 2.0 * float((a * l1).sum()) + k * float((a * a).sum())
    else:
        alpha = torch.tensor(float(l1.sum()) / (n * k), dtype=torch.float32, device=device)
        a_value = float(alpha)
        error_sq = delta_sq - 2.0 * a_value * float(l1.sum()) + n * k * a_value * a_value
    return CompressedDelta(bits.cpu(), alpha.cpu(), delta_sq, max(error_sq, 0.0), filled_sq)


def _encode_rows(span: tuple[int, int], k: int, fill: Fill, bits: torch.Tensor,
                 abs_sums: torch.Tensor) -> tuple[float, float]:
    """Rows [start, stop): fill bits and Σ|ΔW| in place; return ‖ΔW‖² and fill's sum."""
    first, last = span
    device = bits.device
    rows = _slab_rows(last - first, k, device)
    work = torch.empty(rows * k, dtype=torch.float32, device=device)
    spare = torch.empty(rows * k, dtype=torch.float32, device=device)
    delta_sq = filled_sq = 0.0
    for start in range(first, last, rows):
        stop = min(start + rows, last)
        d = work[: (stop - start) * k].view(stop - start, k)
        filled_sq += fill(d, spare[: d.numel()].view(d.shape), start, stop)
        bits[:, start:stop] = pack_signs(d)
        d.abs_()
        torch.sum(d, dim=1, out=abs_sums[start:stop])
        delta_sq += float(torch.linalg.vector_norm(d)) ** 2
    return delta_sq, filled_sq


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    step = max(1, -(-n // max(parts, 1)))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _slab_rows(n: int, k: int, device: torch.device) -> int:
    if device.type != "cpu":
        return max(n, 1)
    return max(1, min(n, _SLAB_ELEMENTS // max(k, 1)))


def _check_matrix(t: torch.Tensor, name: str) -> None:
    if t.dim() != 2 or not t.is_floating_point():
        raise InvalidParameter(f"{name!r}: BitDelta compresses 2-D float matrices, got "
                               f"{t.dtype} {list(t.shape)}")


def _overflow(name: str) -> InvalidModel:
    return InvalidModel(
        f"{name!r}: the inputs are finite but ΔW or its norms overflow float32 (values "
        "above ~1e19); this is not a trained weight: check the checkpoint"
    )
