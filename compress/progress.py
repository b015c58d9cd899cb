"""The progress callback every long codec operation accepts.

Called as `progress(done, total, item)`: bytes of input processed so far, bytes in all,
and the tensor being worked on. The CLI turns it into a progress bar; the worker into
job progress in the API.
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, done: int, total: int, item: str) -> None: ...


def no_progress(done: int, total: int, item: str) -> None:
    """The default callback: report nothing."""
