"""Offsets past 2³¹: the kernels compute row × stride and tenant × stride in int64.

On the CPU the helper both kernels use (kernels/tile_math.py: wide_offset) runs in the Triton
interpreter on index × stride products past 2³¹, without allocating tensors that large, next
to the plain int32 product, which wraps. On a GPU, a real launch whose output offsets pass 2³¹
(16400 rows against a 128K vocabulary, fp16: 4 GiB of output) checks the kernels themselves.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from kernels import bitdelta_linear, bitdelta_linear_reference, pack_signs

INT32_MAX = 2**31 - 1
# (index, stride): rows × N of a 20K-token prefill on a 128256-row head; tenants × words × N
# for 131 tenants of 128256×4096; the largest 32-bit index times a row of 4096.
PRODUCTS = [(20000, 128256), (131, 128 * 128256), (INT32_MAX, 4096)]


triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
from kernels.tile_math import wide_offset  # noqa: E402  (needs triton, checked just above)


@triton.jit
def _wide(out_ptr, index, stride):
    tl.store(out_ptr, wide_offset(tl.full((), index, tl.int32), stride))


@triton.jit
def _narrow(out_ptr, index, stride):
    tl.store(out_ptr, (tl.full((), index, tl.int32) * stride).to(tl.int64))


@pytest.mark.parametrize(("index", "stride"), PRODUCTS)
def test_wide_offset_is_exact_where_int32_wraps(
    triton_kernels: ModuleType, device: torch.device, index: int, stride: int
) -> None:
    out = torch.zeros(1, dtype=torch.int64, device=device)
    _wide[(1,)](out, index, stride)
    assert int(out.item()) == index * stride
    if stride <= INT32_MAX:  # a stride this small arrives as int32, and the product wraps
        _narrow[(1,)](out, index, stride)
        assert int(out.item()) != index * stride


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_output_offsets_past_2_31_on_a_gpu(triton_kernels: ModuleType) -> None:
    free, _ = torch.cuda.mem_get_info()
    m, n, k = 16400, 131072, 64  # y has more than 2³¹ elements: the last rows start past it
    if free < 6 * 2**30:
        pytest.skip("needs about 6 GiB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(31)
    w = torch.randn((n, k), device="cuda", generator=g).half()
    bits = pack_signs(torch.randn((n, k), device="cuda", generator=g))
    alpha = torch.full((n,), 0.01, device="cuda")
    x = torch.randn((m, k), device="cuda", generator=g).half()
    y = bitdelta_linear(x, w, bits, alpha, backend="triton")
    rows = [0, m // 2, m - 1]  # the last row's offsets are past 2³¹
    ref = bitdelta_linear_reference(x[rows], w, bits, alpha, out_dtype=torch.float32)
    torch.testing.assert_close(y[rows].float(), ref, rtol=4e-3, atol=4e-3 * float(ref.abs().max()))
