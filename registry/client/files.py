"""Files on the client's disk: their sha256, upload bodies, and downloads that land whole."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from registry.client.errors import ChecksumMismatch

CHUNK_BYTES = 1024 * 1024

Advance = Callable[[int], None]  # called with the number of bytes just moved


def sha256_of(path: Path, advance: Advance | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            if advance:
                advance(len(chunk))
    return digest.hexdigest()


def holds(path: Path, sha256: str) -> bool:
    """Whether `path` is a file whose bytes hash to `sha256` (then there is nothing to get)."""
    return path.is_file() and sha256_of(path) == sha256


def read_chunks(path: Path, advance: Advance | None = None) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk
            if advance:
                advance(len(chunk))


def write_checked(dest: Path, chunks: Iterable[bytes], sha256: str, url: str,
                  advance: Advance | None = None) -> None:
    """Write `chunks` to `dest` if their sha256 is `sha256`; `dest` appears only when whole.

    Any error, a wrong checksum included, leaves `dest` as it was.
    """
    digest = hashlib.sha256()
    fd, tmp = _create_beside(dest)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                if advance:
                    advance(len(chunk))
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(dest.name, digest.hexdigest(), sha256, url)
        Path(tmp).replace(dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _create_beside(dest: Path) -> tuple[int, str]:
    """A new file next to `dest`, exclusive, with the mode the user's umask gives any new
    file (mkstemp's 0600 would make pulled files private to their puller)."""
    while True:
        tmp = str(dest.parent / f".{dest.name}.{secrets.token_hex(6)}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
