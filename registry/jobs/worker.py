"""A worker: claim a job, keep its lease alive from a thread of its own, run it, end it.

Any number of workers, in `deltahub serve` (threads) or `deltahub worker` processes on
other machines, share only the database and the object store. A worker that dies stops
renewing its lease; when the lease expires another worker takes the job over (a new
attempt). A worker that was merely paused past its lease finds every write fenced off
and abandons the attempt: the new owner's result stands.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

from sqlalchemy.orm import Session

from compress.errors import DISK_FULL_ERRNOS, CodecError, ScratchDiskFull
from registry.errors import APIError, Unavailable
from registry.infra.database import Database
from registry.infra.scratch import Scratch
from registry.jobs import queue
from registry.jobs.attempt import Context, Control
from registry.jobs.queue import JobCancelled
from registry.jobs.runner import run_attempt
from registry.settings import Settings
from registry.storage.base import BlobStore, StorageError

log = logging.getLogger("deltahub.worker")


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"[:128]


def default_capabilities() -> set[str]:
    import torch

    return {"gpu"} if torch.cuda.is_available() else set()


# How an attempt's failure ends it: its error name (None: the exception's own), and whether
# a later attempt may fare better (transient: back to the queue after a backoff) or not
# (the job fails now). The first row whose class, and errno if given, matches decides.
# Lease loss and cancellation are not failures and never get here.
FAILURES: tuple[tuple[type[Exception], frozenset[int] | None, str | None, bool], ...] = (
    # A full disk under the scratch files: a retry would ask for the same bytes again.
    (ScratchDiskFull, None, None, False),
    (OSError, DISK_FULL_ERRNOS, "ScratchDiskFull", False),
    (CodecError, None, None, False),  # bad input, refused by the codec
    (Unavailable, None, None, True),  # the database or the store is busy or down
    (APIError, None, None, False),  # the job's inputs are gone or bad
    (StorageError, None, "StorageUnavailable", True),
    (OSError, None, "StorageUnavailable", True),
    (Exception, None, None, True),  # unforeseen: retried, its traceback logged
)


def classify(exc: Exception) -> tuple[str, bool]:
    """The error name a failed attempt records, and whether it is transient (FAILURES)."""
    _, _, name, transient = _failure_row(exc)
    return name or (exc.name if isinstance(exc, APIError) else type(exc).__name__), transient


def _failure_row(exc: Exception) -> tuple[type[Exception], frozenset[int] | None, str | None,
                                          bool]:
    return next(row for row in FAILURES if isinstance(exc, row[0])
                and (row[1] is None or getattr(exc, "errno", None) in row[1]))


class Worker:
    def __init__(self, database: Database, store: BlobStore, settings: Settings, *,
                 name: str | None = None, capabilities: Collection[str] | None = None,
                 device: str | None = None) -> None:
        self.database, self.store, self.settings = database, store, settings
        self.name = name or worker_name()
        self.capabilities = set(default_capabilities() if capabilities is None
                                else capabilities)
        self.device = device or ("cuda" if "gpu" in self.capabilities else "cpu")
        self.stopping = threading.Event()
        # Per worker instance, not per name: a restarted worker of the same name gets a
        # fresh directory, and sweeps the old one once nothing holds its lock.
        self.scratch = Scratch(Path(settings.WORK_DIR).resolve(),
                               f"{self.name}-{uuid.uuid4().hex[:8]}")
        self._scratch_path: Path | None = None

    def run(self) -> None:
        """Work until `stop()`; sleeps JOB_POLL_SECONDS when the queue is empty."""
        log.info("worker %s started (capabilities: %s)", self.name,
                 sorted(self.capabilities) or "cpu")
        try:
            while not self.stopping.is_set():
                try:
                    worked = self.run_once()
                except Exception:  # the loop must outlive a database or storage outage
                    log.exception("worker %s: claiming failed; retrying", self.name)
                    worked = False
                if not worked:
                    self.stopping.wait(self.settings.JOB_POLL_SECONDS)
        finally:
            self.scratch.release()
            self._scratch_path = None

    def stop(self) -> None:
        self.stopping.set()

    def run_once(self) -> bool:
        """Claim and run one job; False when none was due."""
        with self.database.writing() as session:
            claimed = queue.claim(session, self.name, self.capabilities, self.settings)
        if claimed is None:
            return False
        control = Control.new()
        heartbeat = threading.Thread(target=self._heartbeat, args=(claimed, control),
                                     name=f"heartbeat-{claimed.lease.job_id}", daemon=True)
        heartbeat.start()
        try:
            self._attempt(claimed, control)
        finally:
            control.finished.set()
            heartbeat.join()
        return True

    def _attempt(self, claimed: queue.ClaimedJob, control: Control) -> None:
        job = claimed.lease.job_id
        if self._scratch_path is None:
            self._scratch_path = self.scratch.acquire()
        context = Context(self.database, self.store, self.settings, self._scratch_path,
                          self.device)
        try:
            adapter_id = run_attempt(claimed, context, control)
            log.info("job %d succeeded: adapter %d", job, adapter_id)
        except queue.LeaseLost:
            log.warning("job %d: lease lost; abandoning the attempt", job)
        except JobCancelled:
            self._end(claimed, lambda s: queue.cancelled(s, claimed.lease))
            log.info("job %d cancelled", job)
        except Exception as exc:
            name, transient = classify(exc)
            if _failure_row(exc) is FAILURES[-1]:  # unforeseen: keep its traceback
                log.exception("job %d: attempt %d failed", job, claimed.lease.attempt)
            detail = exc.detail if isinstance(exc, CodecError | APIError) else str(exc)
            self._fail(claimed, name, detail or repr(exc), transient)

    def _fail(self, claimed: queue.ClaimedJob, name: str, detail: str,
              transient: bool) -> None:
        log.warning("job %d attempt %d: %s: %s", claimed.lease.job_id,
                    claimed.lease.attempt, name, detail)
        self._end(claimed, lambda s: queue.fail(s, claimed.lease, self.settings, name, detail,
                                                transient=transient))

    def _end(self, claimed: queue.ClaimedJob, write: Callable[[Session], object]) -> None:
        try:
            with self.database.writing() as session:
                write(session)
        except queue.LeaseLost:
            log.warning("job %d: lease lost before its end was recorded", claimed.lease.job_id)

    def _heartbeat(self, claimed: queue.ClaimedJob, control: Control) -> None:
        """Renew the lease every third of it until the attempt ends or the lease is lost."""
        interval = self.settings.JOB_LEASE_SECONDS / 3
        while not control.finished.wait(interval):
            try:
                with self.database.writing() as session:
                    if queue.renew(session, claimed.lease, self.settings):
                        control.cancel.set()
            except queue.LeaseLost:
                control.lost.set()
                return
            except Exception:  # a blip: the next beat tries again before the lease ends
                log.warning("job %d: heartbeat failed", claimed.lease.job_id, exc_info=True)
