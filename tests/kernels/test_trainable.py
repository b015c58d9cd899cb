"""bitdelta_linear_trainable: gradients for α and x match autograd through W_base + α⊙S."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from kernels import bitdelta_linear_reference, bitdelta_linear_trainable, pack_signs, unpack_signs

# K = 45 and 37 are not multiples of 32, so the last word of bits is partly padding.
SHAPES = [(5, 45), (7, 37)]  # (N, K)


def _layer(n: int, k: int, per_row: bool, dtype: torch.dtype, seed: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn((n, k), generator=g) / k**0.5).to(dtype)
    bits = pack_signs(torch.randn((n, k), generator=g))
    scale = ((0.5 + torch.rand((n,) if per_row else (), generator=g)) / k**0.5).to(
        torch.float64 if dtype == torch.float64 else torch.float32)
    return w, bits, scale


def _dense(x: torch.Tensor, w: torch.Tensor, bits: torch.Tensor,
           scale: torch.Tensor) -> torch.Tensor:
    """The same linear with W_ft = W_base + α⊙S formed densely: autograd's own gradients."""
    signs = unpack_signs(bits, w.shape[1], w.dtype)
    alpha = scale.view(-1, 1) if scale.dim() == 1 else scale
    return x @ (w + alpha * signs).t()


@pytest.mark.parametrize("per_row", [True, False], ids=["alpha-per-row", "alpha-per-matrix"])
@pytest.mark.parametrize(("n", "k"), SHAPES)
def test_gradcheck_in_float64(n: int, k: int, per_row: bool) -> None:
    w, bits, scale = _layer(n, k, per_row, torch.float64, seed=n * k)
    x = torch.randn((2, 3, k), dtype=torch.float64, requires_grad=True)  # batch dims
    alpha = scale.clone().requires_grad_(True)

    def fn(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return bitdelta_linear_trainable(x, w, bits, alpha, backend="torch")

    assert torch.autograd.gradcheck(fn, (x, alpha), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("per_row", [True, False], ids=["alpha-per-row", "alpha-per-matrix"])
@pytest.mark.parametrize(("n", "k"), SHAPES)
def test_gradients_equal_autograd_through_the_dense_weight(n: int, k: int,
                                                           per_row: bool) -> None:
    w, bits, scale = _layer(n, k, per_row, torch.float64, seed=n + k)
    x = torch.randn((4, 2, k), dtype=torch.float64)
    upstream = torch.randn((4, 2, n), dtype=torch.float64)
    ours = _grads(lambda x, a: bitdelta_linear_trainable(x, w, bits, a, backend="torch"),
                  x, scale, upstream)
    theirs = _grads(lambda x, a: _dense(x, w, bits, a), x, scale, upstream)
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


def test_float32_forward_is_bitdelta_linear_and_gradients_are_float32() -> None:
    w, bits, scale = _layer(9, 70, True, torch.float32, seed=3)
    x = torch.randn((3, 70), requires_grad=True)
    alpha = scale.clone().requires_grad_(True)
    y = bitdelta_linear_trainable(x, w, bits, alpha, backend="torch")
    assert torch.equal(y.detach(), bitdelta_linear_reference(x.detach(), w, bits, scale))
    y.square().sum().backward()
    assert x.grad is not None
    assert alpha.grad is not None
    assert x.grad.dtype == torch.float32
    assert alpha.grad.dtype == torch.float32
    ref_x, ref_alpha = _grads(lambda x, a: _dense(x, w, bits, a), x.detach().double(),
                              scale.double(), 2 * y.detach().double())
    torch.testing.assert_close(x.grad.double(), ref_x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alpha.grad.double(), ref_alpha, rtol=1e-4, atol=1e-5)


def test_base_weight_and_bits_get_no_gradient() -> None:
    w, bits, scale = _layer(5, 45, True, torch.float32, seed=4)
    w.requires_grad_(True)  # asked for, and still refused: only α and x are trained
    alpha = scale.clone().requires_grad_(True)
    bitdelta_linear_trainable(torch.randn(2, 45), w, bits, alpha, backend="torch").sum().backward()
    assert w.grad is None
    assert alpha.grad is not None


def test_float64_needs_float64_operands_and_the_torch_backend() -> None:
    w, bits, scale = _layer(5, 45, True, torch.float32, seed=5)
    with pytest.raises(TypeError, match="float64"):
        bitdelta_linear_trainable(torch.randn(2, 45, dtype=torch.float64), w, bits, scale,
                                  backend="torch")
    w64 = w.double()
    with pytest.raises(TypeError, match="torch backend"):
        bitdelta_linear_trainable(torch.randn(2, 45, dtype=torch.float64), w64, bits,
                                  scale.double(), backend="triton")


@pytest.mark.parametrize("per_row", [True, False], ids=["alpha-per-row", "alpha-per-matrix"])
def test_triton_backend_trains_like_the_reference(triton_kernels: ModuleType,
                                                  device: torch.device, per_row: bool) -> None:
    # Small: under TRITON_INTERPRET=1 (no GPU) every program runs in Python.
    w, bits, scale = _layer(6, 40, per_row, torch.float32, seed=6)
    w, bits, scale = w.to(device), bits.to(device), scale.to(device)
    x = torch.randn((2, 3, 40)).to(device)
    upstream = torch.randn((2, 3, 6)).to(device)
    results = {}
    for backend in ("triton", "torch"):
        xb = x.clone().requires_grad_(True)
        alpha = scale.clone().requires_grad_(True)
        y = bitdelta_linear_trainable(xb, w, bits, alpha, backend=backend)  # type: ignore[arg-type]
        y.backward(upstream)
        results[backend] = (y.detach(), xb.grad, alpha.grad)
    for got, want in zip(results["triton"], results["torch"], strict=True):
        assert got is not None
        assert want is not None
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _grads(fn: object, x: torch.Tensor, scale: torch.Tensor, upstream: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    xg = x.detach().clone().requires_grad_(True)
    ag = scale.detach().clone().requires_grad_(True)
    y = fn(xg, ag)  # type: ignore[operator]
    y.backward(upstream)
    assert xg.grad is not None
    assert ag.grad is not None
    return xg.grad, ag.grad


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("per_row", [True, False], ids=["alpha-per-row", "alpha-per-matrix"])
def test_cuda_fp16_gradients_match_float64_at_a_7b_shape(triton_kernels: ModuleType,
                                                         per_row: bool) -> None:
    """What distillation runs on a GPU: fp16 activations and weights of a Llama-7B
    projection, the Triton forward, against autograd through the dense float64 weight."""
    n, k = 4096, 4096
    w, bits, scale = _layer(n, k, per_row, torch.float16, seed=7)
    x = torch.randn((2, 64, k), generator=torch.Generator().manual_seed(8)).half()
    upstream = torch.randn((2, 64, n), generator=torch.Generator().manual_seed(9)).half()
    cuda = torch.device("cuda")
    xg = x.to(cuda).requires_grad_(True)
    alpha = scale.to(cuda).requires_grad_(True)
    y = bitdelta_linear_trainable(xg, w.to(cuda), bits.to(cuda), alpha, backend="triton")
    y.backward(upstream.to(cuda))
    ref_x, ref_alpha = _grads(lambda x, a: _dense(x, w.double(), bits, a), x.double(),
                              scale.double(), upstream.double())
    assert xg.grad is not None
    assert alpha.grad is not None
    # fp16 products over K = 4096 terms: compare in relative Frobenius terms.
    for got, want in ((xg.grad, ref_x), (alpha.grad, ref_alpha)):
        error = (got.double().cpu() - want).norm() / want.norm()
        assert error < 2e-3, float(error)
