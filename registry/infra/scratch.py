"""A worker's scratch directory, and the cleanup of those whose worker died.

Each worker writes a job's output under `WORK_DIR/<worker>/` and holds an exclusive
lock on `WORK_DIR/<worker>.lock` for as long as it lives (`<worker>` is unique to the
worker instance). A SIGKILLed worker (the
likeliest death of a compression worker: out of memory) cannot remove its directory,
but the kernel drops its lock; the next worker to start takes each free lock it finds
and removes that directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from compress.errors import DISK_FULL_ERRNOS, ScratchDiskFull

log = logging.getLogger("deltahub.worker")

_LOCK_SUFFIX = ".lock"
_SWEEP_GRACE_SECONDS = 5.0  # far longer than a sweep holds one lock file


class Scratch:
    def __init__(self, work_dir: Path, name: str) -> None:
        self.root = work_dir
        self.path = work_dir / name
        self._lock_fd: int | None = None

    def acquire(self) -> Path:
        """Lock this worker's directory, sweep dead workers' ones; the directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock_path = self.root / f"{self.path.name}{_LOCK_SUFFIX}"
        # Another process's sweep may hold our new lock file for a moment, between our
        # create and our flock, and then unlink it: wait that out, and lock again if the
        # file we hold is no longer the one at the path. Only a lock that stays taken is
        # another live owner of this name.
        deadline = time.monotonic() + _SWEEP_GRACE_SECONDS
        while True:
            fd = _lock(lock_path)
            if fd is not None and _still_linked(fd, lock_path):
                break
            if fd is not None:
                os.close(fd)
            elif time.monotonic() >= deadline:
                raise RuntimeError(f"scratch space {self.path} is locked by another worker")
            time.sleep(0.01)
        self._lock_fd = fd
        self.sweep()
        self.path.mkdir(exist_ok=True)
        return self.path

    def sweep(self) -> int:
        """Remove the directories of workers that hold no lock any more; how many."""
        removed = 0
        for lock_file in self.root.glob(f"*{_LOCK_SUFFIX}"):
            if lock_file.name == f"{self.path.name}{_LOCK_SUFFIX}":
                continue
            fd = _lock(lock_file)
            if fd is None:
                continue  # a live worker's
            if not _still_linked(fd, lock_file):
                os.close(fd)  # removed by another sweep since we listed it
                continue
            try:
                shutil.rmtree(self.root / lock_file.name.removesuffix(_LOCK_SUFFIX),
                              ignore_errors=True)
                lock_file.unlink(missing_ok=True)
                removed += 1
            finally:
                os.close(fd)
        if removed:
            log.info("removed %d scratch space(s) whose process stopped", removed)
        return removed

    def release(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            (self.root / f"{self.path.name}{_LOCK_SUFFIX}").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None


def _still_linked(fd: int, path: Path) -> bool:
    """Whether the file open as `fd` is still the one at `path` (no sweep unlinked it)."""
    try:
        return path.stat().st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _lock(path: Path) -> int | None:
    """An exclusive lock on `path` (created if missing) if free now; its descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def disk_full_named(work_dir: Path, attempt_dir: Path) -> Iterator[None]:
    """A full disk under an attempt's scratch files becomes ScratchDiskFull naming
    WORK_DIR: the worker ends the job for good on it (worker.classify), since a second
    attempt would ask for the same bytes. The caller removes `attempt_dir` as it always
    does."""
    advice = (f"the worker's scratch space is WORK_DIR ({work_dir}, set by "
              "DELTAHUB_WORK_DIR): give it a larger disk, or queue the job with less to write")
    try:
        yield
    except ScratchDiskFull as exc:
        raise ScratchDiskFull(exc.what, exc.directory, exc.needed, exc.free,
                              f"{exc.advice}; {advice}") from exc
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        raise ScratchDiskFull("the job's scratch files", str(attempt_dir), None,
                              _free_bytes(work_dir), advice) from exc


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0
