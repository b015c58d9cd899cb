"""The fused BitDelta linear with gradients for α and x: what scale distillation trains.

Forward `bitdelta_linear`; backward ∂L/∂α_i = Σ_t g_{t,i}·(x·Sᵀ)_{t,i} and
∂L/∂x = g·W_base + (g ⊙ α)·S, unpacking S for one matrix per call. W_base and the bits get no
gradient; W_ft is never formed. float64 (gradcheck) runs in torch ops on the torch backend.
See docs/codecs.md, "Kernels".
"""

from __future__ import annotations

from typing import Any

import torch

from kernels.bitdelta_linear import Backend, bitdelta_linear, resolve_backend
from kernels.packing import unpack_signs


def bitdelta_linear_trainable(x: torch.Tensor, w_base: torch.Tensor, bits: torch.Tensor,
                              scale: torch.Tensor, *, backend: Backend = "auto"
                              ) -> torch.Tensor:
    """`bitdelta_linear` that autograd differentiates with respect to `scale` and `x`.

    x [..., K], w_base [N, K] (x's dtype), bits int32 [ceil(K/32), N], scale float32 [N]
    or [] → y [..., N] in x's dtype. For float64 x, w_base and scale (gradient checks)
    the torch backend computes in float64.
    """
    if x.dtype == torch.float64:
        if resolve_backend(x.device, backend) != "torch":
            raise TypeError("float64 runs on the torch backend only (the kernels take "
                            "float16, bfloat16 and float32); pass backend='torch'")
        if w_base.dtype != torch.float64 or scale.dtype != torch.float64:
            raise TypeError("with float64 x, w_base and scale must be float64 too")
    result: torch.Tensor = _BitDeltaLinear.apply(  # type: ignore[no-untyped-call]
        x, w_base, bits, scale, backend)
    return result


class _BitDeltaLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w_base: torch.Tensor, bits: torch.Tensor,
                scale: torch.Tensor, backend: Backend) -> torch.Tensor:
        ctx.save_for_backward(x, w_base, bits, scale)
        if x.dtype == torch.float64:
            signs = unpack_signs(bits, int(w_base.shape[1]), torch.float64)
            return x @ w_base.t() + (x @ signs.t()) * scale
        return bitdelta_linear(x, w_base, bits, scale, backend=backend)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor
                 ) -> tuple[torch.Tensor | None, None, None, torch.Tensor | None, None]:
        x, w_base, bits, scale = ctx.saved_tensors
        need_x, _, _, need_scale, _ = ctx.needs_input_grad
        n, k = w_base.shape
        # Transient: S for this matrix only, released when backward returns (see above).
        signs = unpack_signs(bits, int(k), x.dtype)
        g = grad.reshape(-1, n)
        grad_x = grad_scale = None
        if need_scale:
            grad_scale = _scale_grad(x.reshape(-1, k), g, signs, scale)
        if need_x:
            alpha = scale.to(g.dtype)
            grad_x = (g @ w_base + (g * alpha) @ signs).reshape(x.shape)
        return grad_x, None, None, grad_scale, None


def _scale_grad(x: torch.Tensor, g: torch.Tensor, signs: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """Σ_tokens g ⊙ (x·Sᵀ), per row or in total, in α's precision (float32 or float64).

    x·Sᵀ sums K activations with signs: in float16 it can overflow where y itself does
    not (α is small), so it is formed in α's dtype, not x's.
    """
    wide = scale.dtype
    projected = x.to(wide) @ signs.to(wide).t()  # [M, N]
    per_row = (g.to(wide) * projected).sum(dim=0)
    return per_row if scale.dim() == 1 else per_row.sum()
