"""Operands of the kernel benchmarks, all made before anything is timed.

A `Layer` is one weight shape: W_base, every tenant's packed signs and α, and the dense
fine-tunes W_ft = W_base + α·sign they stand for (the baseline's weights). A `Case` adds the
activations of M rows per tenant and the tenant boundaries, already on the device as int32
(so a launch does no host-to-device copy). The launch builders return closures over operand
copies for `kernel_timing.Timer`, which cycles through them.

Imports torch, the standard library and kernels/ only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from kernel_timing import Launch

from kernels import (
    Backend,
    KernelConfig,
    bitdelta_linear,
    bitdelta_linear_multi,
    bitdelta_linear_multi_reference,
    pack_signs,
    packed_words,
    unpack_signs,
)

ALPHA_SCALE = 1e-3  # α against W_base entries of about 0.02: a typical BitDelta scale


@dataclass(frozen=True)
class Layer:
    w_base: torch.Tensor  # [N, K]
    bits: torch.Tensor  # [T, ceil(K/32), N] int32, the most tenants any case uses
    alpha: torch.Tensor  # [T, N] float32
    w_ft: tuple[torch.Tensor, ...]  # the dense fine-tunes, W_base's dtype

    @property
    def n(self) -> int:
        return int(self.w_base.shape[0])

    @property
    def k(self) -> int:
        return int(self.w_base.shape[1])


def make_layer(n: int, k: int, tenants: int, dtype: torch.dtype, device: torch.device,
               *, fine_tunes: bool = True) -> Layer:
    gen = torch.Generator(device=device).manual_seed(n * 7 + k)
    w_base = (torch.randn((n, k), generator=gen, device=device) * 0.02).to(dtype)
    bits = torch.stack([pack_signs(torch.randn((n, k), generator=gen, device=device))
                        for _ in range(tenants)])
    alpha = torch.rand((tenants, n), generator=gen, device=device) * ALPHA_SCALE
    w_ft = tuple(
        (w_base.float() + alpha[t, :, None] * unpack_signs(bits[t], k)).to(dtype)
        for t in range(tenants if fine_tunes else 0)
    )
    return Layer(w_base, bits, alpha, w_ft)


@dataclass(frozen=True)
class Case:
    layer: Layer
    rows_per_tenant: int  # M
    tenants: int  # T
    x: torch.Tensor  # [M·T, K], rows grouped by tenant
    seg_host: tuple[int, ...]  # tenant boundaries, for the reference
    seg_device: torch.Tensor  # the same as int32 on x's device, for the launches

    @property
    def rows(self) -> int:
        return self.rows_per_tenant * self.tenants


def make_case(layer: Layer, rows_per_tenant: int, tenants: int) -> Case:
    if tenants > layer.bits.shape[0]:
        raise ValueError(f"the layer holds {layer.bits.shape[0]} tenants, not {tenants}")
    device = layer.w_base.device
    gen = torch.Generator(device=device).manual_seed(rows_per_tenant * 131 + tenants)
    rows = rows_per_tenant * tenants
    x = torch.randn((rows, layer.k), generator=gen, device=device).to(layer.w_base.dtype)
    seg_host = tuple(t * rows_per_tenant for t in range(tenants + 1))
    seg_device = torch.tensor(seg_host, dtype=torch.int32, device=device)
    return Case(layer, rows_per_tenant, tenants, x, seg_host, seg_device)


def fused_bytes(case: Case) -> int:
    """Bytes the fused kernel must move: W_base once, each tenant's bits and α, x and y."""
    layer = case.layer
    esize = layer.w_base.element_size()
    return (layer.n * layer.k * esize
            + case.tenants * (packed_words(layer.k) * layer.n * 4 + layer.n * 4)
            + case.rows * (layer.k + layer.n) * esize)


def dense_weight_bytes(case: Case) -> int:
    return case.tenants * case.layer.n * case.layer.k * case.layer.w_base.element_size()


Operand = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # W_base, bits [T, ...], α [T, N]


def operand_copies(case: Case, copies: int) -> list[Operand]:
    """(W_base, bits, α) for the case's tenants, and copies - 1 clones of them."""
    layer, t = case.layer, case.tenants
    first = (layer.w_base, layer.bits[:t], layer.alpha[:t])
    return [first] + [(first[0].clone(), first[1].clone(), first[2].clone())
                      for _ in range(copies - 1)]


def fused_launches(case: Case, sets: list[Operand], backend: Backend,
                   config: KernelConfig | None = None) -> list[Callable[[], torch.Tensor]]:
    """One launch per operand copy (see `operand_copies`)."""
    return [functools.partial(_fused, case, w, bits, alpha, backend, config)
            for w, bits, alpha in sets]


def _fused(case: Case, w_base: torch.Tensor, bits: torch.Tensor, alpha: torch.Tensor,
           backend: Backend, config: KernelConfig | None) -> torch.Tensor:
    """T = 1 takes the single-delta entry point, as a model with one fine-tune would."""
    if case.tenants == 1:
        return bitdelta_linear(case.x, w_base, bits[0], alpha[0], backend=backend,
                               config=config)
    return bitdelta_linear_multi(case.x, w_base, bits, alpha, case.seg_device,
                                 max_rows_per_tenant=case.rows_per_tenant, backend=backend,
                                 config=config)


def dense_launches(case: Case, copies: int) -> list[Launch]:
    """One launch = T dense matmuls, each tenant's rows against its own W_ft."""
    bounds = zip(case.seg_host, case.seg_host[1:], strict=False)
    xs = tuple(case.x[lo:hi] for lo, hi in bounds)
    first = case.layer.w_ft[:case.tenants]
    if len(first) != case.tenants:
        raise ValueError("the layer was made without its dense fine-tunes")
    sets = [first] + [tuple(w.clone() for w in first) for _ in range(copies - 1)]
    return [functools.partial(_dense, xs, weights) for weights in sets]


def _dense(xs: tuple[torch.Tensor, ...], weights: tuple[torch.Tensor, ...]) -> None:
    for x, w in zip(xs, weights, strict=True):
        torch.matmul(x, w.t())


def reference(case: Case) -> torch.Tensor:
    """The float32 torch reference of the fused launch."""
    layer, t = case.layer, case.tenants
    return bitdelta_linear_multi_reference(case.x, layer.w_base, layer.bits[:t],
                                           layer.alpha[:t], list(case.seg_host),
                                           out_dtype=torch.float32)


def relative_error(y: torch.Tensor, y_ref: torch.Tensor) -> float:
    """max |y − y_ref| / max |y_ref|: the measure KERNEL_TOLERANCE is stated in."""
    scale = y_ref.abs().max().clamp_min(1e-30)
    return float((y.float() - y_ref).abs().max() / scale)
