"""The prefill kernel: many rows per delta, a tiled tensor-core GEMM over W_eff = W_base + α·sign.

W_eff is formed in fp32 registers and rounded once to x's dtype before ``tl.dot`` (fp32 runs
IEEE dots); sign words are loaded once per tile and expanded in registers; grouped ordering
reuses W_base tiles. See docs/codecs.md, "Kernels".
"""

# mypy: disable-error-code="no-untyped-def, untyped-decorator"
# No `from __future__ import annotations`: see kernels/decode_kernel.py.

import triton
import triton.language as tl

from kernels.tile_math import signed_scale, wide_offset


@triton.jit
def _tenant_weights(w, words_ptrs, mask, alpha, offs_bit, BLOCK_K: tl.constexpr,
                    BLOCK_N: tl.constexpr, out_dtype: tl.constexpr):
    """W_base [BW, 32, BN] (fp32) + α·sign as a [BLOCK_K, BLOCK_N] tile of the dot's type."""
    words = tl.load(words_ptrs, mask=mask, other=0)  # [BW, BN]: each word once
    w_eff = w + signed_scale(words[:, None, :], offs_bit[None, :, None], alpha[None, None, :])
    return tl.reshape(w_eff, (BLOCK_K, BLOCK_N)).to(out_dtype)


@triton.jit(do_not_specialize=["M", "T"])
def bitdelta_gemm_kernel(
    x_ptr, w_ptr, bits_ptr, scale_ptr, seg_ptr, y_ptr,
    M, N, K, T,
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_bt, stride_bw, stride_bn,
    stride_st, stride_sn,
    stride_ym, stride_yn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    SEGMENTED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    m_lo = pid_m * BLOCK_M
    m_hi = tl.minimum(m_lo + BLOCK_M, M)
    offs_m = m_lo + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_word = tl.arange(0, BLOCK_K // 32)
    offs_bit = tl.arange(0, 32)
    m_mask = offs_m < M
    n_mask = offs_n < N
    dot_dtype = x_ptr.dtype.element_ty
    if UPCAST_DOT:
        # The Triton interpreter multiplies bf16 bit patterns in tl.dot
        # (triton-lang/triton#11584); exact bf16 products in fp32 give the same sums.
        dot_dtype = tl.float32
    x_rows = x_ptr + wide_offset(offs_m, stride_xm)
    w_cols = w_ptr + wide_offset(offs_n, stride_wn)
    bits_cols = bits_ptr + wide_offset(offs_n, stride_bn)
    if not SEGMENTED:
        alpha0 = tl.load(scale_ptr + offs_n * stride_sn, mask=n_mask, other=0.0)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        a = tl.load(x_rows[:, None] + k[None, :] * stride_xk,
                    mask=m_mask[:, None] & (k < K)[None, :], other=0.0)
        word = k0 // 32 + offs_word  # [BW]
        k3 = word[:, None] * 32 + offs_bit[None, :]  # [BW, 32]
        w = tl.load(w_cols[None, None, :] + k3[:, :, None] * stride_wk,
                    mask=(k3 < K)[:, :, None] & n_mask[None, None, :], other=0.0)
        w = w.to(tl.float32)  # [BW, 32, BN]
        word_mask = (word < tl.cdiv(K, 32))[:, None] & n_mask[None, :]
        word_offs = bits_cols[None, :] + word[:, None] * stride_bw  # [BW, BN]
        if UPCAST_DOT:
            a = a.to(tl.float32)
        if SEGMENTED:
            for t in range(0, T):
                lo = tl.maximum(tl.load(seg_ptr + t), m_lo)
                hi = tl.minimum(tl.load(seg_ptr + t + 1), m_hi)
                if lo < hi:
                    alpha = tl.load(scale_ptr + wide_offset(t, stride_st) + offs_n * stride_sn,
                                    mask=n_mask, other=0.0)
                    w_eff = _tenant_weights(w, word_offs + wide_offset(t, stride_bt), word_mask,
                                            alpha, offs_bit, BLOCK_K, BLOCK_N,
                                            x_ptr.dtype.element_ty)
                    in_segment = (offs_m >= lo) & (offs_m < hi)
                    a_t = tl.where(in_segment[:, None], a, tl.zeros_like(a))
                    acc = tl.dot(a_t, w_eff.to(dot_dtype), acc, input_precision=DOT_PRECISION)
        else:
            # No tenant loop or branch here, so the K loop stays a plain software-pipelined GEMM.
            w_eff = _tenant_weights(w, word_offs, word_mask, alpha0, offs_bit, BLOCK_K, BLOCK_N,
                                    x_ptr.dtype.element_ty)
            acc = tl.dot(a, w_eff.to(dot_dtype), acc, input_precision=DOT_PRECISION)

    y_ptrs = y_ptr + wide_offset(offs_m, stride_ym)[:, None] + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])
