"""What one attempt at a job is given: its context, and the control it shares with its
heartbeat thread.

Below the attempt's stages (runner.py and quality_stage.py both take these), so neither
stage module imports the other for them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from registry.infra.database import Database
from registry.jobs import queue
from registry.jobs.queue import JobCancelled
from registry.settings import Settings
from registry.storage.base import BlobStore


@dataclass
class Control:
    """Shared by the attempt and its heartbeat thread."""

    cancel: threading.Event  # the heartbeat saw a cancellation request
    lost: threading.Event  # the heartbeat found the lease gone
    finished: threading.Event  # the attempt is over; the heartbeat stops

    @classmethod
    def new(cls) -> Control:
        return cls(threading.Event(), threading.Event(), threading.Event())

    def checkpoint(self) -> None:
        if self.lost.is_set():
            raise queue.LeaseLost("lease lost")
        if self.cancel.is_set():
            raise JobCancelled("cancelled")


@dataclass(frozen=True)
class Context:
    database: Database
    store: BlobStore
    settings: Settings
    work_dir: Path
    device: str  # where codec arithmetic runs: "cpu" or "cuda"
