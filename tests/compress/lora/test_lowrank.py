"""Randomized truncated SVD and rank selection (compress/lora/lowrank.py) on synthetic deltas."""

from __future__ import annotations

import math

import pytest
import torch

from compress.errors import InvalidParameter
from compress.lora import factorize, randomized_svd
from compress.lora.lowrank import oversample_for


def known_rank(m: int, n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g) @ torch.randn(k, n, generator=g)


def decaying(m: int, n: int, alpha: float, noise: float, seed: int = 0) -> torch.Tensor:
    """U·diag(i^-alpha)·Vᵀ plus a Gaussian floor holding `noise` of the norm: a slowly
    decaying spectrum like a fine-tune's, and the hardest case for a range finder."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g))
    M = (U * torch.arange(1, k + 1, dtype=torch.float32) ** -alpha) @ V.T
    G = torch.randn(m, n, generator=g)
    return M + G * (noise * M.norm() / G.norm())


def optimal_errors(M: torch.Tensor) -> torch.Tensor:
    """err[r] = relative error of the best rank-r approximation (Eckart-Young), r = 0.."""
    s2 = torch.linalg.svdvals(M.double()) ** 2
    tail = s2.sum() - torch.cat([torch.zeros(1, dtype=s2.dtype), torch.cumsum(s2, 0)])
    return (tail.clamp_min(0) / s2.sum()).sqrt()


def direct_error(M: torch.Tensor, B: torch.Tensor, A: torch.Tensor) -> float:
    return float((M - B.float() @ A.float()).norm() / M.norm())


def test_known_rank_is_recovered_with_near_zero_error() -> None:
    M = known_rank(300, 200, 7)
    fixed = factorize(M, rank=7)
    assert fixed.rank == 7
    assert fixed.error < 1e-5
    assert direct_error(M, fixed.B, fixed.A) < 1e-5
    searched = factorize(M, target_error=1e-3)
    assert searched.rank == 7  # rank 6 leaves a whole direction out
    assert searched.target_met is True


@pytest.mark.parametrize(("alpha", "noise"), [(0.5, 0.0), (1.0, 0.3)])
@pytest.mark.parametrize("rank", [8, 32])
def test_randomized_error_within_one_percent_of_exact(alpha: float, noise: float,
                                                      rank: int) -> None:
    M = decaying(640, 480, alpha, noise)
    assert rank + oversample_for(rank) < 480 / 2  # the sketch path, not the exact fallback
    result = factorize(M, rank=rank)
    optimal = float(optimal_errors(M)[rank])
    assert optimal <= result.error <= 1.01 * optimal
    assert result.error == pytest.approx(direct_error(M, result.B, result.A), rel=1e-4)


def test_randomized_svd_returns_orthonormal_sketch_triplets() -> None:
    M = decaying(400, 300, 1.0, 0.0)
    U, S, Vh = randomized_svd(M, 10, generator=torch.Generator().manual_seed(0))
    width = 10 + oversample_for(10)
    assert U.shape == (400, width)
    assert S.shape == (width,)
    assert Vh.shape == (width, 300)
    torch.testing.assert_close(U.T @ U, torch.eye(width), atol=1e-5, rtol=0)
    torch.testing.assert_close(Vh @ Vh.T, torch.eye(width), atol=1e-5, rtol=0)
    exact = torch.linalg.svdvals(M)
    torch.testing.assert_close(S[:10], exact[:10], rtol=2e-3, atol=0)  # the requested rank
    assert bool((exact[:width] * (1 + 1e-5) >= S).all())  # a projection never overshoots


def test_factors_split_the_singular_values_evenly() -> None:
    M = decaying(200, 150, 1.0, 0.1)
    result = factorize(M, rank=6)
    # B = U·√S and A = √S·Vᵀ: column i of B and row i of A both have norm √σ_i.
    torch.testing.assert_close(result.B.norm(dim=0), result.A.norm(dim=1), rtol=1e-4, atol=0)
    torch.testing.assert_close(result.B.norm(dim=0) ** 2, result.singular_values[:6],
                               rtol=1e-4, atol=0)


@pytest.mark.parametrize("target", [0.6, 0.3, 0.1])
def test_target_error_is_met_with_a_near_minimal_rank(target: float) -> None:
    M = decaying(500, 360, 1.0, 0.05)
    result = factorize(M, target_error=target, max_rank=360)
    assert result.target_met is True
    assert result.error <= target
    assert result.error == pytest.approx(direct_error(M, result.B, result.A), rel=1e-4)
    errors = optimal_errors(M)
    minimal = int((errors <= target).nonzero()[0, 0])
    assert minimal <= result.rank <= math.ceil(1.02 * minimal) + 1


def test_rank_cap_is_reported_not_hidden() -> None:
    M = decaying(300, 200, 0.5, 0.0)
    result = factorize(M, target_error=0.05, max_rank=12)
    assert result.rank == 12
    assert result.target_met is False
    assert result.error > 0.05
    assert result.error == pytest.approx(float(optimal_errors(M)[12]), rel=0.01)


def test_zero_delta_needs_rank_zero() -> None:
    result = factorize(torch.zeros(40, 30), target_error=0.1)
    assert result.rank == 0
    assert result.error == 0.0
    assert result.target_met is True
    assert result.B.shape == (40, 0)
    assert result.A.shape == (0, 30)


def test_small_matrix_falls_back_to_the_exact_svd() -> None:
    M = decaying(40, 30, 0.5, 0.0)
    result = factorize(M, rank=20)  # 20 + oversampling > 30 / 2
    assert result.error == pytest.approx(float(optimal_errors(M)[20]), rel=1e-4)


def test_half_precision_factors_are_measured_as_stored() -> None:
    M = known_rank(120, 96, 4)
    result = factorize(M, rank=4, dtype=torch.bfloat16)
    assert result.A.dtype == result.B.dtype == torch.bfloat16
    measured = direct_error(M, result.B, result.A)
    assert measured > 1e-3  # bf16 rounding, far above the float32 error of ~1e-7
    assert result.error == pytest.approx(measured, rel=1e-3)


def test_same_seed_same_factors() -> None:
    M = decaying(200, 160, 1.0, 0.2)
    first, second = factorize(M, rank=5, seed=3), factorize(M, rank=5, seed=3)
    assert torch.equal(first.A, second.A)
    assert torch.equal(first.B, second.B)


def test_input_is_not_modified() -> None:
    M = decaying(120, 100, 1.0, 0.1)
    before = M.clone()
    factorize(M, target_error=0.2)
    assert torch.equal(M, before)


@pytest.mark.parametrize("rank", [0, 31])
def test_rank_outside_the_matrix_is_refused(rank: int) -> None:
    with pytest.raises(InvalidParameter, match=r"outside 1\.\.30"):
        factorize(torch.ones(40, 30), rank=rank)


def test_rank_and_target_error_are_exclusive() -> None:
    with pytest.raises(InvalidParameter, match="exactly one"):
        factorize(torch.ones(4, 4), rank=2, target_error=0.1)
    with pytest.raises(InvalidParameter, match="exactly one"):
        factorize(torch.ones(4, 4))
