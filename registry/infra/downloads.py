"""Stream a stored file back to a client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from registry.errors import FileNotFound
from registry.names import check_filename
from registry.storage.base import BlobStore
from registry.tables import AdapterFile, DatasetFile, ModelFile


@dataclass(frozen=True)
class StoredFile:
    filename: str
    sha256: str
    size: int


def find_file(files: Sequence[ModelFile | AdapterFile | DatasetFile], filename: str,
              owner: str) -> StoredFile:
    """`filename` among a model's, adapter's or data set's files (`owner` names it in the 404)."""
    check_filename(filename)
    file = next((f for f in files if f.filename == filename), None)
    if file is None:
        raise FileNotFound(f"{owner} has no file {filename!r}; it has "
                           f"{[f.filename for f in files]}")
    return StoredFile(file.filename, file.sha256, file.size)


async def file_response(store: BlobStore, file: StoredFile) -> StreamingResponse:
    # Opening the blob may be a network round trip (S3): not on the event loop.
    chunks = await run_in_threadpool(store.read, file.sha256)
    return blob_response(chunks, file.sha256, file.size, file.filename)


def blob_response(chunks: Iterator[bytes], sha256: str, size: int,
                  filename: str) -> StreamingResponse:
    # A sync iterator: Starlette pulls it in a worker thread, so a slow S3 read does
    # not block the event loop.
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "ETag": f'"{sha256}"',
            "X-Content-SHA256": sha256,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )
