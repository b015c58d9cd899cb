"""Launch configurations of the fused binary-GEMM kernels and the rule that picks one.

Two kernels (see kernels/binary_gemm.py):

- ``gemv`` (decode): a program owns BLOCK_N output columns and BLOCK_M rows and walks the whole
  of K on CUDA cores; no tensor cores and no split-K, so one launch writes the final output
  in x's dtype.
- ``gemm`` (prefill): a tiled tensor-core GEMM; the sign tile is expanded to W_base + α·sign
  in registers and fed to one ``tl.dot``.

Every number below is a starting point, not a measurement: this code was written without a
GPU. ``python benchmarks/kernel_bench.py --sweep`` times the candidates on the shapes of the
benchmark and prints the winner per case; replace each "pending" note with the GPU, shape and
speed-up it reports when you change a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KernelKind = Literal["gemv", "gemm"]


@dataclass(frozen=True)
class KernelConfig:
    kind: KernelKind
    block_m: int
    block_n: int
    block_k: int  # a multiple of 32 for gemv (whole words per tile)
    num_warps: int = 4
    num_stages: int = 3
    group_m: int = 8  # gemm only: M-tiles that share a band of W_base columns in L2

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, got {value}")
        if self.kind == "gemv" and self.block_k % 32:
            raise ValueError(f"gemv tiles K in whole 32-bit words; block_k={self.block_k}")
        if self.kind == "gemm" and min(self.block_m, self.block_n, self.block_k) < 16:
            raise ValueError("tl.dot needs every gemm block dimension to be at least 16")


# Rows per tenant up to which the CUDA-core GEMV beats padding to a 16-row tensor-core tile.
# Pending GPU measurement. Why 4: the GEMV does ~4 ALU ops per weight element per row, so at
# 4 rows and 16 tenants it still hides under the W_base + bits traffic by estimate; beyond that
# the tensor-core path, which pays the sign expansion once per tenant, should win.
DECODE_MAX_ROWS = 4

# GEMV tile. Pending GPU measurement. BLOCK_N = 8 gives 512 programs for N = 4096 (about four
# per H100 SM) without split-K; BLOCK_K = 512 keeps 8 KiB of W_base in flight per program
# per step, and a [8, 16, 32] tile is 32 fp32 values per thread at 4 warps.
GEMV_BLOCK_N = 8
GEMV_BLOCK_K = 512
GEMV_NUM_WARPS = 4
# More rows per program means W_base is re-read by fewer programs, at the price of a
# [BLOCK_M, BLOCK_N] accumulator update per row. Pending GPU measurement.
GEMV_MAX_BLOCK_M = 64

# GEMM tiles by rows per tenant (the rows one tile can serve). Pending GPU measurement; the
# shapes follow the Triton matmul tutorial's fp16 configurations for H100-class GPUs, with
# narrower M tiles for few rows so segments of different tenants share fewer tiles.
_GEMM_BY_ROWS: tuple[tuple[int, KernelConfig], ...] = (
    (16, KernelConfig("gemm", block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=4)),
    (32, KernelConfig("gemm", block_m=32, block_n=64, block_k=128, num_warps=4, num_stages=4)),
    (64, KernelConfig("gemm", block_m=64, block_n=128, block_k=64, num_warps=4, num_stages=4)),
)
_GEMM_LARGE = KernelConfig("gemm", block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3)


def gemv_config(m: int) -> KernelConfig:
    """Decode tile: one M block covers all rows (up to GEMV_MAX_BLOCK_M) so W_base is read once."""
    block_m = min(_next_power_of_two(max(m, 1)), GEMV_MAX_BLOCK_M)
    return KernelConfig(
        "gemv", block_m=block_m, block_n=GEMV_BLOCK_N, block_k=GEMV_BLOCK_K,
        num_warps=GEMV_NUM_WARPS, num_stages=1,
    )


def gemm_config(rows_per_tenant: int) -> KernelConfig:
    for limit, config in _GEMM_BY_ROWS:
        if rows_per_tenant <= limit:
            return config
    return _GEMM_LARGE


def select_config(m: int, rows_per_tenant: int) -> KernelConfig:
    """Pick decode or prefill from the busiest tenant's row count (the single delta: M)."""
    if rows_per_tenant <= DECODE_MAX_ROWS:
        return gemv_config(m)
    return gemm_config(rows_per_tenant)


def _next_power_of_two(value: int) -> int:
    return 1 << (value - 1).bit_length()
