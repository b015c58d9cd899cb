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

from dataclasses import dataclass

import pytest
import torch

import compress.bitdelta.cpu_encoder as cpu_encoder
from compress.bitdelta import ScaleMode, compress_delta
from compress.bitdelta.codec import CompressedDelta, compress_pair, encoder_pool
from compress.errors import NonFiniteTensor
from kernels import pack_signs

# N = 1, tiny, K not a multiple of 8 or 32, a few thousand columns, several slabs.
SHAPES = [(1, 1), (1, 7), (2, 3), (5, 13), (3, 33), (1, 4097), (17, 3001), (40, 120),
          (300, 4096)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@dataclass(frozen=True)
class Reference:
    bits: torch.Tensor
    scale: torch.Tensor
    delta_sq: float
    finetune_sq: float
    error_sq: float


def reference(delta32: torch.Tensor, finetune32: torch.Tensor | None, mode: ScaleMode
              ) -> Reference:
    """The slow, plain encoding of a float32 ΔW (and the fine-tune, for its norm)."""
    n, k = delta32.shape
    bits = pack_signs(delta32)
    l1 = torch.sum(delta32.abs(), dim=1).double()  # float32 row sums, then float64
    if mode is ScaleMode.ROW:
        scale = (l1 / k).float()
    else:
        scale = torch.tensor(float(l1.sum()) / (n * k), dtype=torch.float32)
    delta_sq = float(delta32.double().square().sum())
    finetune_sq = float(finetune32.double().square().sum()) if finetune32 is not None else 0.0
    a = scale.double()
    if mode is ScaleMode.ROW:
        error_sq = delta_sq - 2.0 * float((a * l1).sum()) + k * float((a * a).sum())
    else:
        value = float(scale)
        error_sq = delta_sq - 2.0 * value * float(l1.sum()) + n * k * value * value
    return Reference(bits, scale, delta_sq, finetune_sq, max(error_sq, 0.0))


def _pair(shape: tuple[int, int], dtype: torch.dtype, seed: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    row_scale = torch.logspace(-2, 0, shape[0]).unsqueeze(1)  # rows of unlike magnitude
    base = (torch.randn(shape, generator=g) * row_scale).to(dtype)
    finetune = (base.float() + 0.05 * row_scale * torch.randn(shape, generator=g)).to(dtype)
    finetune.view(-1)[::7] = base.view(-1)[::7]  # exact zeros of ΔW: bit 1 (ΔW ≥ 0)
    return base, finetune


def _assert_same(got: CompressedDelta, want: Reference, *, finetune: bool) -> None:
    assert got.bits.dtype == torch.int32
    assert torch.equal(got.bits, want.bits)
    assert got.scale.dtype == torch.float32
    assert torch.equal(got.scale, want.scale)
    assert got.delta_sq == pytest.approx(want.delta_sq, rel=1e-5)
    # error² = ‖ΔW‖² − …: what float32 rounding of ‖ΔW‖² moves it by, and no more
    assert got.error_sq == pytest.approx(want.error_sq, rel=1e-5, abs=1e-5 * want.delta_sq)
    if finetune:
        assert got.finetune_sq == pytest.approx(want.finetune_sq, rel=1e-5)


@pytest.mark.parametrize("mode", list(ScaleMode))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_pair_is_bit_identical_to_the_plain_computation(shape: tuple[int, int],
                                                        dtype: torch.dtype,
                                                        mode: ScaleMode) -> None:
    base, finetune = _pair(shape, dtype, seed=shape[0] * 7919 + shape[1])
    want = reference(finetune.float() - base.float(), finetune.float(), mode)
    _assert_same(compress_pair(base, finetune, mode, "w"), want, finetune=True)


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
    base, finetune = _pair((37, 1001), torch.float32, seed=11)
    delta = (finetune - base).to(dtype)
    got = compress_delta(delta, mode)
    _assert_same(got, reference(delta.float(), None, mode), finetune=False)


def test_mixed_input_dtypes_subtract_in_float32() -> None:
    base, finetune = _pair((9, 77), torch.float32, seed=12)
    base16, finetune_bf = base.half(), finetune.bfloat16()
    want = reference(finetune_bf.float() - base16.float(), finetune_bf.float(), ScaleMode.ROW)
    _assert_same(compress_pair(base16, finetune_bf, ScaleMode.ROW, "w"), want, finetune=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_signs_of_zero_follow_the_layout(dtype: torch.dtype) -> None:
    """ΔW = 0 (equal inputs) and ΔW = −0.0 (−0.0 − +0.0) both store bit 1, as ΔW ≥ 0."""
    base = torch.tensor([[0.0, -0.0, 1.0, 2.0, 0.5, -1.0, 0.0, 3.0, 1.0]]).to(dtype)
    finetune = torch.tensor([[-0.0, 0.0, 1.0, 1.0, 0.5, -2.0, 1.0, 3.0, 1.5]]).to(dtype)
    encoded = compress_pair(base, finetune, ScaleMode.ROW, "w")
    # columns 0-8: -0-0=-0, 0-(-0)=0, 0, -1, 0, -1, +1, 0, +0.5 -> bits 1,1,1,0,1,0,1,1,1
    assert int(encoded.bits[0, 0]) == 0b111010111
    want = reference(finetune.float() - base.float(), finetune.float(), ScaleMode.ROW)
    _assert_same(encoded, want, finetune=True)


@pytest.mark.parametrize("mode", list(ScaleMode))
@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_workers_and_chunks_give_the_same_bits_and_sums(
        mode: ScaleMode, workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small chunks, so every worker gets several; the sums are equal to the last bit
    whatever the worker count, since chunks' sums are added in row order."""
    monkeypatch.setattr(cpu_encoder, "CHUNK_ELEMENTS", 2 * 333)  # chunks of 2 rows, 1 left over
    base, finetune = _pair((101, 333), torch.float16, seed=13)
    want = reference(finetune.float() - base.float(), finetune.float(), mode)
    alone = compress_pair(base, finetune, mode, "w")
    with encoder_pool(workers) as pool:
        got = compress_pair(base, finetune, mode, "w", pool=pool)
    _assert_same(got, want, finetune=True)
    assert (got.delta_sq, got.error_sq, got.finetune_sq) == (
        alone.delta_sq, alone.error_sq, alone.finetune_sq)


def test_the_default_chunk_size_on_a_7b_row_width() -> None:
    """4096 columns: 32-row chunks, with one worker and with two."""
    base, finetune = _pair((600, 4096), torch.float16, seed=14)
    want = reference(finetune.float() - base.float(), finetune.float(), ScaleMode.ROW)
    _assert_same(compress_pair(base, finetune, ScaleMode.ROW, "w"), want, finetune=True)
    with encoder_pool(2) as pool:
        got = compress_pair(base, finetune, ScaleMode.ROW, "w", pool=pool)
    _assert_same(got, want, finetune=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("side", ["base", "fine-tune"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_inputs_are_refused_by_name(bad: float, side: str, dtype: torch.dtype,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_encoder, "CHUNK_ELEMENTS", 3 * 40)
    base, finetune = _pair((64, 40), dtype, seed=15)
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
