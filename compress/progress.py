"""The progress callback every long codec operation accepts.

Called as `progress(done, total, item)`: bytes of input processed so far, bytes in all,
and the tensor being worked on. The CLI turns it into a progress bar.
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, done: int, total: int, item: str) -> None: ...


def no_progress(done: int, total: int, item: str) -> None:
    """The default callback: report nothing."""


class ProgressCounter:
    """Counts the bytes done and reports each step to a progress callback."""

    def __init__(self, progress: ProgressFn, total: int) -> None:
        self._progress, self._total, self._done = progress, total, 0

    def advance(self, nbytes: int, item: str) -> None:
        self._done += nbytes
        self._progress(self._done, self._total, item)
