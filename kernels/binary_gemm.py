"""Triton kernels of the fused BitDelta linear, one delta or many tenants of one base.

y[m, n] = Σ_k x[m, k]·W_base[n, k] + α_t[n]·Σ_k x[m, k]·sign_t[n, k], with t the tenant that
owns row m, in one launch. The single-delta entry point is the case T = 1 owning every row
(``SEGMENTED=False`` compiles the tenant bookkeeping away).

Layers, as in STYLE.md: two private ``@triton.jit`` kernels, the launcher ``launch`` that
allocates the output and picks the grid, and the torch reference beside them in
kernels/reference.py (operand checks live in kernels/operands.py, shared by both).

This module imports triton at the top and is imported lazily by kernels/bitdelta_linear.py,
so deltahub runs without triton. ``@triton.jit`` reads TRITON_INTERPRET when this module is
first imported: set it before then to run these kernels on CPU tensors.

Design (why, not what):

* Both kernels read a W_base tile once per K step and reuse it for every tenant whose rows
  fall in the program's M block, so with many tenants the shared base costs one read per
  tile instead of one per tenant.
* ``gemv`` (decode) walks all of K in one program and never splits K: split-K would need
  fp32 atomics into a workspace plus a cast to x's dtype, i.e. a second launch or a
  last-arriving-program semaphore. Small BLOCK_N (8) already gives hundreds of programs at
  N ≥ 4096. The sign part uses no multiply at all: the bit is moved into the IEEE sign
  position and XOR-ed into x, so Σ x·sign costs a shift, a logical op and an add per
  element, and α is applied once per row after the reduction.
* ``gemm`` (prefill) expands signs to W_eff = W_base + α·sign in fp32 registers, rounds
  once to x's dtype and issues one ``tl.dot`` (tensor cores) per tenant. The rounding of
  W_eff is the same one a dense matmul with a materialised fp16/bf16 W_ft makes; fp32
  inputs use ``input_precision="ieee"`` so they are not silently reduced to TF32.
"""

# Triton reads the annotations of a @triton.jit function (tl.constexpr marks a compile-time
# parameter; anything else changes specialisation), so kernel parameters stay unannotated and
# the decorator is untyped; mypy's strict checks stay on for everything else in this file.
# mypy: disable-error-code="no-untyped-def, untyped-decorator"
# No `from __future__ import annotations`: string annotations hide tl.constexpr from the
# interpreter of older Triton releases.

import torch
import triton
import triton.language as tl

from kernels.configs import KernelConfig
from kernels.operands import Operands

# Bit 31 of an int32: the IEEE-754 sign bit of a float32 reinterpreted as int32.
_SIGN_BIT = tl.constexpr(-2147483648)


@triton.jit
def _bitdelta_gemv_kernel(
    # pointers
    x_ptr, w_ptr, bits_ptr, scale_ptr, seg_ptr, y_ptr,
    # sizes
    M, N, K, T,
    # strides
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_bt, stride_bw, stride_bn,
    stride_st, stride_sn,
    stride_ym, stride_yn,
    # meta-parameters
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_WORDS: tl.constexpr,
    SEGMENTED: tl.constexpr,
):
    # This program's tile: BLOCK_N output columns of BLOCK_M rows, over all of K.
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    m_lo = pid_m * BLOCK_M
    m_hi = tl.minimum(m_lo + BLOCK_M, M)
    offs_m = m_lo + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_word = tl.arange(0, BLOCK_WORDS)
    offs_bit = tl.arange(0, 32)
    n_words = tl.cdiv(K, 32)

    # K loop, BLOCK_WORDS packed words (32·BLOCK_WORDS columns of K) at a time.
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for word0 in range(0, n_words, BLOCK_WORDS):
        word = word0 + offs_word  # [W]
        k = word[:, None] * 32 + offs_bit[None, :]  # [W, 32]: k of bit b of word w
        k_mask = k < K
        # Tiles are [BLOCK_N, W, 32] so each packed word is loaded once and K stays contiguous.
        w_ptrs = w_ptr + offs_n[:, None, None] * stride_wn + k[None, :, :] * stride_wk
        w = tl.load(w_ptrs, mask=n_mask[:, None, None] & k_mask[None, :, :], other=0.0)
        w = w.to(tl.float32)
        word_mask = n_mask[:, None] & (word < n_words)[None, :]
        # Every tenant with rows in this M block reuses the W_base tile just loaded.
        for t in range(0, T):
            if SEGMENTED:
                lo = tl.maximum(tl.load(seg_ptr + t), m_lo)
                hi = tl.minimum(tl.load(seg_ptr + t + 1), m_hi)
            else:
                lo = m_lo
                hi = m_hi
            if lo < hi:
                words = tl.load(
                    bits_ptr + t * stride_bt + word[None, :] * stride_bw
                    + offs_n[:, None] * stride_bn,
                    mask=word_mask, other=0,
                )  # [BLOCK_N, W]
                alpha = tl.load(scale_ptr + t * stride_st + offs_n * stride_sn,
                                mask=n_mask, other=0.0)
                # Bit b = 0 (ΔW < 0) becomes a set sign bit, so x XOR flip = x·sign. Padding
                # bits decode to -1 but meet x = 0 there (masked load).
                flip = ((~words)[:, :, None] << (31 - offs_bit)[None, None, :]) & _SIGN_BIT
                for r in range(lo, hi):
                    x_ptrs = x_ptr + r * stride_xm + k * stride_xk
                    xr = tl.load(x_ptrs, mask=k_mask, other=0.0).to(tl.float32)  # [W, 32]
                    base = tl.sum(tl.sum(w * xr[None, :, :], axis=2), axis=1)
                    x_bits = xr.to(tl.int32, bitcast=True)[None, :, :]
                    signed_x = (x_bits ^ flip).to(tl.float32, bitcast=True)
                    delta = tl.sum(tl.sum(signed_x, axis=2), axis=1)
                    row = base + alpha * delta  # [BLOCK_N]
                    acc = tl.where((offs_m == r)[:, None], acc + row[None, :], acc)

    # One store of y in x's dtype: the fp32 sums are rounded once.
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    y_mask = (offs_m < M)[:, None] & n_mask[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _signed_weights(w, words, shift, alpha, out_dtype: tl.constexpr):
    """W_base tile [BLOCK_K, BLOCK_N] in fp32 + α·sign, rounded once to the dot's input type."""
    positive = ((words >> shift) & 1) != 0
    return (w + tl.where(positive, alpha[None, :], -alpha[None, :])).to(out_dtype)


@triton.jit
def _bitdelta_gemm_kernel(
    # pointers
    x_ptr, w_ptr, bits_ptr, scale_ptr, seg_ptr, y_ptr,
    # sizes
    M, N, K, T,
    # strides
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_bt, stride_bw, stride_bn,
    stride_st, stride_sn,
    stride_ym, stride_yn,
    # meta-parameters
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    SEGMENTED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    # Grouped ordering: GROUP_M consecutive M tiles walk the same band of W_base columns, so
    # a W_base tile is fetched from HBM about once per group instead of once per M tile.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # This program's tile: BLOCK_M rows by BLOCK_N output columns.
    m_lo = pid_m * BLOCK_M
    m_hi = tl.minimum(m_lo + BLOCK_M, M)
    offs_m = m_lo + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    dot_dtype = x_ptr.dtype.element_ty
    if UPCAST_DOT:
        # The Triton interpreter multiplies bf16 bit patterns in tl.dot
        # (triton-lang/triton#11584); exact bf16 products in fp32 give the same sums.
        dot_dtype = tl.float32

    # K loop: load the x and W_base tiles once, then add each tenant's α·sign to W_base and
    # multiply its rows (the other rows zeroed) on the tensor cores.
    if not SEGMENTED:
        alpha0 = tl.load(scale_ptr + offs_n * stride_sn, mask=n_mask, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        k_mask = k < K
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :] * stride_xk,
                    mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptr + k[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                    mask=k_mask[:, None] & n_mask[None, :], other=0.0).to(tl.float32)
        kn_mask = k_mask[:, None] & n_mask[None, :]
        word_offs = (k[:, None] // 32) * stride_bw + offs_n[None, :] * stride_bn
        shift = (k % 32)[:, None]
        if UPCAST_DOT:
            a = a.to(tl.float32)
        if SEGMENTED:
            for t in range(0, T):
                lo = tl.maximum(tl.load(seg_ptr + t), m_lo)
                hi = tl.minimum(tl.load(seg_ptr + t + 1), m_hi)
                if lo < hi:
                    words = tl.load(bits_ptr + t * stride_bt + word_offs, mask=kn_mask, other=0)
                    alpha = tl.load(scale_ptr + t * stride_st + offs_n * stride_sn,
                                    mask=n_mask, other=0.0)
                    w_eff = _signed_weights(w, words, shift, alpha, x_ptr.dtype.element_ty)
                    in_segment = (offs_m >= lo) & (offs_m < hi)
                    a_t = tl.where(in_segment[:, None], a, tl.zeros_like(a))
                    acc = tl.dot(a_t, w_eff.to(dot_dtype), acc, input_precision=DOT_PRECISION)
        else:
            # No tenant loop or branch here, so the K loop stays a plain software-pipelined GEMM.
            words = tl.load(bits_ptr + word_offs, mask=kn_mask, other=0)
            w_eff = _signed_weights(w, words, shift, alpha0, x_ptr.dtype.element_ty)
            acc = tl.dot(a, w_eff.to(dot_dtype), acc, input_precision=DOT_PRECISION)

    # One store of y in x's dtype: the fp32 sums are rounded once.
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def kernels_interpreted() -> bool:
    """True when this module's kernels were built for the Triton interpreter (CPU tensors)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_bitdelta_gemv_kernel, InterpretedFunction)


def launch(ops: Operands, config: KernelConfig) -> torch.Tensor:
    """Run one fused launch over checked operands; returns y shaped like x with N features."""
    device = ops.x.device
    interpreted = kernels_interpreted()
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
    seg = torch.tensor(ops.seg_starts, dtype=torch.int32, device=device)
    args = (
        ops.x, ops.w_base, ops.bits, ops.scale, seg, y,
        m, n, k, ops.tenants,
        ops.x.stride(0), ops.x.stride(1),
        ops.w_base.stride(0), ops.w_base.stride(1),
        ops.bits.stride(0), ops.bits.stride(1), ops.bits.stride(2),
        ops.scale.stride(0), ops.scale.stride(1),
        y.stride(0), y.stride(1),
    )
    if config.kind == "gemv":
        grid: tuple[int, ...] = (triton.cdiv(n, config.block_n), triton.cdiv(m, config.block_m))
        _bitdelta_gemv_kernel[grid](
            *args,
            BLOCK_M=config.block_m, BLOCK_N=config.block_n,
            BLOCK_WORDS=config.block_k // 32, SEGMENTED=ops.segmented,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
    else:
        upcast = interpreted and ops.x.dtype == torch.bfloat16
        grid = (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n),)
        _bitdelta_gemm_kernel[grid](
            *args,
            BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            GROUP_M=config.group_m, SEGMENTED=ops.segmented,
            DOT_PRECISION="ieee" if ops.x.dtype == torch.float32 or upcast else "tf32",
            UPCAST_DOT=upcast,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
    return y.reshape(ops.output_shape())
