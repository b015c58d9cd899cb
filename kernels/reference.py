"""Torch reference of the fused BitDelta linear: the semantics the Triton kernels must match.

y = x·W_baseᵀ + α ⊙ (x·sign(ΔW)ᵀ), computed in float32 from the packed bits and rounded once
to x's dtype (or `out_dtype`). It runs on any device and is what the dispatch in
`kernels.bitdelta_linear` uses on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kernels.operands import Operands, Scale, multi_operands, single_operands
from kernels.packing import unpack_signs


def bitdelta_linear_reference(
    x: torch.Tensor,
    w_base: torch.Tensor,
    bits: torch.Tensor,
    scale: Scale,
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Reference of `bitdelta_linear`; `out_dtype=torch.float32` skips the final rounding."""
    return reference_from_operands(single_operands(x, w_base, bits, scale), out_dtype)


def bitdelta_linear_multi_reference(
    x: torch.Tensor,
    w_base: torch.Tensor,
    bits: torch.Tensor,
    scale: torch.Tensor,
    seg_starts: torch.Tensor | Sequence[int],
    *,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Reference of `bitdelta_linear_multi`: each tenant's rows against its own delta."""
    ops = multi_operands(x, w_base, bits, scale, seg_starts)
    return reference_from_operands(ops, out_dtype)


def reference_from_operands(ops: Operands, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    x32 = ops.x.float()
    w32 = ops.w_base.float()
    y = torch.zeros((ops.m, ops.n), dtype=torch.float32, device=ops.x.device)
    starts = ops.host_seg_starts()
    for t in range(ops.tenants):
        lo, hi = starts[t], starts[t + 1]
        if lo == hi:
            continue
        rows = x32[lo:hi]
        signs = unpack_signs(ops.bits[t], ops.k, torch.float32)  # [N, K]
        # Two products instead of one with W_base + α·sign: the sum is what the kernel must
        # reproduce, and keeping the terms apart avoids rounding W_ft in any narrower type.
        y[lo:hi] = rows @ w32.t() + (rows @ signs.t()) * ops.scale[t]
    return y.to(out_dtype or ops.x.dtype).reshape(ops.output_shape())
