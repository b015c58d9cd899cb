"""A download's bytes so far, kept on disk so that a later try or run continues them.

The part file lies beside the destination, hidden, named by the content it is meant to
become (`.<name>.<sha256 prefix>.part`), so the bytes of one version are never
continued with those of another; the server's `If-Range` check covers the rest. It
becomes the destination only once its sha256 is the one expected. A lock (flock) keeps
two downloads of the same file from writing it at once: the second one does without.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from registry.client.errors import ChecksumMismatch
from registry.client.files import CHUNK_BYTES


def part_path(dest: Path, sha256: str) -> Path:
    return dest.with_name(f".{dest.name}.{sha256[:16]}.part")


class PartFile:
    """The part file of one download, open and locked; `size` bytes so far."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._file = os.fdopen(fd, "r+b")
        self._digest = hashlib.sha256()
        self.size = 0
        while chunk := self._file.read(CHUNK_BYTES):  # the bytes an earlier try left
            self._digest.update(chunk)
            self.size += len(chunk)

    @classmethod
    @contextlib.contextmanager
    def open(cls, dest: Path, sha256: str) -> Iterator[PartFile | None]:
        """The part file for `dest`, created if new; None while another download holds it."""
        path = part_path(dest, sha256)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for dest
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield None
            return
        part = cls(path, fd)
        try:
            yield part
        finally:
            if part.size == 0:
                path.unlink(missing_ok=True)  # nothing worth keeping for a later try
            part._file.close()  # releases the lock

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def restart(self) -> int:
        """Throw the bytes so far away (the server sends the whole file); how many."""
        dropped = self.size
        self._file.seek(0)
        self._file.truncate()
        self._digest = hashlib.sha256()
        self.size = 0
        return dropped

    def finish(self, dest: Path, sha256: str, url: str) -> None:
        """Make the part `dest` if its sha256 is `sha256`; otherwise drop it and raise."""
        self._file.flush()
        got = self.hexdigest()
        if got != sha256:
            self.path.unlink(missing_ok=True)  # wrong bytes are not worth continuing
            raise ChecksumMismatch(dest.name, got, sha256, url)
        self.path.replace(dest)  # while still locked: no other download reopens it first
