"""The decode kernel: a few rows of one delta, or tenants of one row each; built for the roofline.

y[m, n] = Σ_k x[m, k]·W_base[n, k] + α_t[n]·Σ_k x[m, k]·sign_t[n, k], t the tenant of row m.
A program owns BLOCK_N columns of BLOCK_M rows and walks all of K with no reduction inside
the loop; rows are lanes. Why it is shaped so: docs/codecs.md, "Kernels".
"""

# mypy: disable-error-code="no-untyped-def, untyped-decorator"
# No `from __future__ import annotations`: string annotations hide tl.constexpr from the
# interpreter of older Triton releases.

import triton
import triton.language as tl

from kernels.tile_math import sign_flips, signed_scale, signed_values, wide_offset


@triton.jit
def _row_tenants(seg_ptr, offs_m, T, SEGMENTED: tl.constexpr):
    """The tenant owning each row: the number of segment ends at or before it."""
    tenant = tl.zeros_like(offs_m)
    if SEGMENTED:
        for t in range(1, T):
            tenant += (tl.load(seg_ptr + t) <= offs_m).to(tl.int32)
    return tenant


@triton.jit(do_not_specialize=["M", "T"])
def bitdelta_decode_kernel(
    x_ptr, w_ptr, bits_ptr, scale_ptr, seg_ptr, y_ptr,
    M, N, K, T,
    stride_xm, stride_xk,
    stride_wn, stride_wk,
    stride_bt, stride_bw, stride_bn,
    stride_st, stride_sn,
    stride_ym, stride_yn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_WORDS: tl.constexpr,
    SEGMENTED: tl.constexpr,
    BASE_ON_DOT: tl.constexpr,
    DOT_UPCAST: tl.constexpr,
    K_STAGES: tl.constexpr,
):
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_word = tl.arange(0, BLOCK_WORDS)
    offs_bit = tl.arange(0, 32)
    n_words = tl.cdiv(K, 32)

    tenant = _row_tenants(seg_ptr, offs_m, T, SEGMENTED)
    x_rows = x_ptr + wide_offset(offs_m, stride_xm)  # [BM]
    w_cols = w_ptr + wide_offset(offs_n, stride_wn)  # [BN]
    bits_cols = wide_offset(offs_n, stride_bn)  # [BN]
    if SEGMENTED:
        bits_rows = bits_ptr + wide_offset(tenant, stride_bt)  # [BM]: each row's own delta
        alpha = tl.load(scale_ptr + wide_offset(tenant, stride_st)[:, None]
                        + offs_n[None, :] * stride_sn,
                        mask=m_mask[:, None] & n_mask[None, :], other=0.0)  # [BM, BN]
    else:
        alpha = tl.load(scale_ptr + offs_n * stride_sn, mask=n_mask, other=0.0)  # [BN]

    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_WORDS, 32), dtype=tl.float32)
    if BASE_ON_DOT:
        base = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_t = tl.zeros((BLOCK_M, BLOCK_WORDS, 32, BLOCK_N), dtype=tl.float32)
    for word0 in tl.range(0, n_words, BLOCK_WORDS, num_stages=K_STAGES):
        word = word0 + offs_word  # [BW]
        k = word[:, None] * 32 + offs_bit[None, :]  # [BW, 32]
        k_mask = k < K
        word_mask = n_mask[:, None] & (word < n_words)[None, :]  # [BN, BW]
        x = tl.load(x_rows[:, None, None] + k[None, :, :] * stride_xk,
                    mask=m_mask[:, None, None] & k_mask[None, :, :], other=0.0)  # [BM, BW, 32]
        x = x.to(tl.float32)
        if SEGMENTED:
            words = tl.load(bits_rows[:, None, None] + bits_cols[None, :, None]
                            + word[None, None, :] * stride_bw,
                            mask=m_mask[:, None, None] & word_mask[None, :, :],
                            other=0)  # [BM, BN, BW]
            if BASE_ON_DOT:
                kk = word0 * 32 + tl.arange(0, BLOCK_WORDS * 32)
                kk_mask = kk < K
                x2 = tl.load(x_rows[:, None] + kk[None, :] * stride_xk,
                             mask=m_mask[:, None] & kk_mask[None, :], other=0.0)
                w_t = tl.load(w_cols[None, :] + kk[:, None] * stride_wk,
                              mask=kk_mask[:, None] & n_mask[None, :], other=0.0)
                if DOT_UPCAST:
                    # The interpreter multiplies bf16 bit patterns in tl.dot
                    # (triton-lang/triton#11584); exact bf16 products in fp32 sum the same.
                    base = tl.dot(x2.to(tl.float32), w_t.to(tl.float32), base,
                                  input_precision="ieee")
                else:
                    base = tl.dot(x2, w_t, base)
                # [BM, BW, 32, BN]: columns last, so a thread holds many bits of one word.
                words_t = tl.load(bits_rows[:, None, None] + bits_cols[None, None, :]
                                  + word[None, :, None] * stride_bw,
                                  mask=m_mask[:, None, None] & word_mask.trans()[None, :, :],
                                  other=0)  # [BM, BW, BN]
                flips = sign_flips(words_t[:, :, None, :], offs_bit[None, None, :, None])
                acc_t += signed_values(-x[:, :, :, None], flips)
            else:
                w = tl.load(w_cols[:, None, None] + k[None, :, :] * stride_wk,
                            mask=n_mask[:, None, None] & k_mask[None, :, :], other=0.0)
                w_eff = w.to(tl.float32)[None, :, :, :] + signed_scale(
                    words[:, :, :, None], offs_bit[None, None, None, :], alpha[:, :, None, None])
                acc += x[:, None, :, :] * w_eff
        else:
            words = tl.load(bits_ptr + bits_cols[:, None] + word[None, :] * stride_bw,
                            mask=word_mask, other=0)  # [BN, BW]
            w = tl.load(w_cols[:, None, None] + k[None, :, :] * stride_wk,
                        mask=n_mask[:, None, None] & k_mask[None, :, :], other=0.0)
            w_eff = w.to(tl.float32) + signed_scale(
                words[:, :, None], offs_bit[None, None, :], alpha[:, None, None])  # [BN, BW, 32]
            acc += x[:, None, :, :] * w_eff[None, :, :, :]

    if BASE_ON_DOT:
        total = base + alpha * tl.sum(tl.sum(acc_t, axis=2), axis=1)
    else:
        total = tl.sum(tl.sum(acc, axis=3), axis=2)  # [BM, BN]
    y_ptrs = y_ptr + wide_offset(offs_m, stride_ym)[:, None] + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, total.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])
