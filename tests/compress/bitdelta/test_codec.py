"""BitDelta on tensors: α is the least-squares scale, the analytic errors are exact, and the
encoder's worker pool and slabs do not change the result."""

from __future__ import annotations

import math

import pytest
import torch

import compress.bitdelta.cpu_encoder as cpu_encoder
from compress.bitdelta import ScaleMode, compress_delta, decompress_delta
from compress.bitdelta.codec import compress_pair, encoder_pool
from compress.errors import InvalidParameter, NonFiniteTensor
from kernels import pack_signs

# Odd sizes on purpose: K not a multiple of 32, N not a multiple of any slab size.
SHAPES = [(2, 3), (7, 33), (40, 120), (120, 48), (3, 4097)]


def _delta(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Rows of very different magnitude, so one α per row and one per matrix differ.
    row_scale = torch.logspace(-2, 0, shape[0]).unsqueeze(1)
    d = torch.randn(shape, generator=g) * row_scale
    d.view(-1)[:: 5] = 0.0  # exact zeros take the + sign
    return d


def _error(delta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """‖ΔW − α·sign(ΔW)‖² per row (α per row) in float64, the direct way."""
    d = delta.double()
    signs = torch.where(d >= 0, 1.0, -1.0).double()
    a = alpha.double()
    return ((d - (a.view(-1, 1) if a.dim() else a) * signs) ** 2).sum(dim=1)


@pytest.mark.parametrize("shape", SHAPES)
def test_row_alpha_is_the_least_squares_optimum_of_each_row(shape: tuple[int, int]) -> None:
    delta = _delta(shape)
    encoded = compress_delta(delta, ScaleMode.ROW)
    alpha = encoded.scale
    assert alpha.shape == (shape[0],)
    assert alpha.dtype == torch.float32
    torch.testing.assert_close(alpha.double(), delta.double().abs().mean(dim=1),
                               rtol=1e-6, atol=0.0)
    best = _error(delta, alpha)
    for factor in (0.99, 1.01):
        moved = _error(delta, alpha * factor)
        nonzero = alpha > 0
        assert bool((moved[nonzero] > best[nonzero]).all()), factor


@pytest.mark.parametrize("shape", SHAPES)
def test_tensor_alpha_is_the_least_squares_optimum_of_the_matrix(shape: tuple[int, int]
                                                                 ) -> None:
    delta = _delta(shape, seed=1)
    encoded = compress_delta(delta, "tensor")
    alpha = encoded.scale
    assert alpha.shape == ()
    assert alpha.dtype == torch.float32
    assert math.isclose(float(alpha), float(delta.double().abs().mean()), rel_tol=1e-6)
    best = float(_error(delta, alpha).sum())
    assert float(_error(delta, alpha * 0.99).sum()) > best
    assert float(_error(delta, alpha * 1.01).sum()) > best
    # One α per row can only do better: the matrix's α is one of its choices.
    assert compress_delta(delta, "row").error_sq < encoded.error_sq


@pytest.mark.parametrize("mode", list(ScaleMode))
@pytest.mark.parametrize("shape", SHAPES)
def test_analytic_error_matches_the_direct_computation(shape: tuple[int, int],
                                                       mode: ScaleMode) -> None:
    delta = _delta(shape, seed=2)
    encoded = compress_delta(delta, mode)
    decoded = decompress_delta(encoded.bits, encoded.scale, shape[1]).double()
    direct_error = float(((delta.double() - decoded) ** 2).sum())
    assert math.isclose(encoded.error_sq, direct_error, rel_tol=1e-5, abs_tol=1e-12)
    assert math.isclose(encoded.delta_sq, float((delta.double() ** 2).sum()), rel_tol=1e-6)
    assert math.isclose(encoded.delta_rel_error,
                        math.sqrt(direct_error / float((delta.double() ** 2).sum())),
                        rel_tol=1e-5)


def test_bits_are_the_shared_sign_layout() -> None:
    delta = _delta((40, 120), seed=3)
    encoded = compress_delta(delta)
    assert torch.equal(encoded.bits, pack_signs(delta))
    decoded = decompress_delta(encoded.bits, encoded.scale, 120)
    expected = torch.where(delta >= 0, 1.0, -1.0) * encoded.scale.view(-1, 1)
    assert torch.equal(decoded, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_pair_computes_delta_in_float32_and_the_finetune_norm(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(4)
    base = torch.randn(37, 77, generator=g).to(dtype)
    finetune = (base.float() + 0.01 * torch.randn(37, 77, generator=g)).to(dtype)
    delta = finetune.float() - base.float()
    encoded = compress_pair(base, finetune, ScaleMode.ROW, "w")
    reference = compress_delta(delta, ScaleMode.ROW)
    assert torch.equal(encoded.bits, reference.bits)
    torch.testing.assert_close(encoded.scale, reference.scale, rtol=1e-6, atol=0.0)
    assert math.isclose(encoded.finetune_sq, float((finetune.double() ** 2).sum()), rel_tol=1e-6)
    reconstructed = base.double() + decompress_delta(encoded.bits, encoded.scale, 77).double()
    direct = float(torch.linalg.vector_norm(finetune.double() - reconstructed)
                   / torch.linalg.vector_norm(finetune.double()))
    assert math.isclose(encoded.weight_rel_error, direct, rel_tol=1e-5)


def test_zero_delta_is_exact() -> None:
    encoded = compress_delta(torch.zeros(5, 40))
    assert encoded.error_sq == 0.0
    assert encoded.delta_rel_error == 0.0
    assert torch.equal(decompress_delta(encoded.bits, encoded.scale, 40), torch.zeros(5, 40))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("side", ["base", "fine-tune"])
def test_non_finite_input_is_named(bad: float, side: str) -> None:
    base, finetune = torch.zeros(300, 40), torch.ones(300, 40)  # several slabs: bad in the last
    (base if side == "base" else finetune)[299, 7] = bad
    with pytest.raises(NonFiniteTensor) as caught:
        compress_pair(base.half(), finetune.half(), ScaleMode.ROW, "layer.w",
                      ("base-dir", "fine-tune"))
    assert caught.value.tensor_name == "layer.w"
    assert (side if side == "fine-tune" else "base-dir") in caught.value.detail


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidParameter, match="scale mode 'column'"):
        compress_delta(torch.ones(2, 2), "column")
    with pytest.raises(InvalidParameter, match="2-D float"):
        compress_delta(torch.ones(2, 2, 2))
    with pytest.raises(InvalidParameter, match="2-D float"):
        compress_delta(torch.ones(2, 2, dtype=torch.int32))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", list(ScaleMode))
def test_cuda_encoding_matches_the_cpu(mode: ScaleMode) -> None:
    g = torch.Generator().manual_seed(6)
    base = torch.randn(300, 200, generator=g).half()
    finetune = (base.float() + 0.01 * torch.randn(300, 200, generator=g)).half()
    on_cpu = compress_pair(base, finetune, mode, "w")
    on_gpu = compress_pair(base.cuda(), finetune.cuda(), mode, "w")
    assert on_gpu.bits.device.type == "cpu"
    assert torch.equal(on_gpu.bits, on_cpu.bits)
    torch.testing.assert_close(on_gpu.scale, on_cpu.scale, rtol=1e-5, atol=0.0)
    assert on_gpu.error_sq == pytest.approx(on_cpu.error_sq, rel=1e-4)


@pytest.mark.parametrize("mode", list(ScaleMode))
def test_workers_and_chunks_do_not_change_the_result(mode: ScaleMode,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(5)
    base = torch.randn(103, 70, generator=g).half()
    finetune = (base.float() + 0.05 * torch.randn(103, 70, generator=g)).half()
    whole = compress_pair(base, finetune, mode, "w")
    monkeypatch.setattr(cpu_encoder, "CHUNK_ELEMENTS", 7 * 70)  # 7 rows per chunk: 15 chunks
    with encoder_pool(3) as pool:
        split = compress_pair(base, finetune, mode, "w", pool=pool)
    assert torch.equal(split.bits, whole.bits)
    assert torch.equal(split.scale, whole.scale)  # row sums are per row, whatever the chunk
    for field in ("delta_sq", "error_sq", "finetune_sq"):
        # rows' sums added in float64 in another grouping: equal to float64 rounding
        assert getattr(split, field) == pytest.approx(getattr(whole, field), rel=1e-12)


def test_a_nan_in_a_later_chunk_of_another_worker_is_found(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(cpu_encoder, "CHUNK_ELEMENTS", 4 * 40)
    base, finetune = torch.zeros(64, 40), torch.ones(64, 40)
    finetune[61, 3] = float("inf")
    with encoder_pool(2) as pool, pytest.raises(NonFiniteTensor, match="'w'"):
        compress_pair(base, finetune, ScaleMode.ROW, "w", pool=pool)
