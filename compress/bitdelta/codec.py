"""BitDelta on tensors: ΔW ≈ α ⊙ sign(ΔW), α the least-squares scale per row or per matrix.

For fixed signs s = sign(ΔW) (s = +1 where ΔW ≥ 0), ‖ΔW − α·s‖² over a row of K values is
‖ΔW‖² − 2α·Σ|ΔW| + α²·K, minimised by α = Σ|ΔW| / K = mean|ΔW| (over the whole matrix for
one α per matrix). The error is therefore known from two sums, Σ|ΔW| and ‖ΔW‖², without
materialising α·s: the encoder makes one pass over ΔW, a slab of rows at a time, and
never holds more than the inputs plus a cache-sized float32 slab.

On the CPU the elementwise work (float32 conversions, ΔW, its signs, |ΔW|) and the row
sums run on L2-sized chunks of a slab, and the sign bits are packed with numpy's SIMD
compare and `packbits`. torch reduces each row on its own, so chunked row sums equal
whole-matrix ones; the norms stay per slab, on the same float32 values in the same order
as ever, so the output is bit-identical to the plain computation
(tests/compress/bitdelta/test_codec_fast.py holds that computation).

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

import numpy as np
import torch

from compress.bitdelta.format import ScaleMode
from compress.errors import InvalidModel, InvalidParameter
from compress.tensorio import ensure_finite
from kernels.packing import pack_signs, packed_words, unpack_signs, words_from_row_bytes

# Rows per slab on the CPU: 2^20 float32 values (4 MB) stay in the L2/L3 caches, so the
# row-sum and norm passes over a slab do not go back to DRAM. The slab also fixes the
# float32 reduction order of those sums, hence α and the error norms: changing it changes
# the output's last bits. On a GPU the whole matrix is one slab.
_SLAB_ELEMENTS = 1 << 20
# Elements per chunk of a slab's elementwise work: 2^17 float32 (512 KB) per buffer keeps
# the chunk's inputs, ΔW, W_ft and sign flags in a 2 MB L2. One 11008×4096 fp16 pair, one
# thread (Xeon, AVX-512): 82 ms with whole 4 MB slabs, 68 ms with 2^17, 70 ms with 2^16.
_CHUNK_ELEMENTS = 1 << 17


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
    encoded = _encode(n, k, _Rows(delta, None), ScaleMode.parse(scale), pool,
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

    def explain_non_finite() -> None:
        ensure_finite(name, base, where[0])
        ensure_finite(name, finetune, where[1])

    return _encode(n, k, _Rows(finetune, base), scale, pool, explain_non_finite, name)


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
    (at least 1), leaving a core to the reader thread: into reused buffers it costs about
    half the CPU of encoding (0.17 vs 0.38 CPU-s per GB of fp16 pair), and on the busy
    2-core box a second worker gained nothing (4 Llama-7B-shaped layers, 3 rounds:
    3.6-3.9 s with one worker, 3.5-5.3 s with two).
    """
    count = max(1, torch.get_num_threads() - 1 if workers is None else workers)
    # set_num_threads in a worker thread is local to it with torch's OpenMP backend
    # (the default); the caller's own setting is untouched.
    with ThreadPoolExecutor(count, "deltahub-encode", initializer=torch.set_num_threads,
                            initargs=(1,)) as executor:
        yield EncoderPool(executor, count)


@dataclass(frozen=True)
class _Rows:
    """Where ΔW's rows come from: ΔW itself (`base` None), or a fine-tune and its base."""

    first: torch.Tensor  # ΔW, or the fine-tune
    base: torch.Tensor | None

    def fill(self, d: torch.Tensor, finetune32: torch.Tensor, start: int, stop: int) -> None:
        """ΔW[start:stop] in float32 into `d`; for a pair, W_ft's rows into `finetune32`.

        Converting each input to float32 first and subtracting float32 from float32 is
        ~5x faster on the CPU than a mixed-dtype `d.sub_(fp16)`; the result is the same
        float32 ft − base either way (one rounding of the exact difference).
        """
        if self.base is None:
            d.copy_(self.first[start:stop])
            return
        finetune32.copy_(self.first[start:stop])
        d.copy_(self.base[start:stop])
        torch.sub(finetune32, d, out=d)


def _encode(n: int, k: int, rows: _Rows, mode: ScaleMode, pool: EncoderPool | None,
            explain_non_finite: Callable[[], None], name: str) -> CompressedDelta:
    """One pass over ΔW, a slab of rows at a time: signs, Σ|ΔW| per row, ‖ΔW‖²."""
    device = rows.first.device
    abs_sums = torch.empty(n, dtype=torch.float32, device=device)
    if device.type == "cpu":
        bits, slab_sums = _encode_cpu(n, k, rows, pool, abs_sums)
    else:
        bits, slab_sums = _encode_whole(n, k, rows, abs_sums)
    # Summed slab by slab in row order from 0.0, as one worker always did: the totals do
    # not depend on how many workers shared the rows.
    delta_sq = sum((s[0] for s in slab_sums), 0.0)
    filled_sq = sum((s[1] for s in slab_sums), 0.0)
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
    filled = filled_sq if rows.base is not None else 0.0
    return CompressedDelta(bits.cpu(), alpha.cpu(), delta_sq, max(error_sq, 0.0), filled)


SlabSums = list[tuple[float, float]]  # per slab, in row order: ‖ΔW‖², ‖W_ft‖² (0 for ΔW)


def _encode_whole(n: int, k: int, rows: _Rows, abs_sums: torch.Tensor
                  ) -> tuple[torch.Tensor, SlabSums]:
    """On a GPU the whole matrix is one slab, with torch's packing kernel."""
    device = rows.first.device
    d = torch.empty(n, k, dtype=torch.float32, device=device)
    finetune32 = torch.empty_like(d) if rows.base is not None else d
    rows.fill(d, finetune32, 0, n)
    finetune_sq = float(torch.linalg.vector_norm(finetune32)) ** 2 if rows.base is not None else 0.0
    bits = pack_signs(d)
    d.abs_()
    torch.sum(d, dim=1, out=abs_sums)
    return bits, [(float(torch.linalg.vector_norm(d)) ** 2, finetune_sq)]


def _encode_cpu(n: int, k: int, rows: _Rows, pool: EncoderPool | None,
                abs_sums: torch.Tensor) -> tuple[torch.Tensor, SlabSums]:
    """Slabs of `_slab_rows` rows from row 0, whole slabs shared out among the workers.

    Row sums and norms are taken per slab, on the same [rows, K] float32 slabs whatever
    the worker count, so α and the error sums do not depend on it.
    """
    step = _slab_rows(n, k)
    slabs = [(start, min(start + step, n)) for start in range(0, n, step)]
    packed = torch.empty(n, 4 * packed_words(k), dtype=torch.uint8)

    def run(group: list[tuple[int, int]]) -> SlabSums:
        return _encode_slabs(group, k, rows, packed, abs_sums)

    if pool is None:
        groups = [run(slabs)]
    else:
        groups = list(pool.executor.map(run, _groups(slabs, pool.workers)))
    return words_from_row_bytes(packed), [s for group in groups for s in group]


def _encode_slabs(slabs: list[tuple[int, int]], k: int, rows: _Rows, packed: torch.Tensor,
                  abs_sums: torch.Tensor) -> SlabSums:
    """Fill `packed` (sign bytes) and `abs_sums` for these slabs; return their norms².

    Inside a slab, the elementwise work (conversions, ΔW, signs, |ΔW|) and the row sums
    run in chunks of `_CHUNK_ELEMENTS` that stay in the core's L2 cache; the norms then
    read the whole float32 slab once each.
    """
    if not slabs:
        return []
    most = max(stop - start for start, stop in slabs) * k
    work = torch.empty(most, dtype=torch.float32)
    finetune32 = torch.empty(most, dtype=torch.float32) if rows.base is not None else work
    chunk = max(1, _CHUNK_ELEMENTS // max(k, 1))
    flags = np.empty(chunk * k, dtype=np.bool_)
    sums: SlabSums = []
    for start, stop in slabs:
        d = work[: (stop - start) * k].view(stop - start, k)
        ft = finetune32[: d.numel()].view(d.shape)
        for lo in range(0, stop - start, chunk):
            hi = min(lo + chunk, stop - start)
            rows.fill(d[lo:hi], ft[lo:hi], start + lo, start + hi)
            _pack_sign_bytes(d[lo:hi], flags, packed[start + lo : start + hi])
            d[lo:hi].abs_()
            # Each row is reduced on its own whatever the rows beside it (tested), so
            # summing while the chunk is in L2 gives the per-slab sums' bits.
            torch.sum(d[lo:hi], dim=1, out=abs_sums[start + lo : start + hi])
        finetune_sq = float(torch.linalg.vector_norm(ft)) ** 2 if rows.base is not None else 0.0
        sums.append((float(torch.linalg.vector_norm(d)) ** 2, finetune_sq))
    return sums


def _pack_sign_bytes(d: torch.Tensor, scratch: np.ndarray, out: torch.Tensor) -> None:
    """Row bytes of kernels/packing.py's layout for float32 rows `d` [R, K] into `out`.

    Bit 1 where ΔW ≥ 0 (−0.0 included, as `pack_signs`), least-significant bit first,
    padding 0. numpy's SIMD compare and packbits take ~9 ms per 11008×4096 matrix where
    torch's `d >= 0` and int64 shift-ors take ~45 ms (Xeon, AVX-512, one thread).
    """
    r, k = d.shape
    flags = scratch[: r * k].reshape(r, k)
    with np.errstate(invalid="ignore"):  # NaN compares False; the caller refuses it later
        np.greater_equal(d.numpy(), 0, out=flags)
    target = out.numpy()
    used = (k + 7) // 8
    target[:, :used] = np.packbits(flags, axis=-1, bitorder="little")
    target[:, used:] = 0


def _groups(slabs: list[tuple[int, int]], parts: int) -> list[list[tuple[int, int]]]:
    """Consecutive runs of slabs, one per worker, as even as whole slabs allow."""
    count = max(1, min(parts, len(slabs)))
    return [slabs[len(slabs) * i // count : len(slabs) * (i + 1) // count] for i in range(count)]


def _slab_rows(n: int, k: int) -> int:
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
