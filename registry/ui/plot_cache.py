"""Drawn plots kept by content key: in memory (an LRU), on disk, and drawn once however
many ask at once (registry/ui/plots.py draws them; docs/architecture.md, "Readable pages
and SVG plots")."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path

from registry.errors import PlotsBusy

CACHE_ENTRIES = 128
DEFAULT_RENDERS = 4  # pictures drawn at once (DELTAHUB_MAX_PLOT_RENDERS)


class PlotCache:
    """The last CACHE_ENTRIES pictures drawn, by content key (an in-process LRU), and the
    pictures being drawn now.

    A picture is drawn once however many ask for it at once: the first request draws it,
    the others wait for that drawing and share its result (or its error). At most
    `renders` pictures are drawn at a time; a request for one more is refused (PlotsBusy,
    a 503 with Retry-After) rather than queued behind them.
    """

    def __init__(self, entries: int = CACHE_ENTRIES, renders: int = DEFAULT_RENDERS,
                 retry_after_seconds: int = 2, folder: Path | None = None) -> None:
        self.entries = entries
        self.folder = folder  # drawn pictures on disk by key (None: memory only)
        self.retry_after_seconds = retry_after_seconds
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._drawing: dict[str, Future[bytes]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(renders)
        self.hits = 0
        self.misses = 0
        self.renders = 0  # pictures drawn
        self.shared = 0  # requests that waited for another request's drawing

    async def picture(self, key: str, draw: Callable[[], Awaitable[bytes]]) -> bytes:
        """The picture for `key`: cached, shared with the drawing of it under way, or drawn
        by `draw` (which draws through `bounded`)."""
        while True:
            with self._lock:
                found = self._cached(key)
                if found is not None:
                    return found
                drawing = self._drawing.get(key)
                if drawing is None:
                    drawing = self._drawing[key] = Future()
                    break
                self.shared += 1
            try:
                return await asyncio.wrap_future(drawing)
            except asyncio.CancelledError:
                if not drawing.cancelled():
                    raise  # this request was cancelled, not the drawing it waited for
        return await self._draw(key, drawing, draw)

    def bounded(self, render: Callable[[], bytes]) -> bytes:
        """`render()` in one of the drawing slots (in a worker thread), or PlotsBusy."""
        if not self._slots.acquire(blocking=False):
            raise PlotsBusy("every plot drawing slot is busy; retry shortly (the picture is "
                            "cached once drawn)", retry_after_seconds=self.retry_after_seconds)
        try:
            with self._lock:
                self.renders += 1
            return render()
        finally:
            self._slots.release()

    async def _draw(self, key: str, drawing: Future[bytes],
                    draw: Callable[[], Awaitable[bytes]]) -> bytes:
        try:
            png = await asyncio.to_thread(self._from_disk, key)
            if png is None:
                png = await draw()
                await asyncio.to_thread(self._to_disk, key, png)
        except BaseException as exc:
            with self._lock:
                del self._drawing[key]
            if isinstance(exc, Exception):
                drawing.set_exception(exc)
            else:  # cancelled: a waiter draws it instead
                drawing.cancel()
            raise
        with self._lock:
            self._put(key, png)
            del self._drawing[key]
        drawing.set_result(png)
        return png

    def _path(self, key: str) -> Path | None:
        # The key is a sha256 hex digest (content_key): a safe file name.
        return None if self.folder is None else self.folder / f"{key}.svg"

    def _from_disk(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return None if path is None else path.read_bytes()
        except OSError:
            return None  # not drawn yet, or unreadable: drawn again

    def _to_disk(self, key: str, picture: bytes) -> None:
        """Kept for the next process; a disk that refuses it only costs a redraw."""
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{key}.{threading.get_ident()}.partial")
            partial.write_bytes(picture)
            partial.replace(path)  # atomic: a reader sees all of it or none
        except OSError:
            return

    def _cached(self, key: str) -> bytes | None:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return found

    def _put(self, key: str, png: bytes) -> None:
        self._items[key] = png
        self._items.move_to_end(key)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)
