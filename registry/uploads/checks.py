"""At most `MAX_CONCURRENT_CONTENT_CHECKS` heavy content checks at once in a process.

A data set file is checked whole once it has arrived (compress.modeling.data reads it as
an evaluation would), which holds a few times the file in memory; uploads arriving
together would each hold theirs. An upload that finds every slot taken for
`CONTENT_CHECK_WAIT_SECONDS` is answered 503 `ContentChecksBusy` with `Retry-After`,
having stored nothing. The slots are the process's, shared by every app in it with the
same limit, because the memory they guard is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from registry.errors import ContentChecksBusy
from registry.settings import Settings

_SEMAPHORES: dict[int, threading.BoundedSemaphore] = {}
_SEMAPHORES_LOCK = threading.Lock()


def _semaphore(limit: int) -> threading.BoundedSemaphore:
    with _SEMAPHORES_LOCK:
        return _SEMAPHORES.setdefault(limit, threading.BoundedSemaphore(limit))


@dataclass(frozen=True)
class CheckSlots:
    limit: int
    wait_seconds: float
    retry_after_seconds: int

    @classmethod
    def of(cls, settings: Settings) -> CheckSlots:
        return cls(settings.MAX_CONCURRENT_CONTENT_CHECKS, settings.CONTENT_CHECK_WAIT_SECONDS,
                   settings.RETRY_AFTER_SECONDS)

    @contextmanager
    def slot(self, filename: str) -> Iterator[None]:
        """Hold one slot while checking `filename` (blocks its worker thread, never the
        event loop, for at most `wait_seconds`)."""
        semaphore = _semaphore(self.limit)
        if not semaphore.acquire(timeout=self.wait_seconds):
            raise ContentChecksBusy(
                f"{filename!r} arrived, but the server is checking {self.limit} other "
                f"uploaded file(s) (DELTAHUB_MAX_CONCURRENT_CONTENT_CHECKS); nothing was "
                f"kept: send it again after {self.retry_after_seconds} s",
                retry_after_seconds=self.retry_after_seconds)
        try:
            yield
        finally:
            semaphore.release()
