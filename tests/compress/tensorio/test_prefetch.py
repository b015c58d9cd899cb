"""The reader thread (compress.tensorio.prefetch): order, errors, early exits."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from compress.tensorio import prefetching


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


def test_light_items_do_not_hold_up_the_reader() -> None:
    """With depth 1, a small item k+1 does not stop the reader from making item k+2 while
    the caller still holds item k; a heavy one does."""
    produced: list[str] = []
    third_made = threading.Event()

    def produce() -> Iterator[str]:
        for name in ["heavy0", "light1", "heavy2", "heavy3"]:
            produced.append(name)
            if name == "heavy2":
                third_made.set()
            yield name

    with prefetching(produce(), light=lambda item: item.startswith("light")) as items:
        assert next(items) == "heavy0"
        assert third_made.wait(timeout=30), f"the reader stopped after {produced}"
        # heavy2 now holds the one room ahead: the reader must not start on heavy3.
        threading.Event().wait(0.2)
        assert produced == ["heavy0", "light1", "heavy2"]
        assert list(items) == ["light1", "heavy2", "heavy3"]


def test_without_light_items_a_small_item_takes_the_room() -> None:
    produced: list[str] = []

    def produce() -> Iterator[str]:
        for name in ["heavy0", "light1", "heavy2"]:
            produced.append(name)
            yield name

    with prefetching(produce()) as items:
        assert next(items) == "heavy0"
        threading.Event().wait(0.2)
        assert produced == ["heavy0", "light1"]
        assert list(items) == ["light1", "heavy2"]
