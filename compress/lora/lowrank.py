"""Truncated SVD of a weight delta by randomized subspace iteration, and the rank it needs.

`randomized_svd` is Halko, Martinsson & Tropp (2011), Algorithm 4.4. `factorize` gives
B = U·√S, A = √S·Vᵀ at a fixed rank or at the smallest rank meeting a target error, which one
sketch gives exactly (‖ΔW − B·A‖² = ‖ΔW‖² − Σ σ̂_i²); the error as stored is then measured.
See docs/codecs.md, "LoRA extraction".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from compress.errors import InvalidParameter

# Power iterations q and oversampling p: the cheapest pair whose rank-k truncation stays
# within 1 % of the optimal error at k = 256 even with a noise floor under the power law
# (the hard case), measured with `benchmarks/lora_bench.py --tune 4096` (docs/benchmarks.md,
# "How the constants in compress/lora/lowrank.py were chosen"). k + k/2 columns also give the
# plot a view past the chosen rank.
POWER_ITERATIONS = 3
OVERSAMPLE_FRACTION = 0.5
MIN_OVERSAMPLE = 8  # Halko et al.'s p≈5-10 for tiny k, where k/2 would be a handful
# Near half the smaller dimension the sketch costs about as much as the exact SVD
# (docs/benchmarks.md, "How the constants in compress/lora/lowrank.py were chosen").
EXACT_SVD_FRACTION = 0.5
# A matrix this small (m·n·min(m, n) ≤ 2^22, e.g. 160×160 or 256×128) is decomposed
# exactly: the exact SVD costs little more than a sketch there, and a sketch's extra error on
# the 64-wide layers of the real fine-tune cost gain kept against mergekit's exact SVD
# (figures: docs/benchmarks.md, "Figures quoted from code, moved here"). A 4096-wide layer
# is 16000× past the limit.
EXACT_SVD_MAX_WORK = 1 << 22
# The target-error search starts at this sketch rank and doubles it: total work is at
# most twice that of a single sketch at the final rank.
START_SKETCH_RANK = 16
# Residuals are measured this many elements at a time, so ΔW is never copied whole.
CHUNK_ELEMENTS = 1 << 24
# Re-measurements allowed when round-off makes the stored factors miss the target.
MAX_RANK_BUMPS = 4


def oversample_for(rank: int) -> int:
    return max(MIN_OVERSAMPLE, math.ceil(OVERSAMPLE_FRACTION * rank))


def randomized_svd(matrix: torch.Tensor, rank: int, *, oversample: int | None = None,
                   power_iterations: int = POWER_ITERATIONS,
                   generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Singular triplets U [m, w], S [w], Vh [w, n] of a float matrix from a rank-w sketch.

    w = rank + oversample (capped by the matrix). The leading `rank` triplets are the
    accurate ones, within ~1 % of optimal in truncation error (see the constants above);
    the oversampling extras are rougher estimates, useful to see the decay. Falls back to
    the exact SVD when the sketch would cover most of the smaller dimension, or when the
    matrix is so small that the exact SVD costs a millisecond or two. The
    Gaussian test matrix is drawn on the CPU from `generator`, so a seed gives the same
    result on any device.
    """
    m, n = matrix.shape
    if not 0 < rank <= min(m, n):
        raise InvalidParameter(f"rank {rank} is outside 1..{min(m, n)} for a {m}×{n} matrix")
    width = min(rank + (oversample_for(rank) if oversample is None else oversample), m, n)
    if width > EXACT_SVD_FRACTION * min(m, n) or m * n * min(m, n) <= EXACT_SVD_MAX_WORK:
        U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
        return U[:, :width], S[:width], Vh[:width]
    omega = torch.randn(n, width, generator=generator, dtype=matrix.dtype)
    Q, _ = torch.linalg.qr(matrix @ omega.to(matrix.device))
    for _ in range(power_iterations):
        Z, _ = torch.linalg.qr(matrix.T @ Q)
        Q, _ = torch.linalg.qr(matrix @ Z)
    Uc, S, Vh = torch.linalg.svd(Q.T @ matrix, full_matrices=False)
    return Q @ Uc, S, Vh


@dataclass(frozen=True)
class LowRankFactors:
    """ΔW ≈ B·A with what it cost: the rank, the error measured, the spectrum seen."""

    B: torch.Tensor  # [out, r] = U·√S, CPU, in the requested dtype
    A: torch.Tensor  # [r, in] = √S·Vᵀ
    singular_values: torch.Tensor  # σ of ΔW from the last sketch (rank + oversampling)
    norm: float  # ‖ΔW‖_F, exact
    error: float  # ‖ΔW − B·A‖_F / ‖ΔW‖_F, measured with B and A as stored
    target_met: bool | None = None  # None in fixed-rank mode

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def energy(self) -> float:
        """Fraction of ‖ΔW‖² in the r leading singular directions."""
        if self.norm == 0.0:
            return 1.0
        captured = float((self.singular_values[:self.rank].double() ** 2).sum())
        return min(1.0, captured / self.norm**2)


def factorize(delta: torch.Tensor, *, rank: int | None = None,
              target_error: float | None = None, max_rank: int | None = None,
              dtype: torch.dtype = torch.float32, seed: int = 0,
              device: torch.device | str | None = None) -> LowRankFactors:
    """Factor ΔW [out, in] at a fixed `rank`, or at the smallest rank meeting `target_error`.

    With `target_error` the rank is searched up to min(`max_rank`, out, in); when even
    that misses the target the factors at the cap are returned with `target_met=False`.
    An all-zero ΔW gives rank 0 (empty factors). `delta` is not modified.
    """
    if (rank is None) == (target_error is None):
        raise InvalidParameter("give exactly one of rank and target_error")
    matrix = delta.to(device=device or delta.device, dtype=torch.float32)
    norm_sq = _frobenius_sq(matrix)
    generator = torch.Generator().manual_seed(seed)
    if rank is not None:
        U, S, Vh = randomized_svd(matrix, rank, generator=generator)
        return _factors(matrix, U, S, Vh, rank, norm_sq, dtype, None)
    assert target_error is not None
    cap = min(max_rank or min(matrix.shape), *matrix.shape)
    if norm_sq == 0.0:
        return _factors(matrix, *_empty_svd(matrix), 0, 0.0, dtype, True)
    sketch = min(START_SKETCH_RANK, cap)
    while True:
        U, S, Vh = randomized_svd(matrix, sketch, generator=generator)
        chosen = smallest_rank(S[:sketch], norm_sq, target_error)
        if chosen is not None or sketch == cap:
            break
        sketch = min(2 * sketch, cap)
    return _meet_target(matrix, (U, S, Vh), chosen or cap, cap, norm_sq, target_error, dtype)


def smallest_rank(S: torch.Tensor, norm_sq: float, target_error: float) -> int | None:
    """The smallest r with ‖ΔW‖² − Σ_{i≤r} σ_i² ≤ target² · ‖ΔW‖², if the σ given reach it."""
    residual_sq = norm_sq - torch.cumsum(S.double() ** 2, dim=0)
    hits = (residual_sq <= target_error**2 * norm_sq).nonzero()
    return int(hits[0, 0]) + 1 if len(hits) else None


def _meet_target(matrix: torch.Tensor, svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                 rank: int, cap: int, norm_sq: float, target_error: float,
                 dtype: torch.dtype) -> LowRankFactors:
    """Factors at `rank`, bumped while the measured error misses the target.

    In float32 the measurement matches the sketch's prediction to round-off, so a bump is
    rare; half-precision factors add their own rounding error, which a few more
    directions may absorb. Past MAX_RANK_BUMPS (or the cap) the miss is reported.
    """
    result = _factors(matrix, *svd, rank, norm_sq, dtype, False)
    limit = min(cap, len(svd[1]))
    for _ in range(MAX_RANK_BUMPS):
        if result.error <= target_error or result.rank >= limit:
            break
        result = _factors(matrix, *svd, result.rank + 1, norm_sq, dtype, False)
    return replace(result, target_met=result.error <= target_error)


def _factors(matrix: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
             rank: int, norm_sq: float, dtype: torch.dtype,
             target_met: bool | None) -> LowRankFactors:
    root = S[:rank].sqrt()
    B = (U[:, :rank] * root).to(dtype)
    A = (root[:, None] * Vh[:rank]).to(dtype)
    norm = math.sqrt(norm_sq)
    error = math.sqrt(_residual_sq(matrix, B, A)) / norm if norm else 0.0
    return LowRankFactors(B.cpu(), A.cpu(), S.float().cpu(), norm, error, target_met)


def _empty_svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, n = matrix.shape
    return matrix.new_zeros(m, 0), matrix.new_zeros(0), matrix.new_zeros(0, n)


def _row_chunk(matrix: torch.Tensor) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, matrix.shape[1]))


def _frobenius_sq(matrix: torch.Tensor) -> float:
    """‖M‖²_F accumulated in float64, a slab of rows at a time."""
    step = _row_chunk(matrix)
    return sum(float(torch.linalg.vector_norm(matrix[i:i + step], dtype=torch.float64)) ** 2
               for i in range(0, matrix.shape[0], step))


def _residual_sq(matrix: torch.Tensor, B: torch.Tensor, A: torch.Tensor) -> float:
    """‖M − B·A‖²_F with the factors as stored, a slab of rows at a time."""
    B, A = B.to(matrix), A.to(matrix)
    step = _row_chunk(matrix)
    return sum(
        float(torch.linalg.vector_norm(torch.addmm(matrix[i:i + step], B[i:i + step], A,
                                                   alpha=-1), dtype=torch.float64)) ** 2
        for i in range(0, matrix.shape[0], step)
    )
