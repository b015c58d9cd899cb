"""Produce items on a background thread while the caller works on the previous one.

Codecs alternate reading (disk, page cache) and arithmetic; torch kernels and file reads
both release the GIL, so a reader thread one item ahead overlaps the two, and memory
stays at two items (the one in use and the next). An exception in the producer is re-raised in the
consumer; leaving the block early (an error, a break) stops the producer.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1


class _Done:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


@contextlib.contextmanager
def prefetching(items: Iterable[T], depth: int = 1,
                light: Callable[[T], bool] | None = None) -> Iterator[Iterator[T]]:
    """`with prefetching(gen) as it: for x in it: ...` with `gen` run on a reader thread.

    The reader starts on an item only when fewer than `depth` items wait ahead of the
    one the caller holds: with depth 1, it reads item k+1 while the caller works on
    item k, so two items are alive at a time.

    Items for which `light(item)` is true (small ones) do not count towards `depth`:
    otherwise the reader, having made a small item k+1 in a moment, would idle until
    the caller finished item k, and the caller would then wait for all of item k+2.
    """
    def is_light(item: T) -> bool:
        return light is not None and light(item)

    slots: queue.Queue[T | _Done | _Failed] = queue.Queue()
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def wait_for_room() -> bool:
        while not stop.is_set():
            if room.acquire(timeout=_POLL_SECONDS):
                return True
        return False

    def produce() -> None:
        try:
            source = iter(items)
            while wait_for_room():
                try:
                    item = next(source)
                except StopIteration:
                    slots.put(_Done())
                    return
                if is_light(item):
                    room.release()  # it holds no room: the reader goes straight on
                slots.put(item)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            slots.put(_Failed(exc))

    def consume() -> Iterator[T]:
        while True:
            item = slots.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            if not is_light(item):
                room.release()  # the reader may start on the next item now
            yield item

    thread = threading.Thread(target=produce, name="deltahub-prefetch", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(queue.Empty):
            while True:  # drop what was read ahead, so its tensors are freed now
                slots.get_nowait()
