"""bitdelta_linear_multi: many fine-tunes of one base, with empty and uneven tenant segments."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from kernels import (
    KernelConfig,
    bitdelta_linear,
    bitdelta_linear_multi,
    bitdelta_linear_multi_reference,
    bitdelta_linear_reference,
)
from tests.kernels.helpers import DTYPES, assert_matches_reference, make_layer, make_x

N, K = 45, 77  # multiples of neither 32 nor any block size

SEGMENTS = {
    # empty tenants first, between and last; one- and two-row tenants (decode)
    "empty-and-short": [0, 0, 1, 1, 3, 3],
    # an empty tenant, a 17-row tenant across 16-row tiles, a 1-row tenant (prefill)
    "uneven": [0, 5, 5, 22, 23, 40],
    # one row per tenant: the multi-tenant decode step
    "one-row-each": [0, 1, 2, 3, 4],
    "only-the-last": [0, 0, 0, 7],
    # 18 one-row tenants and an empty one: a 16-row decode tile with the base on tensor cores
    "eighteen-decode-tenants": [*range(0, 10), 9, *range(10, 19)],
}

SMALL_TILES = [
    KernelConfig("decode", block_m=8, block_n=8, block_k=64),
    KernelConfig("decode", block_m=16, block_n=16, block_k=32),  # base on the tensor cores
    KernelConfig("prefill", block_m=16, block_n=16, block_k=32),
]


def _generator(*key: object) -> torch.Generator:
    return torch.Generator().manual_seed(hash(key) % 2**31)


def _case(
    segments: list[int], dtype: torch.dtype, device: torch.device, per_row: bool, *key: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _generator(*key)
    w, bits, alpha = make_layer(N, K, dtype, device, g, tenants=len(segments) - 1,
                                per_row=per_row)
    return make_x(segments[-1], K, dtype, device, g), w, bits, alpha


@pytest.mark.parametrize("segments", SEGMENTS.values(), ids=SEGMENTS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_matches_reference(
    triton_kernels: ModuleType, device: torch.device, dtype: torch.dtype, segments: list[int]
) -> None:
    x, w, bits, alpha = _case(segments, dtype, device, True, "auto", str(dtype), *segments)
    y = bitdelta_linear_multi(x, w, bits, alpha, segments, backend="triton")
    y_ref = bitdelta_linear_multi_reference(x, w, bits, alpha, segments, out_dtype=torch.float32)
    assert_matches_reference(y, y_ref, dtype)


@pytest.mark.parametrize("segments", SEGMENTS.values(), ids=SEGMENTS.keys())
@pytest.mark.parametrize("config", SMALL_TILES, ids=lambda c: f"{c.kind}-m{c.block_m}")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_each_kernel_with_alpha_per_matrix(
    triton_kernels: ModuleType, device: torch.device,
    dtype: torch.dtype, config: KernelConfig, segments: list[int],
) -> None:
    x, w, bits, alpha = _case(segments, dtype, device, False, config.kind, str(dtype), *segments)
    assert alpha.shape == (len(segments) - 1,)
    y = bitdelta_linear_multi(x, w, bits, alpha, segments, backend="triton", config=config)
    y_ref = bitdelta_linear_multi_reference(x, w, bits, alpha, segments, out_dtype=torch.float32)
    assert_matches_reference(y, y_ref, dtype)


def test_reference_is_each_tenant_against_its_own_delta() -> None:
    segments = SEGMENTS["uneven"]
    x, w, bits, alpha = _case(segments, torch.float32, torch.device("cpu"), True, "own")
    y = bitdelta_linear_multi_reference(x, w, bits, alpha, segments)
    for t in range(len(segments) - 1):
        rows = slice(segments[t], segments[t + 1])
        expected = bitdelta_linear_reference(x[rows], w, bits[t], alpha[t])
        torch.testing.assert_close(y[rows], expected, rtol=0, atol=0)


def test_tenants_do_not_leak_into_each_other(
    triton_kernels: ModuleType, device: torch.device
) -> None:
    # Two tenants, same rows of x, opposite deltas: any row that used the other tenant's bits
    # or α would move by 2·α·(x·sign) instead of staying at its own result.
    segments = [0, 3, 6]
    g = _generator("leak")
    w, bits, alpha = make_layer(N, K, torch.float32, device, g, tenants=1)
    bits = torch.cat([bits, ~bits])  # every sign flipped (padding bits are masked by x = 0)
    alpha = alpha.expand(2, N).contiguous()
    x = make_x(3, K, torch.float32, device, g).repeat(2, 1)
    for config in SMALL_TILES:
        y = bitdelta_linear_multi(x, w, bits, alpha, segments, backend="triton", config=config)
        base = x[:3] @ w.t()
        torch.testing.assert_close(y[:3] - base, -(y[3:] - base), rtol=1e-4, atol=1e-4)
        assert float((y[:3] - y[3:]).abs().max()) > 0.1


def test_one_tenant_is_the_single_delta(triton_kernels: ModuleType, device: torch.device) -> None:
    g = _generator("one")
    w, bits, alpha = make_layer(N, K, torch.float16, device, g)
    x = make_x(9, K, torch.float16, device, g)
    multi = bitdelta_linear_multi(x, w, bits[None], alpha[None], [0, 9], backend="triton")
    single = bitdelta_linear(x, w, bits, alpha, backend="triton")
    y_ref = bitdelta_linear_reference(x, w, bits, alpha, out_dtype=torch.float32)
    assert_matches_reference(multi, y_ref, torch.float16)
    assert_matches_reference(single, y_ref, torch.float16)


def test_seg_starts_as_tensor_or_list() -> None:
    segments = SEGMENTS["empty-and-short"]
    x, w, bits, alpha = _case(segments, torch.float32, torch.device("cpu"), True, "forms")
    from_list = bitdelta_linear_multi(x, w, bits, alpha, segments)
    for form in (torch.tensor(segments), torch.tensor(segments, dtype=torch.int32)):
        assert torch.equal(bitdelta_linear_multi(x, w, bits, alpha, form), from_list)


@pytest.mark.parametrize(
    ("segments", "match"),
    [
        ([0, 1, 2], "T\\+1=4"),
        ([1, 1, 2, 3], "start at 0"),
        ([0, 1, 2, 2], "end at M=3"),
        ([0, 2, 1, 3], "non-decreasing"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), "int32/int64"),
        (torch.tensor([[0, 1, 2, 3]]), "1-D"),
    ],
)
def test_rejects_malformed_segments(segments: list[int] | torch.Tensor, match: str) -> None:
    x, w, bits, alpha = _case([0, 1, 2, 3], torch.float32, torch.device("cpu"), True, "bad")
    with pytest.raises((ValueError, TypeError), match=match):
        bitdelta_linear_multi(x, w, bits, alpha, segments)


def test_rejects_malformed_operands() -> None:
    segments = [0, 1, 2, 3]
    x, w, bits, alpha = _case(segments, torch.float32, torch.device("cpu"), True, "bad-ops")
    with pytest.raises(ValueError, match="grouped by tenant"):
        bitdelta_linear_multi(x[None], w, bits, alpha, segments)
    with pytest.raises(ValueError, match=r"\[T, ceil\(K/32\), N\]"):
        bitdelta_linear_multi(x, w, bits[0], alpha, segments)
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        bitdelta_linear_multi(x, w, bits, alpha[:2], segments)
    with pytest.raises(ValueError, match="T\\+1=4"):
        bitdelta_linear_multi(x, w, bits, alpha[:, 0], [0, 3])
