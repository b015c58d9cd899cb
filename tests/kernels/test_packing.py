"""The 1-bit layout of kernels/packing.py, pinned by hand-made words and exact round trips."""

from __future__ import annotations

import pytest
import torch

from kernels import pack_signs, packed_words, unpack_signs


def _hand_made_delta() -> torch.Tensor:
    """ΔW [N=2, K=35] whose words are known: row 0 → (5, 1), row 1 → (bit 31 only, 4)."""
    delta = -torch.ones((2, 35))
    delta[0, 0] = 0.5
    delta[0, 2] = 0.0  # zero counts as ΔW ≥ 0, i.e. bit 1
    delta[0, 32] = 2.0
    delta[1, 31] = 1e-8
    delta[1, 34] = 3.0
    return delta


def test_hand_made_words_pin_lsb_first_k_major_layout() -> None:
    bits = pack_signs(_hand_made_delta())
    # [ceil(K/32), N]: word j of column n holds k = 32j … 32j+31, least-significant bit first.
    expected = torch.tensor([[5, -(2**31)], [1, 4]], dtype=torch.int32)
    assert bits.dtype == torch.int32
    assert torch.equal(bits, expected)


def test_hand_made_words_decode_to_the_known_signs() -> None:
    words = torch.tensor([[5, -(2**31)], [1, 4]], dtype=torch.int32)
    signs = unpack_signs(words, 35)
    expected = torch.where(_hand_made_delta() >= 0, 1.0, -1.0)
    assert torch.equal(signs, expected)


@pytest.mark.parametrize(
    ("n", "k"), [(1, 1), (3, 31), (2, 32), (5, 33), (4, 65), (17, 100), (130, 200)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_exact(n: int, k: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(n * 1000 + k)
    delta = torch.randn((n, k), generator=g)
    delta[torch.rand((n, k), generator=g) < 0.1] = 0.0
    delta = delta.to(dtype)
    bits = pack_signs(delta)
    assert bits.shape == (packed_words(k), n)
    signs = unpack_signs(bits, k, torch.float32)
    assert torch.equal(signs, torch.where(delta >= 0, 1.0, -1.0))


@pytest.mark.parametrize("k", [1, 31, 33, 63, 100])
def test_padding_bits_are_zero(k: int) -> None:
    delta = torch.ones((3, k))  # every real bit is 1, so any stray set bit is padding
    last = pack_signs(delta)[-1].to(torch.int64) & 0xFFFFFFFF
    assert torch.equal(last >> (k % 32 or 32), torch.zeros(3, dtype=torch.int64))
    assert torch.equal(last, torch.full((3,), (1 << (k % 32 or 32)) - 1, dtype=torch.int64))


def test_unpack_returns_requested_dtype() -> None:
    bits = pack_signs(torch.randn(4, 40))
    assert unpack_signs(bits, 40, torch.float16).dtype == torch.float16


def test_rejects_malformed_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        pack_signs(torch.randn(8))
    with pytest.raises(ValueError, match="int32"):
        unpack_signs(torch.zeros((2, 3), dtype=torch.int64), 40)
    with pytest.raises(ValueError, match="words per column"):
        unpack_signs(torch.zeros((3, 3), dtype=torch.int32), 40)
