"""LoRA extraction: randomized truncated SVD (compress/lora/lowrank.py) against the exact SVD.

For each shape, a synthetic ΔW with a realistic, slowly decaying spectrum is factored at
each rank by `factorize(delta, rank=r)` (sketch, B = U·√S, A = √S·Vᵀ, and the measured
error, end to end) and by `torch.linalg.svd` truncated to r (what mergekit's
extract_lora does). Printed, as ratios measured in one run on this machine:

- time ratio = exact seconds / randomized seconds, best of --repeat rounds each (one
  exact SVD per round serves all ranks, as it would in a real extraction);
- error ratio = randomized ‖ΔW − B·A‖/‖ΔW‖ over the optimal (Eckart-Young) error of the
  rank-r truncation, from the exact singular values.

Spectra: ΔW = U·diag(i^-α)·Vᵀ + G, with U, V random orthonormal and G a Gaussian floor
holding a given share of the norm. The defaults are the two extremes the constants in
compress/lora/lowrank.py were tuned on: a pure power law i^-0.5 (flat: the optimal error is
large) and i^-1 under a 30 % noise floor (σ_r ≈ σ_{r+p}: the hardest for a range finder).

    python benchmarks/lora_bench.py            # 4096×4096 and 11008×4096, ranks 16 64 256
    python benchmarks/lora_bench.py --quick    # 1024×1024 and 2752×1024, a smoke check
    python benchmarks/lora_bench.py --tune 2048  # the q/p grid behind compress/lora/lowrank.py
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import torch

from compress.lora import factorize, randomized_svd
from compress.lora.lowrank import POWER_ITERATIONS, oversample_for  # the constants it tunes

FULL_SHAPES = ((4096, 4096), (11008, 4096))
QUICK_SHAPES = ((1024, 1024), (2752, 1024))
RANKS = (16, 64, 256)
SPECTRA = ((0.5, 0.0), (1.0, 0.3))  # (α, noise share of ‖ΔW‖)
TUNING_SPECTRA = ((0.5, 0.0), (1.0, 0.3), (0.75, 0.5), (2.0, 0.05))
TUNING_GRID = ((2, 0.25), (2, 0.5), (3, 0.25), (3, 0.5), (4, 0.25))  # (q, p/k)


@dataclass(frozen=True)
class Row:
    shape: tuple[int, int]
    spectrum: str
    rank: int
    exact_s: float
    randomized_s: float
    optimal_error: float
    randomized_error: float


def synthesize(m: int, n: int, alpha: float, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g))
    sigma: torch.Tensor = torch.arange(1, k + 1, dtype=torch.float32) ** -alpha
    delta: torch.Tensor = (U * sigma) @ V.T
    del U, V
    if noise:
        floor = torch.randn(m, n, generator=g)
        delta += floor * (noise * float(delta.norm()) / float(floor.norm()))
    return delta


T = TypeVar("T")


def timed(run: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def exact_truncation(delta: torch.Tensor, ranks: tuple[int, ...]
                     ) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """mergekit's way: the full thin SVD once, then B = U_r·√S_r, A = √S_r·V_rᵀ per rank."""
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    return S, {r: (U[:, :r] * S[:r].sqrt(), S[:r].sqrt()[:, None] * Vh[:r]) for r in ranks}


def optimal_error(S: torch.Tensor, rank: int) -> float:
    s2 = S.double() ** 2
    return math.sqrt(float(s2[rank:].sum() / s2.sum()))


def bench_shape(shape: tuple[int, int], alpha: float, noise: float, ranks: tuple[int, ...],
                repeat: int, seed: int) -> list[Row]:
    """Best of `repeat` rounds; each round times the exact SVD, then every rank, so a burst
    of load from other processes on the machine hits both sides of a ratio alike."""
    delta = synthesize(*shape, alpha, noise, seed)
    exact_times: list[float] = []
    randomized_times: dict[int, list[float]] = {r: [] for r in ranks}
    errors: dict[int, float] = {}
    for _ in range(repeat):
        seconds, (S, _) = timed(lambda: exact_truncation(delta, ranks))
        exact_times.append(seconds)
        for r in ranks:
            seconds, result = timed(partial(factorize, delta, rank=r))
            randomized_times[r].append(seconds)
            errors[r] = result.error  # the same every round: the seed is fixed
    spectrum = f"i^-{alpha:g}" + (f" + {noise:.0%} noise" if noise else "")
    rows = [Row(shape, spectrum, r, min(exact_times), min(randomized_times[r]),
                optimal_error(S, r), errors[r]) for r in ranks]
    for row in rows:
        print(f"  {shape[0]}×{shape[1]} {spectrum} r={row.rank}: exact {exact_times}, "
              f"randomized {[round(t, 3) for t in randomized_times[row.rank]]}", flush=True)
    return rows


def print_table(rows: list[Row]) -> None:
    print("| ΔW shape | spectrum | rank | exact SVD (s) | randomized (s) | time ratio "
          "exact/rand | optimal error | randomized error | error ratio rand/opt |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row.shape[0]}×{row.shape[1]} | {row.spectrum} | {row.rank} | "
              f"{row.exact_s:.2f} | {row.randomized_s:.3f} | "
              f"{row.exact_s / row.randomized_s:.1f}× | {row.optimal_error:.4f} | "
              f"{row.randomized_error:.4f} | {row.randomized_error / row.optimal_error:.4f} |")
    ratios = [r.randomized_error / r.optimal_error for r in rows]
    print(f"\nworst error ratio {max(ratios):.4f}; median time ratio at rank 64: "
          f"{statistics.median(r.exact_s / r.randomized_s for r in rows if r.rank == 64):.1f}×")


def tune(size: int, seed: int) -> None:
    """The table behind POWER_ITERATIONS and OVERSAMPLE_FRACTION in compress/lora/lowrank.py:
    the worst error ratio over TUNING_SPECTRA for each (q, p) at ranks 64 and 256."""
    worst: dict[tuple[int, int, float], float] = {}
    for alpha, noise in TUNING_SPECTRA:
        delta = synthesize(size, size, alpha, noise, seed)
        exact = torch.linalg.svdvals(delta)
        for k in (64, 256):
            for q, fraction in TUNING_GRID:
                U, S, Vh = randomized_svd(delta, k, oversample=int(fraction * k),
                                          power_iterations=q,
                                          generator=torch.Generator().manual_seed(seed))
                error = float((delta - (U[:, :k] * S[:k]) @ Vh[:k]).norm() / delta.norm())
                key = (k, q, fraction)
                worst[key] = max(worst.get(key, 0.0), error / optimal_error(exact, k))
        print(f"  spectrum i^-{alpha:g} + {noise:.0%} noise done", flush=True)
    print(f"\nworst error ratio over {len(TUNING_SPECTRA)} spectra, {size}×{size}")
    print("| k | " + " | ".join(f"q={q}, p=k·{f:g}" for q, f in TUNING_GRID) + " |")
    print("|---:|" + "---:|" * len(TUNING_GRID))
    for k in (64, 256):
        print(f"| {k} | " + " | ".join(f"{worst[(k, q, f)]:.4f}" for q, f in TUNING_GRID)
              + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke check")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", type=int, metavar="N", default=0,
                        help="instead, the power-iteration/oversampling grid on N×N deltas")
    args = parser.parse_args()
    if args.tune:
        tune(args.tune, args.seed)
        return
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; power iterations "
          f"{POWER_ITERATIONS}, oversampling {[oversample_for(r) for r in RANKS]} at ranks "
          f"{list(RANKS)}; best of {args.repeat}", flush=True)
    rows = [row for alpha, noise in SPECTRA for shape in shapes
            for row in bench_shape(shape, alpha, noise, RANKS, args.repeat, args.seed)]
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
