"""The CPU encoder's elementwise pass, compiled (numba): one loop over a chunk of rows.

One pass with the GIL released instead of ~10 torch/numpy calls over the chunk. It must not
change the output: the same IEEE float32 arithmetic, and α's row sums stay with torch. Inputs
are the stored bits (`kernel_view`). See docs/codecs.md, "BitDelta compression".
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

# Bytes of sign flags the loop packs at a time: one uint64 of eight 0/1 bytes.
_FLAG_WORD = 8


def kernel_view(t: torch.Tensor) -> np.ndarray | None:
    """A contiguous CPU tensor's bits as the array the loop takes, or None if it cannot."""
    if not t.is_contiguous() or t.device.type != "cpu":
        return None
    if t.dtype == torch.float16:
        return t.view(torch.int16).numpy()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    if t.dtype == torch.float32:
        return t.numpy()
    return None


def flag_scratch(k: int) -> np.ndarray:
    """The per-thread row of sign flags `encode_rows` needs for rows of `k` values."""
    return np.zeros(-(-k // _FLAG_WORD) * _FLAG_WORD, dtype=np.uint8)


@intrinsic
def _half_bits_to_float(typingctx, bits):  # type: ignore[no-untyped-def]
    """fp16 stored as int16 → float32, by LLVM's fpext (the CPU's F16C conversion)."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.int16), codegen


@intrinsic
def _bf16_bits_to_float(typingctx, bits):  # type: ignore[no-untyped-def]
    """bf16 stored as uint16 → float32: its bits are float32's top half."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())
    return types.float32(types.uint16), codegen


def _widen(x: object) -> float:
    """Stored value → float32; compiled only (see the overload)."""
    raise NotImplementedError


@overload(_widen, inline="always")
def _widen_compiled(x):  # type: ignore[no-untyped-def]
    if x == types.int16:
        return lambda x: _half_bits_to_float(x)  # type: ignore[call-arg]
    if x == types.uint16:
        return lambda x: _bf16_bits_to_float(x)  # type: ignore[call-arg]
    if x == types.float32:
        return lambda x: x
    return None


# fastmath "reassoc" only: it lets the norm sums vectorise. Every value written (|ΔW|, the
# flags) comes from one IEEE operation each, which reassociation cannot change.
@numba.njit(nogil=True, cache=True, fastmath={"reassoc"})
def encode_rows(finetune, base, absd, packed, flags):  # type: ignore[no-untyped-def]
    """For rows [R, K] of the fine-tune (and its base; None when `finetune` is ΔW itself):
    |ΔW| into `absd` [R, K] float32, sign bits (1 where ΔW ≥ 0, least significant first,
    zero padding) into `packed` [R, ≥ ⌈K/8⌉] uint8, and return (‖ΔW‖², ‖W_ft‖²) in float64.
    `flags` is `flag_scratch(K)`. NaN gives NaN sums; the caller refuses it."""
    r, k = finetune.shape
    words = flags.view(np.uint64)
    used = (k + _FLAG_WORD - 1) // _FLAG_WORD
    flags[k:] = 0  # the last byte's padding bits
    delta_sq = 0.0
    finetune_sq = 0.0
    for i in range(r):
        # A row's squares add up in float32 across the vector lanes (float64 was much slower:
        # docs/benchmarks.md, "How we got here (BitDelta encoder)"); the rows' totals in float64.
        row_delta_sq = np.float32(0)
        row_finetune_sq = np.float32(0)
        for c in range(k):
            f = _widen(finetune[i, c])
            d = f if base is None else f - _widen(base[i, c])
            absd[i, c] = abs(d)
            flags[c] = d >= 0
            row_delta_sq += d * d
            row_finetune_sq += f * f
        delta_sq += np.float64(row_delta_sq)
        finetune_sq += np.float64(row_finetune_sq)
        for w in range(used):
            # Eight 0/1 bytes → one byte, first flag in bit 0: the multiply moves byte t's
            # bit to bit 56 + t with no carries (checked exhaustively in the tests).
            packed[i, w] = np.uint8((words[w] * np.uint64(0x0102040810204080)) >> np.uint64(56))
        for w in range(used, packed.shape[1]):
            packed[i, w] = 0
    return delta_sq, finetune_sq
