"""Stream a stored file back to a client."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from registry.storage.base import BlobStore


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
