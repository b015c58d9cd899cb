"""A local cache of adapter files, by content digest, shared by the vLLM processes of a disk.

Under the cache directory:

- `entries/<digest>/`: one adapter's files (`digest`: the registry's content digest of
  its file list). It appears by one rename of a directory whose every file was checked
  against its sha256, so an entry that exists is whole; it never changes afterwards.
- `entries/<digest>.lock`: an flock. Shared while a process serves the entry (vLLM may
  read the files again whenever it reloads the adapter), exclusive to fill or evict it.
- `staging/`: fills under way and evicted entries being removed; each fill holds an
  flock on its own directory, so a sweep removes only what a dead process left.
- `evict.lock`: one process at a time makes room and installs.

The size bound (the sum of the entries' files) holds whenever no fill is under way: room
is made, least recently served first, before an entry is installed, and entries that
some process serves are never evicted. An adapter that cannot fit is refused (`CacheFull`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry.client import ChecksumMismatch, sha256_of
from registry.errors import InvalidFilename
from registry.names import check_filename

_DIGEST = re.compile(r"[0-9a-f]{64}")
# A staging directory this old whose flock is free was left by a process that died.
STALE_STAGING_SECONDS = 60.0
# Entries evicted by other processes between our fill and our use, in a row.
_CHECKOUT_ATTEMPTS = 3


class CacheError(Exception):
    """The cache cannot hold this adapter (the message says why and what to do)."""


class CacheFull(CacheError):
    pass


@dataclass(frozen=True)
class CachedFile:
    filename: str
    sha256: str
    size: int


# Writes one file to the given path (the registry client's checked download).
Fetch = Callable[[CachedFile, Path], None]


class Lease:
    """An entry held in use: not evicted, by any process, until released."""

    def __init__(self, cache: AdapterCache, digest: str, path: Path) -> None:
        self.path = path
        self._cache = cache
        self._digest = digest
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._cache._let_go(self._digest)


@dataclass
class _Hold:
    """This process's shared lock on an entry: one descriptor for all its leases."""

    fd: int
    leases: int


@dataclass(frozen=True)
class Entry:
    digest: str
    size: int
    last_used: float


class AdapterCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.entries_dir = root / "entries"
        self.staging_dir = root / "staging"
        # One descriptor per entry in use however many names serve it (a server may serve
        # thousands of names; descriptors are a few thousand per process).
        self._holds: dict[str, _Hold] = {}
        self._holds_lock = threading.Lock()

    def checkout(self, digest: str, files: Sequence[CachedFile], fetch: Fetch) -> Lease:
        """The entry `digest`, filled through `fetch` unless present, held until released."""
        _check_listing(digest, files)
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        entry = self.entries_dir / digest
        for _ in range(_CHECKOUT_ATTEMPTS):
            if self._hold_again(digest):
                os.utime(entry)  # least recently used goes first
                return Lease(self, digest, entry)
            fd = self._lock_entry(digest, fcntl.LOCK_SH)
            if entry.is_dir():
                self._hold(digest, fd)
                os.utime(entry)
                return Lease(self, digest, entry)
            os.close(fd)
            fd = self._lock_entry(digest, fcntl.LOCK_EX)
            try:
                if not entry.is_dir():
                    self._fill(entry, files, fetch)
            finally:
                os.close(fd)
        raise CacheError(f"adapter {digest[:12]} was evicted by other processes "
                         f"{_CHECKOUT_ATTEMPTS} times as it arrived; raise "
                         "DELTAHUB_CACHE_MAX_BYTES")

    def _hold_again(self, digest: str) -> bool:
        with self._holds_lock:
            hold = self._holds.get(digest)
            if hold is not None:
                hold.leases += 1
            return hold is not None

    def _hold(self, digest: str, fd: int) -> None:
        with self._holds_lock:
            hold = self._holds.get(digest)
            if hold is None:
                self._holds[digest] = _Hold(fd, 1)
                return
            hold.leases += 1  # another thread held it meanwhile
        os.close(fd)

    def _let_go(self, digest: str) -> None:
        with self._holds_lock:
            hold = self._holds[digest]
            hold.leases -= 1
            if hold.leases:
                return
            del self._holds[digest]
        os.close(hold.fd)

    def entries(self) -> list[Entry]:
        """The whole entries, least recently used first."""
        found = []
        for path in self.entries_dir.glob("*"):
            if _DIGEST.fullmatch(path.name) and path.is_dir():
                with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
                    size = sum(f.stat().st_size for f in path.iterdir())
                    found.append(Entry(path.name, size, path.stat().st_mtime))
        return sorted(found, key=lambda e: e.last_used)

    def _fill(self, entry: Path, files: Sequence[CachedFile], fetch: Fetch) -> None:
        incoming = sum(f.size for f in files)
        if incoming > self.max_bytes:
            raise CacheFull(f"the adapter's {incoming} bytes exceed the cache's bound of "
                            f"{self.max_bytes}; raise DELTAHUB_CACHE_MAX_BYTES")
        staging = Path(tempfile.mkdtemp(prefix=f"{entry.name[:12]}.", dir=self.staging_dir))
        staging_fd = os.open(staging, os.O_RDONLY)
        try:
            fcntl.flock(staging_fd, fcntl.LOCK_EX)
            for file in files:
                dest = staging / file.filename
                fetch(file, dest)
                # The cache's promise, whoever fetched: every file is the one listed.
                if (got := sha256_of(dest)) != file.sha256:
                    raise ChecksumMismatch(file.filename, got, file.sha256, str(dest))
            with self._exclusive(self.root / "evict.lock"):
                self._make_room(incoming)
                staging.rename(entry)
        finally:
            os.close(staging_fd)
            shutil.rmtree(staging, ignore_errors=True)

    def _make_room(self, incoming: int) -> None:
        self._sweep_staging()
        entries = self.entries()
        total = sum(e.size for e in entries)
        for candidate in entries:
            if total + incoming <= self.max_bytes:
                return
            if self._evict(candidate.digest):
                total -= candidate.size
        if total + incoming > self.max_bytes:
            raise CacheFull(f"the adapter's {incoming} bytes do not fit: {total} of the "
                            f"cache's {self.max_bytes} bytes hold adapters being served; "
                            "raise DELTAHUB_CACHE_MAX_BYTES")

    def _evict(self, digest: str) -> bool:
        """Remove an entry no process holds; False when one does."""
        lock_path = self.entries_dir / f"{digest}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            doomed = Path(tempfile.mkdtemp(prefix="evicted.", dir=self.staging_dir))
            (self.entries_dir / digest).rename(doomed / digest)
            lock_path.unlink(missing_ok=True)  # lockers check the inode (_lock_entry)
        finally:
            os.close(fd)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _sweep_staging(self) -> None:
        cutoff = time.time() - STALE_STAGING_SECONDS
        for path in self.staging_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff and _lock_is_free(path):
                    shutil.rmtree(path, ignore_errors=True)

    def _lock_entry(self, digest: str, mode: int) -> int:
        """An fd on the entry's lock file, locked; the file an evictor may have unlinked
        while we waited is not it, so lock again until the file on disk is ours."""
        path = self.entries_dir / f"{digest}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, mode)
            try:
                if os.fstat(fd).st_ino == path.stat().st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    @contextlib.contextmanager
    def _exclusive(self, path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _check_listing(digest: str, files: Sequence[CachedFile]) -> None:
    """Names from the registry become paths here: refuse any that could leave the entry."""
    if not _DIGEST.fullmatch(digest):
        raise CacheError(f"the registry gave the content digest {digest!r}, not a sha256; "
                         "is DELTAHUB_URL a deltahub server?")
    for file in files:
        try:
            check_filename(file.filename)
        except InvalidFilename as exc:
            raise CacheError(str(exc)) from None
        if not _DIGEST.fullmatch(file.sha256) or file.size < 0:
            raise CacheError(f"the registry listed {file.filename!r} with sha256 "
                             f"{file.sha256!r} and size {file.size}; is DELTAHUB_URL a "
                             "deltahub server?")
