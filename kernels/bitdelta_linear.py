"""Fused BitDelta linear: y = x·W_baseᵀ + α ⊙ (x·sign(ΔW)ᵀ), for one delta or many tenants.

The entry points: operands are checked, then the Triton kernels run for CUDA tensors when
triton is installed, the torch reference otherwise. ``backend="triton"`` forces the kernels
(on CPU tensors under TRITON_INTERPRET=1); the interpreter never changes what ``auto`` picks.
See docs/codecs.md, "Kernels".
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from typing import Literal, get_args

import torch

from kernels.configs import KernelConfig, select_config
from kernels.operands import Operands, Scale, multi_operands, single_operands
from kernels.reference import reference_from_operands

Backend = Literal["auto", "triton", "torch"]
BACKEND_ENV = "DELTAHUB_KERNEL_BACKEND"


def bitdelta_linear(
    x: torch.Tensor,
    w_base: torch.Tensor,
    bits: torch.Tensor,
    scale: Scale,
    *,
    backend: Backend = "auto",
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """x [..., K] (fp16/bf16/fp32), w_base [N, K] (x's dtype), bits int32 [ceil(K/32), N],
    scale float32 [N] or scalar → y [..., N] in x's dtype, accumulated in fp32.

    `config` overrides the decode/prefill choice of kernels/configs.py (Triton backend only).
    """
    return _run(single_operands(x, w_base, bits, scale), backend, config)


def bitdelta_linear_multi(
    x: torch.Tensor,
    w_base: torch.Tensor,
    bits: torch.Tensor,
    scale: torch.Tensor,
    seg_starts: torch.Tensor | Sequence[int],
    *,
    max_rows_per_tenant: int | None = None,
    backend: Backend = "auto",
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """Many fine-tunes of one base in one launch.

    x [M, K] with rows grouped by tenant; bits int32 [T, ceil(K/32), N]; scale float32 [T, N]
    or [T]; tenant t owns rows seg_starts[t]:seg_starts[t+1] (T+1 non-decreasing entries from
    0 to M). A list or CPU tensor is checked and uploaded once per pattern; an int32 tensor on
    x's CUDA device is used unchecked (CUDA-graph capturable: then pass `max_rows_per_tenant`).
    See docs/codecs.md, "Kernels".
    """
    ops = multi_operands(x, w_base, bits, scale, seg_starts, max_rows_per_tenant)
    return _run(ops, backend, config)


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """Whether the Triton kernels run in Triton's interpreter (on CPU tensors).

    Imports triton (through kernels/binary_gemm.py), which reads TRITON_INTERPRET then:
    call it only where the Triton backend was chosen.
    """
    from kernels import binary_gemm

    return binary_gemm.kernels_interpreted()


def resolve_backend(device: torch.device, backend: Backend = "auto") -> Literal["triton", "torch"]:
    """The backend a call on `device` runs: `backend`, else DELTAHUB_KERNEL_BACKEND, else auto."""
    if backend == "auto":
        from_env = os.environ.get(BACKEND_ENV, "auto")
        if from_env not in get_args(Backend):
            raise ValueError(f"{BACKEND_ENV} must be auto, triton or torch, got {from_env!r}")
        backend = from_env  # type: ignore[assignment]  # checked just above
    if backend == "torch":
        return "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(
                "backend='triton' needs the triton package (Linux x86_64/aarch64: pip install "
                "triton); use backend='torch' elsewhere"
            )
        return "triton"
    return "triton" if device.type == "cuda" and triton_available() else "torch"


def _run(ops: Operands, backend: Backend, config: KernelConfig | None) -> torch.Tensor:
    if resolve_backend(ops.x.device, backend) == "torch":
        return reference_from_operands(ops)
    # Imported here, not at the top: triton is optional, and @triton.jit reads
    # TRITON_INTERPRET at import time (see the module docstring).
    from kernels import binary_gemm

    chosen = config or select_config(ops.m, ops.max_rows_per_tenant, segmented=ops.segmented,
                                     dtype=ops.x.dtype)
    return binary_gemm.launch(ops, chosen)
