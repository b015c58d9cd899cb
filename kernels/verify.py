"""Layer-level verification of a BitDelta delta against the uncompressed fine-tune (pure torch).

Kernel agreement (the fused kernel against the float32 reference: a failure is a kernel bug)
and compression error (against x·W_ftᵀ). compress/bitdelta/verify.py loops this over a
checkpoint. See docs/codecs.md, "Verification".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from kernels.bitdelta_linear import Backend, bitdelta_linear, resolve_backend
from kernels.operands import Scale
from kernels.reference import bitdelta_linear_reference

# Largest kernel error accepted, as max |y − y_ref| / max |y_ref|. The output is rounded once
# to x's dtype (unit roundoff 2^-11 ≈ 4.9e-4 for fp16, 2^-8 ≈ 3.9e-3 for bf16) and the prefill
# kernel rounds W_base + α·sign once to x's dtype before the tensor-core dot, as a dense matmul
# with a materialised W_ft would; a few units of each cover both. fp32 differs from the
# reference only in summation order over K (≈ sqrt(K)·2^-24 relative for K ≈ 10^4).
KERNEL_TOLERANCE: dict[torch.dtype, float] = {
    torch.float32: 1e-4,
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}


@dataclass(frozen=True)
class LayerCheck:
    rows: int
    dtype: torch.dtype
    backend: Literal["triton", "torch"]
    kernel_max_abs_error: float
    kernel_max_rel_error: float  # max |y − y_ref| / max |y_ref|
    kernel_tolerance: float
    compression_rel_frobenius: float  # ‖y − y_ft‖_F / ‖y_ft‖_F
    compression_worst_row_rel: float  # max over rows of ‖y_r − y_ft,r‖ / ‖y_ft,r‖
    # ‖y − y_ft‖_F / ‖y_ft − y_base‖_F: the share of the fine-tune's effect on the output that
    # the delta gets wrong (0 = exact, 1 = as bad as dropping the delta; ≈ 0.6 for Gaussian ΔW
    # with α = mean|ΔW|, since 1 − 2/π of its energy is lost).
    effect_rel_frobenius: float

    @property
    def kernel_agrees(self) -> bool:
        return self.kernel_max_rel_error <= self.kernel_tolerance


def verify_layer(
    x: torch.Tensor,
    w_base: torch.Tensor,
    w_ft: torch.Tensor,
    bits: torch.Tensor,
    scale: Scale,
    *,
    backend: Backend = "auto",
) -> LayerCheck:
    """Check one compressed layer on activations x [..., K] (x's dtype must match w_base's).

    w_ft [N, K] is the uncompressed fine-tuned weight (any float dtype); bits and scale are the
    delta as stored (kernels/packing.py layout, α float32 [N] or scalar).
    """
    if w_ft.shape != w_base.shape:
        raise ValueError(
            f"w_ft has shape {list(w_ft.shape)} but w_base has {list(w_base.shape)}; they must "
            "be the same layer"
        )
    chosen = resolve_backend(x.device, backend)
    y = bitdelta_linear(x, w_base, bits, scale, backend=chosen).float()
    y_ref = bitdelta_linear_reference(x, w_base, bits, scale, out_dtype=torch.float32)
    n, k = w_base.shape
    y = y.reshape(-1, n)
    y_ref = y_ref.reshape(-1, n)
    x32 = x.reshape(-1, k).float()
    y_ft = x32 @ w_ft.to(x32.device, torch.float32).t()
    y_base = x32 @ w_base.float().t()

    kernel_err = (y - y_ref).abs().max() if y.numel() else torch.zeros(())
    ref_max = y_ref.abs().max() if y.numel() else torch.zeros(())
    residual = y - y_ft
    row_err = torch.linalg.vector_norm(residual, dim=1)
    row_ref = torch.linalg.vector_norm(y_ft, dim=1)
    row_rel = torch.where(
        row_ref > 0,
        row_err / row_ref.clamp_min(torch.finfo(torch.float32).tiny),
        torch.where(row_err > 0, float("inf"), 0.0),
    )
    worst_row = float(row_rel.max()) if row_rel.numel() else 0.0
    frob_err = float(torch.linalg.vector_norm(residual))
    return LayerCheck(
        rows=int(y.shape[0]),
        dtype=x.dtype,
        backend=chosen,
        kernel_max_abs_error=float(kernel_err),
        kernel_max_rel_error=_ratio(float(kernel_err), float(ref_max)),
        kernel_tolerance=KERNEL_TOLERANCE[x.dtype],
        compression_rel_frobenius=_ratio(frob_err, float(torch.linalg.vector_norm(y_ft))),
        compression_worst_row_rel=worst_row,
        effect_rel_frobenius=_ratio(frob_err, float(torch.linalg.vector_norm(y_ft - y_base))),
    )


def random_activations(
    m: int,
    k: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    *,
    outlier_fraction: float = 0.01,
    outlier_gain: float = 8.0,
) -> torch.Tensor:
    """Activations [m, k] shaped like the input of a projection after RMSNorm.

    Every row has RMS 1, and a fixed `outlier_fraction` of channels (the same ones in every
    row) is `outlier_gain` times larger than the rest: LLM hidden states concentrate their
    magnitude in a few channels (Dettmers et al., LLM.int8(), 2022), and a verification on
    isotropic noise would miss errors that only those channels expose.
    """
    if not 0.0 <= outlier_fraction <= 1.0:
        raise ValueError(f"outlier_fraction must be in [0, 1], got {outlier_fraction}")
    source = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn((m, k), generator=generator, device=source, dtype=torch.float32)
    gains = torch.ones(k, device=source)
    outliers = round(k * outlier_fraction)
    if outliers:
        channels = torch.randperm(k, generator=generator, device=source)[:outliers]
        gains[channels] = outlier_gain
    x = z * gains
    rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(torch.finfo(torch.float32).tiny)
    return (x / rms).to(device=device if device is not None else source, dtype=dtype)


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0.0:
        return 0.0 if numerator == 0.0 else float("inf")
    return numerator / denominator
