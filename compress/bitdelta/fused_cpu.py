"""The CPU encoder's elementwise pass, compiled (numba): one loop over a chunk of rows.

torch and numpy run each elementwise step as its own call over the chunk: two float32
conversions, the difference, the sign compare, bit packing, |ΔW|, two norms. Each call is
fast, but together they read and write the chunk about ten times, and at a 4-µs call on
a 512-KB chunk Python's overhead is as large as the work. This loop does all of it in one
pass, with the GIL released, so encoder threads really run side by side.

What it must not change is the output. Every value it writes is the same IEEE float32
arithmetic as before: a widening conversion (exact), one float32 subtraction, `abs`, the
`≥ 0` compare. α's row sums are not taken here: the loop writes |ΔW| and the caller sums
each row with `torch.sum`, as it always has, so α keeps its bits (torch's cascaded
float32 order would be fragile to reproduce). The two norms, ‖ΔW‖² and ‖W_ft‖², which
only the report uses, add each row's squares in float32 across the vector lanes (as
torch's float32 norms did, ~1e-7 relative) and the rows' totals in float64.

Inputs are the stored bits: fp16 as int16, bf16 as uint16, float32 as it is (numba has
no float16 arrays); `kernel_view` makes those views. fp16 widens with the CPU's own
conversion (F16C on x86), bf16 by a shift.
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
        # A row's squares add up in float32 across the vector lanes (float64 would halve
        # the loop's speed); the rows' totals add up in float64.
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
