"""The one definition of deltahub's 1-bit sign layout (DESIGN.md, "BitDelta deltas").

ΔW [N, K] is stored as int32 bits [ceil(K/32), N]: word j of column n holds the signs of
ΔW[n, 32j … 32j+31], least-significant bit first; bit 1 means ΔW ≥ 0 (+1), bit 0 means
ΔW < 0 (−1); padding bits past K are 0. K-major, as the BitDelta reference code and GemLite.
"""

from __future__ import annotations

import torch

BITS_PER_WORD = 32

# Rows are packed a slab at a time so that the uint8 intermediates stay small
# (256 rows × 11008 columns ≈ 2.8 MB, cache-resident) whatever the matrix size; 256 was the
# fastest slab (docs/benchmarks.md, "Figures quoted from code, moved here").
_ROWS_PER_SLAB = 256

_BYTE_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)


def packed_words(k: int) -> int:
    """Number of int32 words that hold the signs of K columns."""
    return (k + BITS_PER_WORD - 1) // BITS_PER_WORD


def pack_signs(delta: torch.Tensor) -> torch.Tensor:
    """Pack sign(ΔW) of a [N, K] tensor into int32 bits of shape [ceil(K/32), N]."""
    if delta.dim() != 2:
        raise ValueError(f"pack_signs expects a 2-D [N, K] tensor, got shape {tuple(delta.shape)}")
    n, k = delta.shape
    words = packed_words(k)
    # Each int32 word is four little-endian bytes; building bytes and viewing them as
    # int32 keeps every intermediate at one byte per element.
    packed_bytes = torch.empty((n, words * 4), dtype=torch.uint8, device=delta.device)
    for start in range(0, n, _ROWS_PER_SLAB):
        rows = delta[start : start + _ROWS_PER_SLAB]
        if k == words * BITS_PER_WORD:
            positive = (rows >= 0).contiguous().view(torch.uint8)
        else:
            positive = torch.zeros((rows.shape[0], words * BITS_PER_WORD), dtype=torch.uint8,
                                   device=delta.device)
            positive[:, :k] = rows >= 0
        packed_bytes[start : start + _ROWS_PER_SLAB] = _flags_to_bytes(positive)
    return words_from_row_bytes(packed_bytes)


def words_from_row_bytes(packed_bytes: torch.Tensor) -> torch.Tensor:
    """[N, 4·words] uint8, row n holding the little-endian bytes of its words (byte i of
    a row = the signs of columns 8i … 8i+7, least-significant bit first, padding 0) ->
    the int32 bits [words, N] of this layout. For encoders that pack bytes their own way.
    """
    if packed_bytes.dtype != torch.uint8 or packed_bytes.dim() != 2 or packed_bytes.shape[1] % 4:
        raise ValueError("words_from_row_bytes expects uint8 [N, 4·words], got "
                         f"{packed_bytes.dtype} {tuple(packed_bytes.shape)}")
    n, words = packed_bytes.shape[0], packed_bytes.shape[1] // 4
    if packed_bytes.numel() == 0:  # N = 0 or K = 0: nothing to view as int32
        return torch.zeros(words, n, dtype=torch.int32, device=packed_bytes.device)
    return _bytes_to_int32(packed_bytes).t().contiguous()  # [N, words] -> [words, N]


def _flags_to_bytes(flags: torch.Tensor) -> torch.Tensor:
    """[R, 8m] uint8 flags (0 or 1) -> [R, m] bytes; flag i of each group of 8 is bit i."""
    if not _HOST_IS_LITTLE_ENDIAN:
        bits8 = flags.view(flags.shape[0], -1, 8)
        return (bits8 * _BYTE_WEIGHTS.to(flags.device)).sum(dim=-1, dtype=torch.uint8)
    # Eight flag bytes read as one little-endian int64 hold flag i at bit 8i; three
    # shift-ors gather them into the low byte. Much faster than multiplying by the bit
    # weights and summing groups of 8 (docs/benchmarks.md, "How we got here (BitDelta encoder)").
    x = flags.reshape(-1).view(torch.int64)  # flat: view() refuses some 1-row strides
    x = x | (x >> 7)  # byte j: flags j, j+1 in bits 0-1
    x |= x >> 14  # byte j: flags j..j+3 in bits 0-3
    x |= x >> 28  # byte 0: flags 0..7 in bits 0-7
    return (x & 0xFF).to(torch.uint8).view(flags.shape[0], -1)


def unpack_signs(bits: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode int32 bits [ceil(K/32), N] into a ±1 tensor of shape [N, K] and `dtype`."""
    if bits.dtype != torch.int32 or bits.dim() != 2:
        raise ValueError(
            f"unpack_signs expects int32 bits of shape [ceil(K/32), N], got {bits.dtype} "
            f"{tuple(bits.shape)}"
        )
    if bits.shape[0] != packed_words(k):
        raise ValueError(
            f"bits have {bits.shape[0]} words per column but K={k} needs {packed_words(k)}"
        )
    n = bits.shape[1]
    as_bytes = _int32_to_bytes(bits.t().contiguous())  # [N, words*4]
    shifts = _BIT_SHIFTS.to(bits.device)
    unpacked = (as_bytes.unsqueeze(-1) >> shifts) & 1  # [N, words*4, 8]
    signs = unpacked.view(n, -1)[:, :k].to(dtype)
    return signs * 2 - 1


def _bytes_to_int32(packed_bytes: torch.Tensor) -> torch.Tensor:
    """View [..., 4m] little-endian bytes as [..., m] int32 words, independent of host order."""
    if _HOST_IS_LITTLE_ENDIAN:
        return _view_last_dim(packed_bytes, torch.int32)
    b = packed_bytes.view(*packed_bytes.shape[:-1], -1, 4).to(torch.int64)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def _int32_to_bytes(words: torch.Tensor) -> torch.Tensor:
    if _HOST_IS_LITTLE_ENDIAN:
        return _view_last_dim(words, torch.uint8)
    w = words.to(torch.int64) & 0xFFFFFFFF
    parts = [((w >> shift) & 0xFF) for shift in (0, 8, 16, 24)]
    return torch.stack(parts, dim=-1).view(*words.shape[:-1], -1).to(torch.uint8)


def _view_last_dim(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Reinterpret a contiguous tensor's last dimension as `dtype`.

    `Tensor.view(dtype)` checks strides literally, and a transposed-then-`contiguous()`
    tensor with a size-1 dimension keeps a stride other than 1 there (e.g. bits [1, N]
    of K <= 32 read from a file: `.t().contiguous()` is [N, 1] with strides (1, N)).
    Going through the flat tensor avoids that.
    """
    flat = t.contiguous().reshape(-1).view(dtype)
    return flat.view(*t.shape[:-1], -1)


def _host_is_little_endian() -> bool:
    probe = torch.tensor([1], dtype=torch.int32).view(torch.uint8)
    return int(probe[0]) == 1


_HOST_IS_LITTLE_ENDIAN = _host_is_little_endian()
