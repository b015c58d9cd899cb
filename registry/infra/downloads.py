"""Stream a stored file back to a client: whole, in part (`Range`) or not at all (304).

The endpoints return a `BlobResponse`; what it sends is decided when it is sent, from the
request's `If-None-Match`, `Range` and `If-Range` (registry/infra/preconditions.py), so a
resumed download reads only the bytes it lacks from the blob store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from registry.errors import FileNotFound, RangeNotSatisfiable
from registry.infra.preconditions import NotModified, Part, Unsatisfiable, answer
from registry.names import check_filename
from registry.storage.base import BlobStore
from registry.tables import AdapterFile, DatasetFile, ModelFile

OCTETS = "application/octet-stream"
SHA256_HEADER = "X-Content-SHA256"


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
        names = ", ".join(f.filename for f in files) or "no files"
        raise FileNotFound(f"{owner} has no file {filename!r}; it has: {names}")
    return StoredFile(file.filename, file.sha256, file.size)


async def file_response(store: BlobStore, file: StoredFile) -> StreamingResponse:
    return BlobResponse(store, file)


class BlobResponse(StreamingResponse):
    """A stored file, answered as the request's conditional and range headers ask.

    A StreamingResponse to its endpoint (and to the OpenAPI document); the blob is opened
    only when the answer is known, for just the bytes it sends. `Accept-Ranges: bytes`
    and the sha256 `ETag` go with every answer.
    """

    def __init__(self, store: BlobStore, file: StoredFile) -> None:
        super().__init__(iter(()), media_type=OCTETS)
        self.store = store
        self.file = file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chosen = await self._choose(Headers(scope=scope), scope.get("method", "GET"))
        await chosen(scope, receive, send)

    async def _choose(self, request: Headers, method: str) -> Response:
        file, etag = self.file, f'"{self.file.sha256}"'
        common = {"ETag": etag, "Accept-Ranges": "bytes"}
        decided = answer(etag, file.size, if_none_match=request.get("if-none-match"),
                         range_=request.get("range"), if_range=request.get("if-range"))
        if isinstance(decided, NotModified):
            return Response(status_code=304, headers=common)
        if isinstance(decided, Unsatisfiable):
            error = RangeNotSatisfiable(
                f"{file.filename} has {file.size} bytes: the range {request.get('range')!r} "
                "starts past its end; ask for bytes=0- (or drop Range) to get it all",
                size=file.size)
            return JSONResponse(error.body(), status_code=error.status_code,
                                headers={**common, **error.headers()})
        headers = {**common, "Content-Disposition": f'attachment; filename="{file.filename}"'}
        if isinstance(decided, Part):
            start, end, status = decided.start, decided.end, 206
            headers["Content-Range"] = decided.content_range(file.size)
        else:
            start, end, status = 0, file.size, 200
            headers[SHA256_HEADER] = file.sha256  # of the body: only when it is all of it
        headers["Content-Length"] = str(end - start)
        if method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=OCTETS)
        # Opening the blob may be a network round trip (S3): not on the event loop.
        chunks = await run_in_threadpool(self.store.read, file.sha256, start, end)
        return StreamingResponse(chunks, status_code=status, headers=headers,
                                 media_type=OCTETS)

