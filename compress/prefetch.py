"""Produce items on a background thread while the caller works on the previous one.

Codecs alternate reading (disk, page cache) and arithmetic; torch kernels and file reads
both release the GIL, so a reader thread one item ahead overlaps the two. At most
`depth` items wait in the queue, plus one being produced and one being consumed, so
memory stays at a few tensors. An exception in the producer is re-raised in the
consumer; leaving the block early (an error, a break) stops the producer.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1


class _Done:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


@contextlib.contextmanager
def prefetching(items: Iterable[T], depth: int = 1) -> Iterator[Iterator[T]]:
    """`with prefetching(gen) as it: for x in it: ...` with `gen` run on a reader thread."""
    slots: queue.Queue[T | _Done | _Failed] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: T | _Done | _Failed) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_Done())
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(_Failed(exc))

    def consume() -> Iterator[T]:
        while True:
            item = slots.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    thread = threading.Thread(target=produce, name="deltahub-prefetch", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # free the slot the producer may be waiting for, and the tensors
                slots.get_nowait()
        thread.join()
