"""Blobs in a local directory: the embedded default (`file:` storage URLs).

Layout under the root mirrors the object keys: `staging/<random>` and
`blobs/sha256/<hex>`. Commit is a rename within one file system, which is atomic, so
a reader sees either no blob or the whole blob.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from compress.tensorio import advise_will_need, fsync_path
from registry.storage.base import (
    BLOB_PREFIX,
    READ_CHUNK_BYTES,
    STAGING_PREFIX,
    BlobNotFound,
    BlobStore,
    StagedObject,
    StagingWriter,
    StorageError,
    StoredObject,
    blob_key,
    check_key,
    check_range,
    new_staging_key,
)

logger = logging.getLogger(__name__)

_FIX_MODE = "the server process may not write there; fix the directory's owner or mode"
_HINTS = {
    errno.ENOSPC: "the disk is full; free space or point DELTAHUB_STORAGE_URL at a larger disk",
    errno.EDQUOT: "the disk quota is exhausted; free space or raise the quota",
    errno.EACCES: _FIX_MODE,
    errno.EPERM: _FIX_MODE,
    errno.EROFS: "the file system is mounted read-only; remount it read-write",
    errno.ENOTDIR: "a file stands where the store keeps a directory; move it away",
}


def _os_error(op: str, key: str, path: Path, exc: OSError) -> StorageError:
    """A StorageError whose message a client may see (the 503 body, /readyz).

    It names the store-relative key and the kind of failure only: the absolute path
    would tell every client how the server's disk is laid out. The operator gets the
    full path and error in the log (and in the chained OSError).
    """
    logger.warning("local storage: cannot %s %s: %s", op, path, exc)
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    reason = reason[:1].lower() + reason[1:]  # it continues a sentence
    hint = _HINTS.get(exc.errno or 0)
    message = f"local storage: cannot {op} {key}: {reason}"
    return StorageError(f"{message}; {hint}" if hint else message)


class LocalBlobStore(BlobStore):
    is_local = True

    def __init__(self, root: Path) -> None:
        # Resolved once, so the guard in _path compares against the real location.
        self.root = root.resolve()
        for sub in ("staging", "blobs/sha256"):
            try:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _os_error("create", sub, self.root / sub, exc) from exc

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # A symlink inside the root could still lead out of it.
        if not path.is_relative_to(self.root):
            logger.error("local storage: key %r resolves to %s, outside %s", key, path, self.root)
            raise StorageError(f"local storage: key {key!r} resolves outside the store")
        return path

    def _key_of(self, path: Path) -> str:
        """The store-relative name of a path, for messages a client may see."""
        if path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return path.name

    def start_upload(self) -> StagingWriter:
        key = new_staging_key()
        return _LocalWriter(key, self._path(key))

    def commit(self, staged: StagedObject, sha256: str) -> None:
        dest = self._path(blob_key(sha256))
        src = self._staged_path(staged)
        try:
            try:
                os.utime(dest)  # exists already: refresh its age for gc (see BlobStore.commit)
            except FileNotFoundError:
                src.replace(dest)  # rename(2): atomic within the file system
                fsync_path(dest.parent)
            else:
                src.unlink(missing_ok=True)
        except FileNotFoundError as exc:
            raise StorageError(
                f"local storage: staged object {staged.key} is gone "
                "(already committed, discarded or collected); upload again"
            ) from exc
        except OSError as exc:
            raise _os_error("commit", blob_key(sha256), dest, exc) from exc

    def discard(self, staged: StagedObject) -> None:
        self._staged_path(staged)  # refuse a key outside staging/
        self.delete_key(staged.key)

    def _staged_path(self, staged: StagedObject) -> Path:
        if not staged.key.startswith(STAGING_PREFIX):
            raise ValueError(f"not a staging key: {staged.key!r}")
        return self._path(staged.key)

    def _stat(self, sha256: str) -> os.stat_result:
        key = blob_key(sha256)
        path = self._path(key)
        try:
            return path.stat()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {sha256} not found") from None
        except OSError as exc:
            raise _os_error("stat", key, path, exc) from exc

    def exists(self, sha256: str) -> bool:
        try:
            self._stat(sha256)
        except BlobNotFound:
            return False
        return True

    def size(self, sha256: str) -> int:
        return self._stat(sha256).st_size

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_range(start, end)
        self._stat(sha256)  # BlobNotFound now, not at the first chunk
        key = blob_key(sha256)
        return self._chunks(key, self._path(key), start, end)

    def will_need(self, sha256: str, start: int, length: int) -> None:
        # A job's reader asks for the next tensor while it copies this one: from a cold
        # disk the kernel then reads ahead in the background (compress/tensorio/sources.py).
        if length <= 0:
            return
        try:
            fd = os.open(self._path(blob_key(sha256)), os.O_RDONLY)
        except OSError:
            return  # only a hint: the read that follows reports what is wrong
        try:
            advise_will_need(fd, start, length)
        finally:
            os.close(fd)

    def local_path(self, sha256: str) -> Path | None:
        path = self._path(blob_key(sha256))
        return path if path.is_file() else None

    def read_into(self, sha256: str, start: int, view: memoryview) -> int:
        # One copy, disk to the caller's buffer: a job reads whole models this way.
        check_range(start, start + len(view))
        key = blob_key(sha256)
        path = self._path(key)
        filled = 0
        try:
            with path.open("rb", buffering=0) as f:
                f.seek(start)
                while filled < len(view) and (n := f.readinto(view[filled:])):
                    filled += n
        except FileNotFoundError:
            raise BlobNotFound(f"blob {sha256} is not in the store") from None
        except OSError as exc:
            raise _os_error("read", key, path, exc) from exc
        return filled

    @staticmethod
    def _chunks(key: str, path: Path, start: int, end: int | None) -> Iterator[bytes]:
        # Opened here rather than in read(): a generator that is never started would
        # otherwise leak the open file.
        remaining = None if end is None else end - start
        try:
            with path.open("rb") as f:
                f.seek(start)
                while remaining is None or remaining > 0:
                    n = READ_CHUNK_BYTES if remaining is None else min(READ_CHUNK_BYTES, remaining)
                    chunk = f.read(n)
                    if not chunk:
                        return
                    if remaining is not None:
                        remaining -= len(chunk)
                    yield chunk
        except FileNotFoundError:
            raise BlobNotFound(f"blob {path.name} was deleted while being read") from None
        except OSError as exc:
            raise _os_error("read", key, path, exc) from exc

    def download(self, sha256: str, dest: Path) -> None:
        self._stat(sha256)
        src = self._path(blob_key(sha256))
        # Copy beside the destination, then rename: a failed copy leaves no partial file.
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(src, tmp)
            tmp.replace(dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            # dest is the caller's file, outside the store: its name says enough.
            raise _os_error(f"download {blob_key(sha256)} to", dest.name, dest, exc) from exc

    def delete(self, sha256: str) -> None:
        self.delete_key(blob_key(sha256))

    def delete_key(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error("delete", key, path, exc) from exc

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        # Walk only the deepest directory the prefix names; filter the rest by name.
        folder = prefix.rpartition("/")[0]
        top = self._path(folder) if folder else self.root
        if not top.is_dir():
            return

        def fail(exc: OSError) -> None:
            path = Path(exc.filename or top)
            raise _os_error("list", self._key_of(path), path, exc) from exc

        for dirpath, dirnames, filenames in os.walk(top, onerror=fail):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # removed since the directory was read
                except OSError as exc:
                    raise _os_error("stat", key, path, exc) from exc
                modified = datetime.fromtimestamp(st.st_mtime, UTC)
                yield StoredObject(key=key, size=st.st_size, modified=modified)

    def check(self) -> None:
        # A real write, because a directory can exist and still refuse writes (a
        # read-only mount, a full disk, a file where the directory belongs), and a mode
        # check would pass for root. The probe lives under staging/, so garbage
        # collection removes it if the unlink fails.
        probe = self._path(f"{STAGING_PREFIX}check-{uuid.uuid4().hex}")
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise _os_error("write to", STAGING_PREFIX, probe, exc) from exc
        # Commit renames into blobs/sha256/; a probe there would look like a blob to
        # gc, so only ask the kernel (access(2) reports a read-only mount even to root).
        blobs = self._path(BLOB_PREFIX.rstrip("/"))
        if not (blobs.is_dir() and os.access(blobs, os.W_OK | os.X_OK)):
            logger.warning("local storage: %s is not a writable directory", blobs)
            raise StorageError(
                f"local storage: cannot write to {BLOB_PREFIX}: it is not a writable "
                "directory; check that it is a directory, its owner and mode, and that the "
                "file system is mounted read-write"
            )


class _LocalWriter(StagingWriter):
    def __init__(self, key: str, path: Path) -> None:
        self._key = key
        self._path = path
        self._size = 0
        self._staged: StagedObject | None = None
        try:
            # O_EXCL: a key collision (or a planted file) fails instead of being reused.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _os_error("create", key, path, exc) from exc
        self._file = os.fdopen(fd, "wb")

    @property
    def finished(self) -> bool:
        return self._staged is not None

    def write(self, data: bytes) -> None:
        if self._file.closed:
            raise ValueError("write to an upload that is already finished or aborted")
        try:
            self._file.write(data)
        except OSError as exc:
            raise _os_error("write", self._key, self._path, exc) from exc
        self._size += len(data)

    def finish(self) -> StagedObject:
        if self._staged is not None:
            return self._staged
        if self._file.closed:
            raise ValueError("finish of an upload that was aborted")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            fsync_path(self._path.parent)
        except OSError as exc:
            raise _os_error("write", self._key, self._path, exc) from exc
        self._staged = StagedObject(key=self._key, size=self._size)
        return self._staged

    def abort(self) -> None:
        # A failed flush (disk full) may be why we are aborting; the unlink still matters.
        with contextlib.suppress(OSError):
            self._file.close()
        try:
            self._path.unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error("delete", self._key, self._path, exc) from exc
