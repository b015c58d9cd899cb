"""Checked operands of the fused BitDelta linear, shared by the Triton launcher and the reference.

Both entry points (one delta, many tenants) are normalised to one form: x as [M, K] rows,
bits as [T, ceil(K/32), N], α as [T, N] and tenant t owning rows seg_starts[t]:seg_starts[t+1].
A single delta is T = 1 owning every row. α of one value per matrix becomes a stride-0 view,
so nothing is copied.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kernels.packing import packed_words

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

Scale = torch.Tensor | float


@dataclass(frozen=True)
class Operands:
    """Validated inputs of one fused launch.

    Tenant boundaries are either a host copy (`seg_starts`, length T+1, checked) or a device
    tensor (`seg_device`, int32, trusted: reading it back to check it would synchronise).
    """

    x: torch.Tensor  # [M, K]
    w_base: torch.Tensor  # [N, K]
    bits: torch.Tensor  # [T, ceil(K/32), N] int32
    scale: torch.Tensor  # [T, N] float32, possibly stride 0 along N
    seg_starts: tuple[int, ...] | None
    lead_shape: tuple[int, ...]  # x's leading dims, restored on the output
    segmented: bool  # False for the single-delta entry point
    seg_device: torch.Tensor | None = None
    rows_hint: int | None = None  # the caller's bound on rows per tenant (device boundaries)

    @property
    def m(self) -> int:
        return int(self.x.shape[0])

    @property
    def n(self) -> int:
        return int(self.w_base.shape[0])

    @property
    def k(self) -> int:
        return int(self.w_base.shape[1])

    @property
    def tenants(self) -> int:
        return int(self.bits.shape[0])

    @property
    def max_rows_per_tenant(self) -> int:
        """Rows of the busiest tenant; with device boundaries, the caller's hint or else the
        mean rounded up (it only steers the kernel choice: both kernels are exact for any
        split of the rows)."""
        if self.seg_starts is not None:
            return max((b - a for a, b in itertools.pairwise(self.seg_starts)), default=0)
        if self.rows_hint is not None:
            return self.rows_hint
        return -(-self.m // max(self.tenants, 1))

    def host_seg_starts(self) -> tuple[int, ...]:
        """The boundaries on the host (reads a device table back: the reference path only)."""
        if self.seg_starts is not None:
            return self.seg_starts
        assert self.seg_device is not None
        return tuple(int(v) for v in self.seg_device.tolist())

    def output_shape(self) -> tuple[int, ...]:
        return (*self.lead_shape, self.n)


def single_operands(
    x: torch.Tensor, w_base: torch.Tensor, bits: torch.Tensor, scale: Scale
) -> Operands:
    """Check the operands of `bitdelta_linear` (x [..., K], bits [ceil(K/32), N])."""
    _check_x_and_base(x, w_base)
    n, k = w_base.shape
    _check_bits(bits, expected=(packed_words(k), n), what="[ceil(K/32), N]")
    alpha = _scale_tensor(scale, x.device)
    if alpha.dim() == 0 or alpha.shape == (1,):
        alpha_rows = alpha.reshape(1, 1).expand(1, n)
    elif alpha.shape == (n,):
        alpha_rows = alpha.reshape(1, n)
    else:
        raise ValueError(
            f"scale must be float32 of shape [N]={[n]} (one α per output row) or [] (one per "
            f"matrix), got {list(alpha.shape)}"
        )
    rows = x.reshape(math.prod(x.shape[:-1]), k)
    return Operands(
        x=rows,
        w_base=w_base,
        bits=bits.unsqueeze(0),
        scale=alpha_rows,
        seg_starts=(0, int(rows.shape[0])),
        lead_shape=tuple(x.shape[:-1]),
        segmented=False,
    )


def multi_operands(
    x: torch.Tensor,
    w_base: torch.Tensor,
    bits: torch.Tensor,
    scale: torch.Tensor,
    seg_starts: torch.Tensor | Sequence[int],
    max_rows_per_tenant: int | None = None,
) -> Operands:
    """Check the operands of `bitdelta_linear_multi` (x [M, K], bits [T, ceil(K/32), N])."""
    if x.dim() != 2:
        raise ValueError(
            f"bitdelta_linear_multi expects x of shape [M, K] with rows grouped by tenant, "
            f"got {list(x.shape)}; flatten the batch with x.reshape(-1, K)"
        )
    _check_x_and_base(x, w_base)
    n, k = w_base.shape
    if bits.dim() != 3:
        raise ValueError(f"bits must be int32 [T, ceil(K/32), N], got {list(bits.shape)}")
    t = int(bits.shape[0])
    _check_bits(bits, expected=(t, packed_words(k), n), what="[T, ceil(K/32), N]")
    alpha = _scale_tensor(scale, x.device)
    if alpha.shape == (t,):
        alpha_rows = alpha.reshape(t, 1).expand(t, n)
    elif alpha.shape == (t, n):
        alpha_rows = alpha
    else:
        raise ValueError(
            f"scale must be float32 of shape [T, N]={[t, n]} (per row) or [T]={[t]} (per "
            f"matrix), got {list(alpha.shape)}"
        )
    seg_device = _device_segments(seg_starts, tenants=t, device=x.device)
    starts = None if seg_device is not None else _check_segments(seg_starts, t, int(x.shape[0]))
    if max_rows_per_tenant is not None and max_rows_per_tenant < 0:
        raise ValueError(f"max_rows_per_tenant must be >= 0, got {max_rows_per_tenant}")
    return Operands(
        x=x,
        w_base=w_base,
        bits=bits,
        scale=alpha_rows,
        seg_starts=starts,
        lead_shape=(int(x.shape[0]),),
        segmented=True,
        seg_device=seg_device,
        rows_hint=max_rows_per_tenant,
    )


def _check_x_and_base(x: torch.Tensor, w_base: torch.Tensor) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x must be float16, bfloat16 or float32, got {x.dtype}")
    if w_base.dtype != x.dtype:
        raise TypeError(
            f"w_base is {w_base.dtype} but x is {x.dtype}; cast one of them so both match "
            "(the output takes x's dtype)"
        )
    if w_base.dim() != 2:
        raise ValueError(f"w_base must be [N, K], got {list(w_base.shape)}")
    if x.dim() < 1 or x.shape[-1] != w_base.shape[1]:
        raise ValueError(
            f"x has {x.shape[-1] if x.dim() else 'no'} features but w_base is "
            f"{list(w_base.shape)} ([N, K]); x must be [..., K]"
        )
    if w_base.device != x.device:
        raise ValueError(f"x is on {x.device} but w_base is on {w_base.device}")


def _check_bits(bits: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    if bits.dtype != torch.int32:
        raise TypeError(f"bits must be int32 {what} (see kernels/packing.py), got {bits.dtype}")
    if tuple(bits.shape) != expected:
        raise ValueError(f"bits must have shape {what}={list(expected)}, got {list(bits.shape)}")


def _scale_tensor(scale: Scale, device: torch.device) -> torch.Tensor:
    if isinstance(scale, float | int):
        # A fill kernel on the device, not a host-to-device copy (which would synchronise).
        return torch.full((), float(scale), dtype=torch.float32, device=device)
    if scale.dtype != torch.float32:
        raise TypeError(f"scale (α) must be float32, got {scale.dtype}; use scale.float()")
    if scale.device != device:
        raise ValueError(f"scale is on {scale.device} but x is on {device}")
    return scale


def _device_segments(
    seg_starts: torch.Tensor | Sequence[int], tenants: int, device: torch.device
) -> torch.Tensor | None:
    """Boundaries already on x's CUDA device, used as they are (int32, T+1 entries)."""
    if not isinstance(seg_starts, torch.Tensor) or seg_starts.device.type != "cuda":
        return None
    if seg_starts.device != device:
        raise ValueError(f"seg_starts is on {seg_starts.device} but x is on {device}")
    if seg_starts.dtype not in (torch.int32, torch.int64) or seg_starts.shape != (tenants + 1,):
        raise TypeError(
            f"seg_starts must be a 1-D int32/int64 tensor of T+1={tenants + 1} entries, got "
            f"{seg_starts.dtype} {list(seg_starts.shape)}")
    # int64 → int32 is a device kernel, not a copy to the host.
    return seg_starts if seg_starts.dtype == torch.int32 else seg_starts.to(torch.int32)


def _check_segments(
    seg_starts: torch.Tensor | Sequence[int], tenants: int, m: int
) -> tuple[int, ...]:
    if isinstance(seg_starts, torch.Tensor):
        if seg_starts.dtype not in (torch.int32, torch.int64) or seg_starts.dim() != 1:
            raise TypeError(
                f"seg_starts must be a 1-D int32/int64 tensor, got {seg_starts.dtype} "
                f"{list(seg_starts.shape)}"
            )
        starts = tuple(int(v) for v in seg_starts.tolist())  # a CPU tensor: no sync
    else:
        starts = tuple(int(v) for v in seg_starts)
    if len(starts) != tenants + 1:
        raise ValueError(
            f"seg_starts must have T+1={tenants + 1} entries (one per tenant plus the end), "
            f"got {len(starts)}"
        )
    if starts[0] != 0 or starts[-1] != m:
        raise ValueError(
            f"seg_starts must start at 0 and end at M={m}, got {starts[0]} … {starts[-1]}"
        )
    if any(b < a for a, b in itertools.pairwise(starts)):
        raise ValueError(f"seg_starts must be non-decreasing, got {list(starts)}")
    return starts
