"""Launch configurations of the fused BitDelta kernels and the rule that picks one.

``decode`` (few rows of one delta, or tenants of one row) or ``prefill`` (a tensor-core
GEMM), chosen by dtype, segmented or not and a few row classes, never by M or T, so each
kernel compiles once per table entry. Tiles come from the compiled code and the cost model,
not yet a GPU: replace a constant with what benchmarks/gpu_check.sh measures, naming the GPU
and the speed-up. See docs/codecs.md, "Kernels".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

KernelKind = Literal["decode", "prefill"]
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class KernelConfig:
    kind: KernelKind
    block_m: int
    block_n: int
    block_k: int  # a multiple of 32: both kernels tile K in whole sign words
    num_warps: int = 4
    num_stages: int = 3
    group_m: int = 8  # prefill only: M tiles that share a band of W_base columns in L2

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, got {value}")
        if self.block_k % 32:
            raise ValueError(f"block_k tiles K in whole 32-bit sign words; got {self.block_k}")
        if self.kind == "prefill" and min(self.block_m, self.block_n) < 16:
            raise ValueError("tl.dot needs every prefill block dimension to be at least 16")

    def label(self) -> str:
        return (f"{self.kind} {self.block_m}x{self.block_n}x{self.block_k} "
                f"w{self.num_warps} s{self.num_stages}")


# Rows per delta up to which the decode kernel is chosen over the tensor-core GEMM. With one
# delta the decode kernel forms W_eff once per tile and each row adds one FMA per element, and
# it stays memory-bound at 4 rows. With tenants every row pays for its own delta's signs in
# the decode kernel, while the GEMM expands each tenant's W_eff once per tile for all of its
# rows: from 2 rows per tenant the GEMM wins (instructions per element from
# benchmarks/kernel_cost.py: docs/benchmarks.md, "Static cost model of the decode kernel").
DECODE_MAX_ROWS = 4
DECODE_MAX_ROWS_TENANTS = 1

# Decode tiles, chosen with the static cost model (benchmarks/kernel_cost.py) for 11008×4096
# fp16 on sm_90: the shortest predicted time (instructions per row × weight element in the K
# loop, and the last wave's idle slots) among tiles that spill on no Triton release tested
# (tiles near 240 registers on 3.9 spilled on 3.4/3.5). Each thread keeps
# BLOCK_M·BLOCK_N·BLOCK_K / (32·num_warps) fp32 accumulators, so BLOCK_K shrinks as rows
# grow. num_stages > 1 stages the K loop's loads through shared memory (cp.async); at one row
# that keeps more bytes in flight, and with more rows the extra shared-memory reads cost more
# instructions than it saves.
_DECODE_SINGLE: dict[int, KernelConfig] = {
    1: KernelConfig("decode", block_m=1, block_n=16, block_k=512, num_warps=4, num_stages=2),
    2: KernelConfig("decode", block_m=2, block_n=32, block_k=128, num_warps=4, num_stages=1),
    4: KernelConfig("decode", block_m=4, block_n=16, block_k=128, num_warps=4, num_stages=1),
}
# Decode tiles for many tenants, by rows in the launch. From 16 rows the base term of the
# tile's rows runs on the tensor cores (fp16/bf16): 16 tenant rows fill one MMA.
_DECODE_MULTI: dict[int, KernelConfig] = {
    4: KernelConfig("decode", block_m=4, block_n=16, block_k=128, num_warps=4, num_stages=2),
    8: KernelConfig("decode", block_m=8, block_n=32, block_k=32, num_warps=8, num_stages=1),
    16: KernelConfig("decode", block_m=16, block_n=16, block_k=32, num_warps=4, num_stages=1),
}
_DECODE_MULTI_FP32_16 = KernelConfig("decode", block_m=16, block_n=16, block_k=32,
                                     num_warps=8, num_stages=1)

# Prefill tiles by rows per tenant, fp16/bf16: the Triton matmul tutorial's H100-class shapes,
# narrower in M for few rows so different tenants share fewer tiles, with enough warps that
# the tenant variant stays clear of 255 registers on every Triton release in the tested
# range (with 4 warps, 64×128×64 spilled on Triton 3.4 for sm_80).
_PREFILL_BY_ROWS: tuple[tuple[int, KernelConfig], ...] = (
    (16, KernelConfig("prefill", block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=3)),
    (32, KernelConfig("prefill", block_m=32, block_n=64, block_k=128, num_warps=8, num_stages=3)),
    (64, KernelConfig("prefill", block_m=64, block_n=128, block_k=64, num_warps=8, num_stages=3)),
)
_PREFILL_LARGE = KernelConfig("prefill", block_m=128, block_n=128, block_k=32, num_warps=8,
                              num_stages=3)
# fp32 runs the dot in IEEE fp32 (no TF32), on CUDA cores: one small tile for every row count.
# Larger ones reach 255 registers and spill on some Triton releases (64×64×32 with 8 warps on
# Triton 3.6, sm_90; 64×32×32 on 3.6, sm_80), and fp32 serving is rare enough not to tune.
_PREFILL_FP32 = KernelConfig("prefill", block_m=32, block_n=32, block_k=32, num_warps=4,
                             num_stages=3)


def decode_rows_class(m: int, segmented: bool) -> int:
    """BLOCK_M of the decode kernel: the rows of one delta, or of a tile of tenant rows."""
    if not segmented:
        return min(_next_power_of_two(max(m, 1)), DECODE_MAX_ROWS)
    return 4 if m <= 4 else 8 if m <= 8 else 16


def decode_config(m: int, *, segmented: bool, dtype: torch.dtype) -> KernelConfig:
    rows = decode_rows_class(m, segmented)
    if not segmented:
        return _DECODE_SINGLE[rows]
    if rows == 16 and dtype == torch.float32:
        return _DECODE_MULTI_FP32_16
    return _DECODE_MULTI[rows]


def base_on_dot(config: KernelConfig, *, segmented: bool, dtype: torch.dtype) -> bool:
    """Whether the decode kernel runs the base term on the tensor cores (many fp16/bf16 rows)."""
    return segmented and config.block_m >= 16 and dtype != torch.float32


def prefill_config(rows_per_tenant: int, dtype: torch.dtype) -> KernelConfig:
    if dtype == torch.float32:
        return _PREFILL_FP32
    for limit, config in _PREFILL_BY_ROWS:
        if rows_per_tenant <= limit:
            return config
    return _PREFILL_LARGE


def select_config(m: int, rows_per_tenant: int, *, segmented: bool = False,
                  dtype: torch.dtype = torch.float16) -> KernelConfig:
    """Decode or prefill from the busiest tenant's row count (one delta: M)."""
    if rows_per_tenant <= (DECODE_MAX_ROWS_TENANTS if segmented else DECODE_MAX_ROWS):
        return decode_config(m, segmented=segmented, dtype=dtype)
    return prefill_config(rows_per_tenant, dtype)


@dataclass(frozen=True)
class DispatchVariant:
    """One compiled kernel the dispatcher can choose."""

    dtype: torch.dtype
    segmented: bool
    config: KernelConfig


def dispatch_variants() -> Iterator[DispatchVariant]:
    """Every (dtype, segmented, config) `select_config` can return, each once."""
    seen: set[tuple[torch.dtype, bool, KernelConfig]] = set()
    for dtype in DTYPES:
        for segmented in (False, True):
            decode = [decode_config(m, segmented=segmented, dtype=dtype) for m in (1, 2, 4, 8, 16)]
            prefill = [prefill_config(r, dtype) for r in (16, 32, 64, 128)]
            for config in decode + prefill:
                if (dtype, segmented, config) not in seen:
                    seen.add((dtype, segmented, config))
                    yield DispatchVariant(dtype, segmented, config)


def _next_power_of_two(value: int) -> int:
    return 1 << (value - 1).bit_length()
