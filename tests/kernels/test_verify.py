"""kernels.verify: kernel agreement and compression error of one layer, and test activations."""

from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch

from kernels import KERNEL_TOLERANCE, LayerCheck, pack_signs, random_activations, verify_layer

N, K, M = 48, 96, 32


def _layer(
    seed: int, delta_scale: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A base, a Gaussian fine-tune delta, and its BitDelta compression (α = mean|ΔW| per row)."""
    g = torch.Generator().manual_seed(seed)
    w_base = torch.randn((N, K), generator=g) / K**0.5
    delta = delta_scale * torch.randn((N, K), generator=g) / K**0.5
    return w_base, w_base + delta, pack_signs(delta), delta.abs().mean(dim=1)


def test_exact_delta_has_no_compression_error() -> None:
    g = torch.Generator().manual_seed(1)
    w_base = torch.randn((N, K), generator=g)
    signs = torch.where(torch.rand((N, K), generator=g) < 0.5, 1.0, -1.0)
    alpha = torch.rand(N, generator=g) + 0.1
    w_ft = w_base + alpha[:, None] * signs
    x = random_activations(M, K, generator=g)
    check = verify_layer(x, w_base, w_ft, pack_signs(signs), alpha)
    assert check.backend == "torch"
    assert check.kernel_agrees
    assert check.compression_rel_frobenius < 1e-5
    assert check.compression_worst_row_rel < 1e-5
    assert check.effect_rel_frobenius < 1e-5


def test_gaussian_delta_loses_the_predicted_share() -> None:
    # For Gaussian ΔW and α = mean|ΔW| the residual ΔW − α·sign keeps 1 − 2/π of ΔW's energy,
    # so the layer output misses sqrt(1 − 2/π) ≈ 0.60 of the fine-tune's effect.
    w_base, w_ft, bits, alpha = _layer(2)
    x = random_activations(256, K, generator=torch.Generator().manual_seed(3))
    check = verify_layer(x, w_base, w_ft, bits, alpha)
    assert check.effect_rel_frobenius == pytest.approx(math.sqrt(1 - 2 / math.pi), abs=0.05)
    # The delta is 10% of the weights, so relative to the whole output the error is ~10× less.
    assert 0.02 < check.compression_rel_frobenius < 0.1
    assert check.compression_worst_row_rel >= check.compression_rel_frobenius
    assert check.rows == 256


def test_wrong_delta_is_visible() -> None:
    w_base, w_ft, bits, alpha = _layer(4)
    x = random_activations(M, K, generator=torch.Generator().manual_seed(5))
    dropped = verify_layer(x, w_base, w_ft, bits, torch.zeros_like(alpha))
    assert dropped.effect_rel_frobenius == pytest.approx(1.0, abs=1e-5)
    flipped = verify_layer(x, w_base, w_ft, pack_signs(w_base - w_ft), alpha)
    assert flipped.effect_rel_frobenius > 1.5
    assert dropped.kernel_agrees  # a bad delta is not a kernel bug
    assert flipped.kernel_agrees


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_triton_kernel_agrees_with_reference(
    triton_kernels: ModuleType, device: torch.device, dtype: torch.dtype
) -> None:
    w_base, w_ft, bits, alpha = _layer(6)
    x = random_activations(3, K, dtype, device, torch.Generator().manual_seed(7))
    check = verify_layer(x, w_base.to(device, dtype), w_ft.to(device), bits.to(device),
                         alpha.to(device), backend="triton")
    assert check.backend == "triton"
    assert check.dtype == dtype
    assert check.kernel_tolerance == KERNEL_TOLERANCE[dtype]
    assert check.kernel_agrees, check


def test_kernel_agreement_judges_against_the_tolerance() -> None:
    check = LayerCheck(
        rows=1, dtype=torch.float16, backend="triton", kernel_max_abs_error=0.1,
        kernel_max_rel_error=0.01, kernel_tolerance=KERNEL_TOLERANCE[torch.float16],
        compression_rel_frobenius=0.0, compression_worst_row_rel=0.0, effect_rel_frobenius=0.0,
    )
    assert not check.kernel_agrees


def test_rejects_mismatched_fine_tune() -> None:
    w_base, w_ft, bits, alpha = _layer(8)
    with pytest.raises(ValueError, match="same layer"):
        verify_layer(torch.randn(2, K), w_base, w_ft[:, :-1], bits, alpha)


def test_random_activations_are_rms_normalised_with_outlier_channels() -> None:
    x = random_activations(64, 1000, generator=torch.Generator().manual_seed(9))
    assert x.shape == (64, 1000)
    assert x.dtype == torch.float32
    rms = x.pow(2).mean(dim=1).sqrt()
    torch.testing.assert_close(rms, torch.ones(64), rtol=1e-5, atol=1e-5)
    channel_rms = x.pow(2).mean(dim=0).sqrt()
    loud = channel_rms > 4 * channel_rms.median()
    assert int(loud.sum()) == 10  # 1% of 1000 channels, the same ones in every row


def test_random_activations_follow_the_generator() -> None:
    a = random_activations(4, 50, torch.bfloat16, generator=torch.Generator().manual_seed(1))
    b = random_activations(4, 50, torch.bfloat16, generator=torch.Generator().manual_seed(1))
    c = random_activations(4, 50, torch.bfloat16, generator=torch.Generator().manual_seed(2))
    assert a.dtype == torch.bfloat16
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="outlier_fraction"):
        random_activations(1, 8, outlier_fraction=1.5)
