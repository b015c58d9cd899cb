"""bitdelta_linear: the Triton kernels against the torch reference, and the reference itself."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch

from kernels import (
    KernelConfig,
    bitdelta_linear,
    bitdelta_linear_reference,
    pack_signs,
    resolve_backend,
    select_config,
)
from kernels.bitdelta_linear import BACKEND_ENV
from kernels.configs import DECODE_MAX_ROWS
from tests.kernels.helpers import DTYPES, assert_matches_reference, make_layer, make_x

# K and N are multiples of neither 32 nor any block size; M covers decode (GEMV) and prefill.
SHAPES = [(37, 45), (130, 200)]  # (N, K)
ROWS = [1, 3, 17, 130]

# Small tiles so that these shapes span several programs along M and N and several K steps.
SMALL_TILES = [
    KernelConfig("decode", block_m=4, block_n=8, block_k=64),
    KernelConfig("prefill", block_m=16, block_n=16, block_k=32),
]


def _generator(*key: object) -> torch.Generator:
    return torch.Generator().manual_seed(hash(key) % 2**31)


# α per row on every shape; α per matrix (a stride-0 view of one value) on the small one.
CASES = [(n, k, True) for n, k in SHAPES] + [(*SHAPES[0], False)]


@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize(("n", "k", "per_row"), CASES,
                         ids=[f"{n}x{k}-alpha-per-{'row' if r else 'matrix'}" for n, k, r in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_matches_reference(
    triton_kernels: ModuleType, device: torch.device,
    dtype: torch.dtype, n: int, k: int, per_row: bool, m: int,
) -> None:
    g = _generator("single", str(dtype), n, k, m, per_row)
    w, bits, alpha = make_layer(n, k, dtype, device, g, per_row=per_row)
    x = make_x(m, k, dtype, device, g)
    y = bitdelta_linear(x, w, bits, alpha, backend="triton")
    y_ref = bitdelta_linear_reference(x, w, bits, alpha, out_dtype=torch.float32)
    assert_matches_reference(y, y_ref, dtype)


@pytest.mark.parametrize("config", SMALL_TILES, ids=lambda c: c.kind)
@pytest.mark.parametrize("m", [1, 6])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_each_kernel_across_tiles(
    triton_kernels: ModuleType, device: torch.device,
    dtype: torch.dtype, m: int, config: KernelConfig,
) -> None:
    n, k = 45, 77
    g = _generator("tiles", str(dtype), m, config.kind)
    w, bits, alpha = make_layer(n, k, dtype, device, g)
    x = make_x(m, k, dtype, device, g)
    y = bitdelta_linear(x, w, bits, alpha, backend="triton", config=config)
    y_ref = bitdelta_linear_reference(x, w, bits, alpha, out_dtype=torch.float32)
    assert_matches_reference(y, y_ref, dtype)


@pytest.mark.parametrize("config", SMALL_TILES, ids=lambda c: c.kind)
def test_zero_base_leaves_exactly_the_signed_delta(
    triton_kernels: ModuleType, device: torch.device, config: KernelConfig
) -> None:
    # With W_base = 0 the output is α ⊙ (x·signᵀ) alone, computed here from the signs that
    # were packed, not from unpack_signs: a wrong bit order or sign convention cannot cancel.
    n, k, m = 33, 70, 5
    g = _generator("zero-base", config.kind)
    signs = torch.where(torch.rand((n, k), generator=g) < 0.5, 1.0, -1.0)
    alpha = torch.rand(n, generator=g) + 0.5
    x = torch.randn((m, k), generator=g)
    expected = (x.double() @ signs.double().t()) * alpha.double()
    y = bitdelta_linear(
        x.to(device), torch.zeros((n, k), device=device), pack_signs(signs).to(device),
        alpha.to(device), backend="triton", config=config,
    )
    torch.testing.assert_close(y.cpu().double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_row", [True, False], ids=["alpha-per-row", "alpha-per-matrix"])
def test_reference_equals_dense_matmul_with_materialised_weights(per_row: bool) -> None:
    n, k, m = 29, 83, 6
    g = _generator("materialised", per_row)
    delta = torch.randn((n, k), generator=g, dtype=torch.float64)
    w = torch.randn((n, k), generator=g, dtype=torch.float64)
    alpha = torch.rand(n if per_row else (), generator=g, dtype=torch.float64) + 0.1
    w_ft = w + alpha.reshape(-1, 1) * torch.where(delta >= 0, 1.0, -1.0)
    x = torch.randn((m, k), generator=g, dtype=torch.float64)
    y = bitdelta_linear_reference(
        x.float(), w.float(), pack_signs(delta), alpha.float(), out_dtype=torch.float32
    )
    torch.testing.assert_close(y.double(), x @ w_ft.t(), rtol=1e-5, atol=1e-5)


def test_leading_dims_and_strided_operands(
    triton_kernels: ModuleType, device: torch.device
) -> None:
    n, k = 40, 50
    g = _generator("strided")
    w_wide, bits, alpha = make_layer(n, k + 7, torch.float32, device, g)
    w = w_wide[:, :k]  # rows of W_base not contiguous with each other
    bits = pack_signs(torch.randn((n, k), generator=g)).to(device)
    x = make_x(6, 2 * k, torch.float32, device, g)[:, ::2].reshape(2, 3, k)  # stride 2 along K
    assert x.stride(-1) == 2
    assert not w.is_contiguous()
    for config in SMALL_TILES:
        y = bitdelta_linear(x, w, bits, alpha, backend="triton", config=config)
        assert y.shape == (2, 3, n)
        y_ref = bitdelta_linear_reference(x, w, bits, alpha, out_dtype=torch.float32)
        assert_matches_reference(y, y_ref, torch.float32)


def test_empty_batch(triton_kernels: ModuleType, device: torch.device) -> None:
    w, bits, alpha = make_layer(9, 40, torch.float16, device, _generator("empty"))
    x = torch.empty((0, 40), dtype=torch.float16, device=device)
    assert bitdelta_linear(x, w, bits, alpha, backend="triton").shape == (0, 9)
    assert bitdelta_linear(x, w, bits, alpha, backend="torch").shape == (0, 9)


def test_python_float_scale_is_one_alpha_per_matrix(
    triton_kernels: ModuleType, device: torch.device
) -> None:
    w, bits, _ = make_layer(21, 35, torch.float32, device, _generator("float-scale"))
    x = make_x(2, 35, torch.float32, device, _generator("float-scale-x"))
    y = bitdelta_linear(x, w, bits, 0.25, backend="triton")
    y_ref = bitdelta_linear_reference(x, w, bits, torch.tensor(0.25, device=device))
    assert_matches_reference(y, y_ref, torch.float32)


def test_cpu_auto_dispatch_is_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    w, bits, alpha = make_layer(30, 70, torch.bfloat16, torch.device("cpu"), _generator("cpu"))
    x = make_x(3, 70, torch.bfloat16, torch.device("cpu"), _generator("cpu-x"))
    assert resolve_backend(x.device) == "torch"
    assert torch.equal(bitdelta_linear(x, w, bits, alpha),
                       bitdelta_linear_reference(x, w, bits, alpha))


def test_backend_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert resolve_backend(torch.device("cuda")) == "torch"
    assert resolve_backend(torch.device("cpu"), "triton") == "triton"  # the argument wins
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=BACKEND_ENV):
        resolve_backend(torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_dispatch_runs_triton(
    triton_kernels: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    device = torch.device("cuda")
    assert resolve_backend(device) == "triton"
    w, bits, alpha = make_layer(4096, 4096, torch.float16, device, _generator("cuda"))
    for m in (1, 64):
        x = make_x(m, 4096, torch.float16, device, _generator("cuda-x", m))
        y = bitdelta_linear(x, w, bits, alpha)
        y_ref = bitdelta_linear_reference(x, w, bits, alpha, out_dtype=torch.float32)
        assert_matches_reference(y, y_ref, torch.float16)


def test_config_selection_splits_decode_and_prefill() -> None:
    assert select_config(1, 1).kind == "decode"
    assert select_config(DECODE_MAX_ROWS, DECODE_MAX_ROWS).kind == "decode"
    assert select_config(DECODE_MAX_ROWS + 1, DECODE_MAX_ROWS + 1).kind == "prefill"
    assert select_config(64, 1, segmented=True).kind == "decode"  # 64 tenants, one row each
    # tenants with two rows each: one W_eff per tenant and tile beats per-row sign terms
    assert select_config(64, 2, segmented=True).kind == "prefill"
    assert select_config(256, 256).block_m >= select_config(17, 17).block_m
    with pytest.raises(ValueError, match="power of two"):
        KernelConfig("prefill", block_m=24, block_n=16, block_k=32)
    with pytest.raises(ValueError, match="whole 32-bit sign words"):
        KernelConfig("decode", block_m=1, block_n=8, block_k=16)
    with pytest.raises(ValueError, match="at least 16"):
        KernelConfig("prefill", block_m=8, block_n=16, block_k=32)


def _operands() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    w, bits, alpha = make_layer(10, 40, torch.float32, torch.device("cpu"), _generator("bad"))
    return torch.randn(2, 40), w, bits, alpha


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda x, w, b, a: (x.half(), w, b, a), TypeError, "w_base is torch.float32"),
        (lambda x, w, b, a: (x.double(), w.double(), b, a), TypeError, "float16, bfloat16"),
        (lambda x, w, b, a: (x[:, :39], w, b, a), ValueError, "features"),
        (lambda x, w, b, a: (x, w, b.long(), a), TypeError, "int32"),
        (lambda x, w, b, a: (x, w, b[:1], a), ValueError, r"\[ceil\(K/32\), N\]"),
        (lambda x, w, b, a: (x, w, b.t().contiguous(), a), ValueError, "shape"),
        (lambda x, w, b, a: (x, w, b, a.double()), TypeError, "float32"),
        (lambda x, w, b, a: (x, w, b, a[:5]), ValueError, "scale must be"),
    ],
)
def test_rejects_malformed_operands(
    mutate: Callable[..., tuple[torch.Tensor, ...]], error: type[Exception], match: str
) -> None:
    args = mutate(*_operands())
    with pytest.raises(error, match=match):
        bitdelta_linear(*args, backend="torch")
