"""Reading into reused buffers: the same bytes as a fresh read, buffers really reused, the
pool no larger than what was lent at once, and wrong buffers refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compress.tensorio import TORCH_DTYPES, BufferPool, Checkpoint


def _model(tmp_path: Path) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    tensors: dict[str, torch.Tensor] = {}
    for name, dtype in TORCH_DTYPES.items():
        raw = torch.randint(0, 256, (5 * 7 * dtype.itemsize,), dtype=torch.uint8, generator=g)
        tensors[name.lower()] = (raw.view(dtype) if dtype != torch.bool else raw > 127
                                 ).reshape(5, 7)
    tensors["big"] = torch.randn(300, 41, generator=g).half()
    tensors["empty"] = torch.zeros(3, 0, dtype=torch.float32)
    tensors["scalar"] = torch.tensor(2.5, dtype=torch.bfloat16)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tensors


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def test_reading_into_pool_buffers_gives_the_stored_tensors(tmp_path: Path) -> None:
    stored = _model(tmp_path)
    pool = BufferPool()
    with Checkpoint.open(tmp_path) as ckpt:
        for _ in range(2):  # the second pass reads into buffers the first one gave back
            for name, want in stored.items():
                got = ckpt.tensor(name, pool.take(ckpt.entry(name).nbytes))
                assert got.dtype == want.dtype, name
                assert got.shape == want.shape, name
                assert torch.equal(_bytes(got), _bytes(want)), name
                assert torch.equal(_bytes(got), _bytes(ckpt.tensor(name))), name
                pool.give_back(got)
    # One tensor at a time was out: one buffer, grown to the largest tensor.
    assert pool.held_bytes == stored["big"].nbytes


def test_a_given_back_buffer_is_reused_and_lent_ones_are_not() -> None:
    pool = BufferPool()
    first = pool.take(100)
    second = pool.take(50)
    assert first.data_ptr() != second.data_ptr()
    view = first[:40].view(torch.float16).reshape(4, 5)  # what a read hands out
    pool.give_back(view)
    again = pool.take(80)
    assert again.data_ptr() == first.data_ptr()  # the free one that fits
    assert pool.take(10).data_ptr() not in (first.data_ptr(), second.data_ptr())
    pool.give_back(torch.zeros(3))  # not lent by this pool: ignored
    assert pool.held_bytes == 100 + 50 + 10


def test_the_smallest_free_buffer_that_fits_is_taken_wherever_it_is() -> None:
    pool = BufferPool()
    large, small, medium = pool.take(300), pool.take(20), pool.take(100)
    for buffer in (large, small, medium):
        pool.give_back(buffer)
    assert pool.take(50).data_ptr() == medium.data_ptr()  # last of three, not the first
    assert pool.take(10).data_ptr() == small.data_ptr()
    assert pool.take(60).data_ptr() == large.data_ptr()
    assert pool.held_bytes == 420


def test_a_free_buffer_too_small_is_replaced_not_kept() -> None:
    pool = BufferPool()
    small = pool.take(10)
    pool.give_back(small)
    big = pool.take(1000)
    assert big.numel() == 1000
    pool.give_back(big)
    assert pool.held_bytes == 1000  # the small one was let go: memory stays flat


def test_a_wrong_buffer_is_refused(tmp_path: Path) -> None:
    _model(tmp_path)
    with Checkpoint.open(tmp_path) as ckpt:
        need = ckpt.entry("big").nbytes
        for bad in (torch.empty(need - 1, dtype=torch.uint8),
                    torch.empty(need, dtype=torch.int16),
                    torch.empty(2, need, dtype=torch.uint8),
                    torch.empty(2 * need, dtype=torch.uint8)[::2]):
            with pytest.raises(ValueError, match=r"'big'.*uint8"):
                ckpt.tensor("big", bad)
