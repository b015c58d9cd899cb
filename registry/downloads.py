"""Stream a stored file back to a client."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.responses import StreamingResponse

from registry.errors import FileNotFound
from registry.names import check_filename
from registry.storage.base import BlobStore
from registry.tables import AdapterFile, ModelFile


def file_response(store: BlobStore, files: Sequence[ModelFile | AdapterFile], filename: str,
                  owner: str) -> StreamingResponse:
    """Stream `filename` of a model or adapter (`owner` names it in the 404)."""
    check_filename(filename)
    file = next((f for f in files if f.filename == filename), None)
    if file is None:
        raise FileNotFound(f"{owner} has no file {filename!r}; it has "
                           f"{[f.filename for f in files]}")
    return blob_response(store, file.sha256, file.size, filename)


def blob_response(store: BlobStore, sha256: str, size: int, filename: str) -> StreamingResponse:
    # A sync iterator: Starlette pulls it in a worker thread, so a slow S3 read does
    # not block the event loop.
    return StreamingResponse(
        store.read(sha256),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(size),
            "ETag": f'"{sha256}"',
            "X-Content-SHA256": sha256,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )
