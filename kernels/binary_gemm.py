"""The launcher of the fused BitDelta kernels: one delta or many tenants of one base.

Picks decode_kernel.py or gemm_kernel.py (configs.py) and launches it with no host-to-device
copy and no sync, so a launch with device-tensor boundaries can be captured in a CUDA graph.
Imports triton, so it is imported lazily (set TRITON_INTERPRET before that to run on CPU
tensors). See docs/codecs.md, "Kernels".
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton

from kernels.configs import KernelConfig, base_on_dot
from kernels.decode_kernel import bitdelta_decode_kernel
from kernels.gemm_kernel import bitdelta_gemm_kernel
from kernels.interpreter_compat import fix_interpreter_loop_bounds
from kernels.operands import Operands


def kernels_interpreted() -> bool:
    """True when the kernels were built for the Triton interpreter (CPU tensors)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(bitdelta_decode_kernel, InterpretedFunction)


@functools.lru_cache(maxsize=256)
def _uploaded_segments(device: torch.device, starts: tuple[int, ...]) -> torch.Tensor:
    """A device copy of host tenant boundaries, made once per (device, pattern).

    The cached tensor is never written, so sharing it between calls is safe.
    """
    return torch.tensor(starts, dtype=torch.int32).pin_memory().to(device, non_blocking=True)


def _segment_table(ops: Operands) -> torch.Tensor:
    if not ops.segmented:
        return ops.bits  # never read (SEGMENTED=False); any int32 pointer will do
    if ops.seg_device is not None:
        return ops.seg_device
    assert ops.seg_starts is not None  # checked host boundaries when there is no device table
    if ops.x.device.type != "cuda":  # the interpreter reads host memory
        return torch.tensor(ops.seg_starts, dtype=torch.int32)
    return _uploaded_segments(ops.x.device, ops.seg_starts)


def _launch_args(ops: Operands, seg: torch.Tensor, y: torch.Tensor) -> tuple[object, ...]:
    return (
        ops.x, ops.w_base, ops.bits, ops.scale, seg, y,
        ops.m, ops.n, ops.k, ops.tenants,
        ops.x.stride(0), ops.x.stride(1),
        ops.w_base.stride(0), ops.w_base.stride(1),
        ops.bits.stride(0), ops.bits.stride(1), ops.bits.stride(2),
        ops.scale.stride(0), ops.scale.stride(1),
        y.stride(0), y.stride(1),
    )


def launch(ops: Operands, config: KernelConfig) -> torch.Tensor:
    """Run one fused launch over checked operands; returns y shaped like x with N features."""
    device = ops.x.device
    interpreted = kernels_interpreted()
    if interpreted:
        fix_interpreter_loop_bounds()
    if device.type != "cuda" and not interpreted:
        raise RuntimeError(
            f"the Triton BitDelta kernels need CUDA tensors, got {device}. To run them on the "
            "CPU, set TRITON_INTERPRET=1 before kernels.binary_gemm is first imported, or use "
            "the torch reference (backend='torch')."
        )
    m, n, k = ops.m, ops.n, ops.k
    y = torch.empty((m, n), dtype=ops.x.dtype, device=device)
    if m == 0 or n == 0:
        return y.reshape(ops.output_shape())
    if k == 0:
        return y.zero_().reshape(ops.output_shape())
    # Triton launches on the current device; x's may be another one.
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        args = _launch_args(ops, _segment_table(ops), y)
        upcast = interpreted and ops.x.dtype == torch.bfloat16
        if config.kind == "decode":
            grid: tuple[int, ...] = (triton.cdiv(n, config.block_n), triton.cdiv(m, config.block_m))
            bitdelta_decode_kernel[grid](
                *args,
                BLOCK_M=config.block_m, BLOCK_N=config.block_n,
                BLOCK_WORDS=config.block_k // 32, SEGMENTED=ops.segmented,
                BASE_ON_DOT=base_on_dot(config, segmented=ops.segmented, dtype=ops.x.dtype),
                DOT_UPCAST=upcast, K_STAGES=config.num_stages,
                num_warps=config.num_warps,
            )
        else:
            grid = (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n),)
            bitdelta_gemm_kernel[grid](
                *args,
                BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
                GROUP_M=config.group_m, SEGMENTED=ops.segmented,
                DOT_PRECISION="ieee" if ops.x.dtype == torch.float32 or upcast else "tf32",
                UPCAST_DOT=upcast,
                num_warps=config.num_warps, num_stages=config.num_stages,
            )
    return y.reshape(ops.output_shape())
