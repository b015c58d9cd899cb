"""Operands and tolerances shared by the kernel tests."""

from __future__ import annotations

import torch

from kernels import KERNEL_TOLERANCE, pack_signs

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def assert_matches_reference(y: torch.Tensor, y_ref32: torch.Tensor, dtype: torch.dtype) -> None:
    """y (kernel output, x's dtype) against the float32 reference, within the tolerance that
    `verify_layer` judges kernels by (KERNEL_TOLERANCE[dtype], relative to max |y_ref|)."""
    assert y.dtype == dtype
    assert y.shape == y_ref32.shape
    tol = KERNEL_TOLERANCE[dtype]
    scale = max(float(y_ref32.abs().max()), 1e-6)
    torch.testing.assert_close(y.float().cpu(), y_ref32.float().cpu(), rtol=tol, atol=tol * scale)


def make_layer(
    n: int, k: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator,
    *, tenants: int | None = None, per_row: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_base [N, K], bits and α of one delta (tenants=None) or of `tenants` deltas.

    α is about the size of W_base's entries, so the sign term moves y by as much as the base
    term and a kernel that drops it, flips it or misplaces a bit fails every tolerance.
    """
    w = torch.randn((n, k), generator=generator) / k**0.5
    count = 1 if tenants is None else tenants
    bits = torch.stack([pack_signs(torch.randn((n, k), generator=generator))
                        for _ in range(count)])
    alpha_shape = (count, n) if per_row else (count,)
    alpha = (0.5 + torch.rand(alpha_shape, generator=generator)) / k**0.5
    if tenants is None:
        bits, alpha = bits[0], alpha[0]
    return w.to(device, dtype), bits.to(device), alpha.to(device)


def make_x(m: int, k: int, dtype: torch.dtype, device: torch.device,
           generator: torch.Generator) -> torch.Tensor:
    return torch.randn((m, k), generator=generator).to(device, dtype)
