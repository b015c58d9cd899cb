"""How a launch behaves on the GPU: no host copies or syncs (so a CUDA graph can capture it),
x's device rather than the current one, device-side tenant boundaries.

All of these need CUDA (a second device for one of them) and are skipped without it; the CPU
parts of the same code paths are covered by the parity tests.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from kernels import (
    bitdelta_linear,
    bitdelta_linear_multi,
    bitdelta_linear_multi_reference,
    bitdelta_linear_reference,
)
from tests.kernels.helpers import assert_matches_reference, make_layer, make_x

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
pytestmark = [pytest.mark.gpu, needs_cuda]

N, K, TENANTS = 512, 384, 6


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_tenant_boundaries_on_the_device_are_used_as_they_are(triton_kernels: ModuleType) -> None:
    device = torch.device("cuda")
    w, bits, alpha = make_layer(N, K, torch.float16, device, _generator(1), tenants=TENANTS)
    starts = [0, 1, 1, 3, 4, 5, 9]
    x = make_x(starts[-1], K, torch.float16, device, _generator(2))
    on_device = torch.tensor(starts, dtype=torch.int32, device=device)
    y = bitdelta_linear_multi(x, w, bits, alpha, on_device, max_rows_per_tenant=4)
    y_ref = bitdelta_linear_multi_reference(x, w, bits, alpha, starts, out_dtype=torch.float32)
    assert_matches_reference(y, y_ref, torch.float16)


@pytest.mark.parametrize("rows_per_tenant", [1, 64])  # decode and prefill
def test_a_cuda_graph_captures_and_replays_a_launch(
    triton_kernels: ModuleType, rows_per_tenant: int
) -> None:
    """Capture fails on a pageable host-to-device copy or a sync, so capturing proves neither
    happens per call; replaying with new x proves nothing was baked in but the operands."""
    device = torch.device("cuda")
    w, bits, alpha = make_layer(N, K, torch.float16, device, _generator(3), tenants=TENANTS)
    starts = [i * rows_per_tenant for i in range(TENANTS + 1)]
    on_device = torch.tensor(starts, dtype=torch.int32, device=device)
    x = make_x(starts[-1], K, torch.float16, device, _generator(4))

    def step() -> torch.Tensor:
        return bitdelta_linear_multi(x, w, bits, alpha, on_device,
                                     max_rows_per_tenant=rows_per_tenant)

    step()  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = step()
    x.copy_(make_x(starts[-1], K, torch.float16, device, _generator(5)))
    graph.replay()
    torch.cuda.synchronize()
    y_ref = bitdelta_linear_multi_reference(x, w, bits, alpha, starts, out_dtype=torch.float32)
    assert_matches_reference(y, y_ref, torch.float16)


def test_scalar_alpha_is_captured_without_a_copy(triton_kernels: ModuleType) -> None:
    device = torch.device("cuda")
    w, bits, _ = make_layer(N, K, torch.float16, device, _generator(6))
    x = make_x(1, K, torch.float16, device, _generator(7))
    bitdelta_linear(x, w, bits, 0.02)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = bitdelta_linear(x, w, bits, 0.02)
    graph.replay()
    torch.cuda.synchronize()
    y_ref = bitdelta_linear_reference(x, w, bits, 0.02, out_dtype=torch.float32)
    assert_matches_reference(y, y_ref, torch.float16)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_launches_on_x_device_not_the_current_one(triton_kernels: ModuleType) -> None:
    other = torch.device("cuda", 1)
    w, bits, alpha = make_layer(N, K, torch.float16, other, _generator(8))
    x = make_x(3, K, torch.float16, other, _generator(9))
    with torch.cuda.device(0):
        y = bitdelta_linear(x, w, bits, alpha)
    assert y.device == other
    y_ref = bitdelta_linear_reference(x, w, bits, alpha, out_dtype=torch.float32)
    assert_matches_reference(y, y_ref, torch.float16)
