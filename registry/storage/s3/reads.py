"""Reading an S3 object back: ranges checked against what the server really served."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from registry.storage.base import READ_CHUNK_BYTES, StorageError
from registry.storage.s3.bucket import S3Bucket

_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+)")


def served_range(response: Mapping[str, Any]) -> tuple[int, int | None]:
    """The first byte and the object size of a GetObject answer, from its Content-Range;
    (0, None) where it has none: the whole object, as a server that ignores a Range
    sends it (HTTP allows that)."""
    match = _CONTENT_RANGE.fullmatch(str(response.get("ContentRange") or ""))
    return (int(match[1]), int(match[2])) if match else (0, None)


class BodyChunks(Iterator[bytes]):
    """Chunks of a GetObject body, at most `limit` bytes in all; closes the connection
    when done, failed or dropped."""

    def __init__(self, body: Any, bucket: S3Bucket, full: str, limit: int | None) -> None:
        self._body: Any = body
        self._bucket = bucket
        self._full = full
        self._left = limit

    def __next__(self) -> bytes:
        if self._body is None or self._left == 0:
            self.close()
            raise StopIteration
        want = READ_CHUNK_BYTES if self._left is None else min(READ_CHUNK_BYTES, self._left)
        try:
            with self._bucket.errors("read", self._full):
                chunk: bytes = self._body.read(want)
        except StorageError:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopIteration
        if self._left is not None:
            self._left -= len(chunk)
        return chunk

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def __del__(self) -> None:
        self.close()
