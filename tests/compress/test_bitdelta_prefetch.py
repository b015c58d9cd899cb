"""The reader thread (compress.prefetch) and the encoder's worker pool and slabs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

import compress.bitdelta_codec as codec
from compress.bitdelta_codec import compress_pair, encoder_pool
from compress.bitdelta_format import ScaleMode
from compress.errors import NonFiniteTensor
from compress.prefetch import prefetching


def test_items_arrive_in_order_from_another_thread() -> None:
    producers: set[int] = set()

    def produce() -> Iterator[int]:
        for i in range(50):
            producers.add(threading.get_ident())
            yield i

    with prefetching(produce(), depth=2) as items:
        assert list(items) == list(range(50))
    assert producers
    assert threading.get_ident() not in producers


def test_a_producer_error_reaches_the_consumer_after_the_items_before_it() -> None:
    def produce() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("disk on fire")

    seen: list[int] = []
    with pytest.raises(ValueError, match="disk on fire"), prefetching(produce()) as items:
        seen.extend(items)
    assert seen == [1, 2]


def test_leaving_early_stops_the_producer() -> None:
    produced: list[int] = []

    def produce() -> Iterator[int]:
        for i in range(1_000_000):
            produced.append(i)
            yield i

    def consume() -> None:
        with prefetching(produce()) as items:
            for i in items:
                if i == 3:
                    raise RuntimeError("consumer failed")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="consumer failed"):
        consume()
    assert threading.active_count() == before  # joined, not leaked
    assert len(produced) < 10  # at most a queue's worth ahead, then it stopped


@pytest.mark.parametrize("mode", list(ScaleMode))
def test_workers_and_slabs_do_not_change_the_result(mode: ScaleMode,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(5)
    base = torch.randn(103, 70, generator=g).half()
    finetune = (base.float() + 0.05 * torch.randn(103, 70, generator=g)).half()
    whole = compress_pair(base, finetune, mode, "w")
    monkeypatch.setattr(codec, "_SLAB_ELEMENTS", 7 * 70)  # 7 rows per slab: 15 slabs
    with encoder_pool(3) as pool:
        split = compress_pair(base, finetune, mode, "w", pool=pool)
    assert torch.equal(split.bits, whole.bits)
    torch.testing.assert_close(split.scale, whole.scale, rtol=1e-6, atol=0.0)
    for field in ("delta_sq", "error_sq", "finetune_sq"):
        # float32 partial sums over other partitions: equal to float32 rounding
        assert getattr(split, field) == pytest.approx(getattr(whole, field), rel=1e-5)


def test_a_nan_in_a_later_slab_of_another_worker_is_found(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(codec, "_SLAB_ELEMENTS", 4 * 40)
    base, finetune = torch.zeros(64, 40), torch.ones(64, 40)
    finetune[61, 3] = float("inf")
    with encoder_pool(2) as pool, pytest.raises(NonFiniteTensor, match="'w'"):
        compress_pair(base, finetune, ScaleMode.ROW, "w", pool=pool)
