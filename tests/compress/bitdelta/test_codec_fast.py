"""The CPU encoder (the compiled loop over chunks of rows, chunks shared among workers)
gives bit for bit what the plain computation gives: the same sign bits and the same
float32 α; its error sums (float32 per row, float64 across rows) equal exact sums to
float32 rounding.

The reference below is the straightforward computation the format describes, written the
slow way on purpose: ΔW in float32 for the whole matrix, `pack_signs` for the bits, and
α from torch's float32 row sums of |ΔW| (what the encoder has always stored). The norms
are float64 sums of the float32 values' squares (exact squares, summed exactly enough
to stand for the true value).
"""

from __future__ import annotations

import pytest
import torch

import compress.bitdelta.cpu_encoder as cpu_encoder
from compress.bitdelta import ScaleMode, compress_delta
from compress.bitdelta.codec import compress_pair, encoder_pool
from compress.errors import NonFiniteTensor
from kernels import pack_signs
from tests.compress.bitdelta.helpers import assert_same, pair, reference

# N = 1, tiny, K not a multiple of 8 or 32, a few thousand columns, several slabs.
SHAPES = [(1, 1), (1, 7), (2, 3), (5, 13), (3, 33), (1, 4097), (17, 3001), (40, 120),
          (300, 4096)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@pytest.mark.parametrize("mode", list(ScaleMode))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_pair_is_bit_identical_to_the_plain_computation(shape: tuple[int, int],
                                                        dtype: torch.dtype,
                                                        mode: ScaleMode) -> None:
    base, finetune = pair(shape, dtype, seed=shape[0] * 7919 + shape[1])
    want = reference(finetune.float() - base.float(), finetune.float(), mode)
    assert_same(compress_pair(base, finetune, mode, "w"), want, finetune=True)


@pytest.mark.parametrize("mode", list(ScaleMode))
@pytest.mark.parametrize("workers", [None, 2])
@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0, 0)])
def test_empty_matrices_encode_to_empty_bits(shape: tuple[int, int], workers: int | None,
                                             mode: ScaleMode) -> None:
    """No rows or no columns: the layout's empty bits, α = 0 (never 0/0), zero error."""
    base, finetune = torch.zeros(shape, dtype=torch.float16), torch.ones(shape, dtype=torch.float16)
    if workers is None:
        got = compress_pair(base, finetune, mode, "w")
    else:
        with encoder_pool(workers) as pool:
            got = compress_pair(base, finetune, mode, "w", pool=pool)
    assert torch.equal(got.bits, pack_signs(finetune.float()))
    assert got.scale.shape == ((shape[0],) if mode is ScaleMode.ROW else ())
    assert not got.scale.any()
    assert (got.delta_sq, got.error_sq, got.finetune_sq) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("mode", list(ScaleMode))
@pytest.mark.parametrize("dtype", DTYPES)
def test_delta_is_bit_identical_to_the_plain_computation(dtype: torch.dtype,
                                                         mode: ScaleMode) -> None:
    base, finetune = pair((37, 1001), torch.float32, seed=11)
    delta = (finetune - base).to(dtype)
    got = compress_delta(delta, mode)
    assert_same(got, reference(delta.float(), None, mode), finetune=False)


def test_mixed_input_dtypes_subtract_in_float32() -> None:
    base, finetune = pair((9, 77), torch.float32, seed=12)
    base16, finetune_bf = base.half(), finetune.bfloat16()
    want = reference(finetune_bf.float() - base16.float(), finetune_bf.float(), ScaleMode.ROW)
    assert_same(compress_pair(base16, finetune_bf, ScaleMode.ROW, "w"), want, finetune=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_signs_of_zero_follow_the_layout(dtype: torch.dtype) -> None:
    """ΔW = 0 (equal inputs) and ΔW = −0.0 (−0.0 − +0.0) both store bit 1, as ΔW ≥ 0."""
    base = torch.tensor([[0.0, -0.0, 1.0, 2.0, 0.5, -1.0, 0.0, 3.0, 1.0]]).to(dtype)
    finetune = torch.tensor([[-0.0, 0.0, 1.0, 1.0, 0.5, -2.0, 1.0, 3.0, 1.5]]).to(dtype)
    encoded = compress_pair(base, finetune, ScaleMode.ROW, "w")
    # columns 0-8: -0-0=-0, 0-(-0)=0, 0, -1, 0, -1, +1, 0, +0.5 -> bits 1,1,1,0,1,0,1,1,1
    assert int(encoded.bits[0, 0]) == 0b111010111
    want = reference(finetune.float() - base.float(), finetune.float(), ScaleMode.ROW)
    assert_same(encoded, want, finetune=True)


@pytest.mark.parametrize("mode", list(ScaleMode))
@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_workers_and_chunks_give_the_same_bits_and_sums(
        mode: ScaleMode, workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small chunks, so every worker gets several; the sums are equal to the last bit
    whatever the worker count, since chunks' sums are added in row order."""
    monkeypatch.setattr(cpu_encoder, "CHUNK_ELEMENTS", 2 * 333)  # chunks of 2 rows, 1 left over
    base, finetune = pair((101, 333), torch.float16, seed=13)
    want = reference(finetune.float() - base.float(), finetune.float(), mode)
    alone = compress_pair(base, finetune, mode, "w")
    with encoder_pool(workers) as pool:
        got = compress_pair(base, finetune, mode, "w", pool=pool)
    assert_same(got, want, finetune=True)
    assert (got.delta_sq, got.error_sq, got.finetune_sq) == (
        alone.delta_sq, alone.error_sq, alone.finetune_sq)


def test_the_default_chunk_size_on_a_7b_row_width() -> None:
    """4096 columns: 32-row chunks, with one worker and with two."""
    base, finetune = pair((600, 4096), torch.float16, seed=14)
    want = reference(finetune.float() - base.float(), finetune.float(), ScaleMode.ROW)
    assert_same(compress_pair(base, finetune, ScaleMode.ROW, "w"), want, finetune=True)
    with encoder_pool(2) as pool:
        got = compress_pair(base, finetune, ScaleMode.ROW, "w", pool=pool)
    assert_same(got, want, finetune=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("side", ["base", "fine-tune"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_inputs_are_refused_by_name(bad: float, side: str, dtype: torch.dtype,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_encoder, "CHUNK_ELEMENTS", 3 * 40)
    base, finetune = pair((64, 40), dtype, seed=15)
    (base if side == "base" else finetune)[61, 3] = bad  # a later chunk of the last worker
    with encoder_pool(2) as pool, pytest.raises(NonFiniteTensor) as caught:
        compress_pair(base, finetune, ScaleMode.ROW, "layers.3.w", ("base-dir", "ft-dir"),
                      pool=pool)
    assert caught.value.tensor_name == "layers.3.w"
    assert ("base-dir" if side == "base" else "ft-dir") in caught.value.detail


def test_non_finite_delta_is_refused_by_name() -> None:
    delta = torch.zeros(3, 50, dtype=torch.bfloat16)
    delta[2, 49] = float("nan")
    with pytest.raises(NonFiniteTensor) as caught:
        compress_delta(delta, name="d.w")
    assert caught.value.tensor_name == "d.w"
