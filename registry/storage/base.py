"""The blob store interface every backend implements.

Keys are chosen by the server, never by a client: uploads land under
`staging/<random>` and are committed to the content address `blobs/sha256/<hex>`.
A staged object is invisible to readers; commit is idempotent (committing content
that already exists is a no-op that just drops the staging object), so a failed or
interrupted upload leaves nothing that any reader can see. The database is the
source of truth; garbage collection removes stale staging objects and blobs that no
row references.
"""

from __future__ import annotations

import abc
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
STAGING_PREFIX = "staging/"
BLOB_PREFIX = "blobs/sha256/"

# Part size for streamed writes. S3 needs parts of at least 5 MiB (but the last);
# 8 MiB keeps memory per upload small and the request count low.
PART_BYTES = 8 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024


class StorageError(Exception):
    """The backend failed (unreachable, denied, out of space); the request can be retried.

    The message is shown to clients (the 503 body, /readyz), so it says what failed with
    at most the store-relative key: never the store's absolute root, the endpoint URL or
    a credential. Backends log those details and chain the original exception.
    """


class BlobNotFound(StorageError):
    pass


def blob_key(sha256: str) -> str:
    if not SHA256_HEX.match(sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    return BLOB_PREFIX + sha256


def new_staging_key() -> str:
    return STAGING_PREFIX + uuid.uuid4().hex


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root or prefix (absolute, `..`, empty parts).

    Keys are made by the server, so a bad one is a bug; refusing it keeps a bug from
    touching files or objects outside the store.
    """
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a valid storage key: {key!r}")
    return key


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range [{start}, {end})")


@dataclass(frozen=True)
class StagedObject:
    key: str  # e.g. "staging/5f0c…"; opaque to callers
    size: int


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime  # timezone-aware UTC


class StagingWriter(abc.ABC):
    """A write in progress to a fresh staging key. Use as a context manager: leaving the
    block without `finish()` aborts and removes whatever was written."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def finish(self) -> StagedObject:
        """Make the staged object complete (durable) and return it."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop everything written so far; safe to call more than once."""

    def __enter__(self) -> StagingWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            if not self.finished:
                self.abort()
            return
        # The block failed: clean up, but let the block's own error through (a
        # validation error must not turn into a storage error because the backend is
        # also down); garbage collection removes whatever the abort could not.
        try:
            self.abort()
        except StorageError:
            logger.warning("could not abort a failed upload; gc will remove it", exc_info=True)

    @property
    @abc.abstractmethod
    def finished(self) -> bool: ...


class BlobStore(abc.ABC):
    """Content-addressed blob storage with a staging area."""

    # Whether blobs are files on this machine (`local_path`), which readers may map.
    is_local: bool = False

    @abc.abstractmethod
    def start_upload(self) -> StagingWriter:
        """Begin writing a new object under a random staging key."""

    @abc.abstractmethod
    def commit(self, staged: StagedObject, sha256: str) -> None:
        """Move a finished staged object to `blobs/sha256/<sha256>`.

        The caller has verified the hash. If the blob exists already, the staged copy is
        simply removed and the blob's modified time is refreshed: garbage collection
        spares blobs younger than its grace period, so an old unreferenced blob that is
        being pushed again cannot be collected before the new row references it. The
        existing bytes are never overwritten. After commit the staging key no longer exists.
        """

    @abc.abstractmethod
    def discard(self, staged: StagedObject) -> None:
        """Remove a finished staged object that will not be committed."""

    @abc.abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abc.abstractmethod
    def size(self, sha256: str) -> int:
        """Size in bytes; raises BlobNotFound."""

    @abc.abstractmethod
    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end) of a blob in chunks.

        Raises BlobNotFound from the call itself, not from the first chunk, so an HTTP
        endpoint can answer 404 before it starts a streaming response. `end` past the
        size is clamped; a range starting at or past the end yields nothing. A negative
        start or `end < start` is a ValueError.
        """

    @abc.abstractmethod
    def download(self, sha256: str, dest: Path) -> None:
        """Copy a blob to a local file (for workers that need random access)."""

    @abc.abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove a blob; a missing blob is not an error."""

    @abc.abstractmethod
    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under `prefix` (STAGING_PREFIX or BLOB_PREFIX), for garbage collection."""

    @abc.abstractmethod
    def delete_key(self, key: str) -> None:
        """Remove any object by key (garbage collection of staging leftovers)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StorageError unless the backend is reachable and writable (for /readyz).

        Writing is proved, not assumed: write and remove a tiny probe object under
        STAGING_PREFIX (so gc removes it if the removal fails), within the backend's
        usual timeouts.
        """

    def abort_incomplete_uploads(self, older_than: datetime) -> int:
        """Abort uploads started before `older_than` that never finished; return how many.

        Only backends whose unfinished writes do not show up in `list_objects` need
        this (S3 multipart uploads); a local staging file is listed like any object.
        """
        return 0

    def will_need(self, sha256: str, start: int, length: int) -> None:
        """Hint that bytes [start, start + length) of a blob will be read soon; returns
        at once. Only a local disk can act on it (the page cache); an object store's
        reads are already parallel ranged requests (registry/jobs/inputs.py)."""
        return  # deliberately nothing: stores that cannot prefetch ignore the hint

    def local_path(self, sha256: str) -> Path | None:
        """The blob's file on this machine's disk, for a reader that maps it; None when
        the store is not a local directory (or the blob is not there)."""
        return None

    def read_bytes(self, sha256: str, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(self.read(sha256, start, end))

    def read_into(self, sha256: str, start: int, view: memoryview) -> int:
        """Fill `view` from byte `start` of the blob; how many bytes there were (fewer
        only at its end). Backends that can should read straight into `view`."""
        filled = 0
        for chunk in self.read(sha256, start, start + len(view)):
            view[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled
