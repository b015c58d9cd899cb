"""Pump an HTTP request body through an UploadPipeline without blocking the event loop.

A client that stops sending holds its connection and a staging object for as long as
the server waits, so the wait for each next chunk is bounded: a body that goes quiet for
the idle timeout is dropped (408) and its staging object removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import anyio
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from registry.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from registry.names import is_id
from registry.uploads.pipeline import UploadPipeline, UploadResult

# Hand the worker thread about a megabyte at a time: small enough to keep memory low,
# large enough that the thread hand-off costs nothing next to hashing the bytes.
_BATCH_BYTES = 1024 * 1024
# Aborts of failed uploads: a file unlink, or one S3 call bounded by its own timeouts.
_ABORTS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="upload-abort")


def check_declared_length(request: Request, max_bytes: int, filename: str) -> None:
    """Refuse an oversized body from its Content-Length, before reading a byte of it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return  # chunked: the pipeline counts bytes as they arrive
    if not is_id(declared):  # ASCII digits only (str.isdigit() takes "²")
        raise InvalidRequest(f"Content-Length {declared!r} is not a number")
    if int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"{filename!r} is {declared} bytes, over the {max_bytes}-byte limit for this file"
        )


async def receive_upload(chunks: AsyncGenerator[bytes, None], pipeline: UploadPipeline, *,
                         idle_timeout_s: float | None = None) -> UploadResult:
    """Stream `chunks` (a request body, or any other source) into `pipeline` and finish it.

    Any failure aborts the pipeline. `idle_timeout_s` bounds the wait for each next
    chunk (None: no bound); a source that stalls for longer raises RequestTimeout.
    """
    batch = bytearray()
    received = 0
    try:
        while (chunk := await _next_chunk(chunks, idle_timeout_s, received)) is not None:
            received += len(chunk)
            batch += chunk
            # The first bytes go to the pipeline at once: a bad header or a pickle is
            # refused on the chunk that shows it, not a megabyte later.
            if len(batch) >= _BATCH_BYTES or received == len(chunk):
                await run_in_threadpool(pipeline.feed, bytes(batch))
                batch.clear()
        if batch:
            await run_in_threadpool(pipeline.feed, bytes(batch))
        return await run_in_threadpool(pipeline.finish)
    except BaseException:
        # Covers a client that disconnects midway (ClientDisconnect), one that stalls
        # (RequestTimeout), a cancelled request and every validation error: the staging
        # object is removed.
        await _abort(pipeline)
        raise
    finally:
        # A validation error leaves the body generator suspended mid-stream; close it
        # now rather than whenever the garbage collector finalizes it.
        await chunks.aclose()


async def _abort(pipeline: UploadPipeline) -> None:
    """`pipeline.abort()` in a thread, seen through to its end even if we are cancelled.

    Shielded, because inside a cancelled scope every await is cancelled too, and the abort
    would never start. anyio's shield holds off anyio's cancel scopes but not a bare
    asyncio cancel, which is how uvicorn ends the requests still running when a graceful
    shutdown runs out of time (SHUTDOWN_TIMEOUT_SECONDS): then the event loop waits here
    for the abort already under way, rather than let the process exit with the staging
    object still in place.
    """
    running = _ABORTS.submit(pipeline.abort)
    try:
        with anyio.CancelScope(shield=True):
            await asyncio.wrap_future(running)
    except asyncio.CancelledError:
        running.result()  # blocks the loop, on the way out only
        raise


async def _next_chunk(chunks: AsyncIterator[bytes], idle_timeout_s: float | None,
                      received: int) -> bytes | None:
    """The next piece of the body, or None at its end.

    The deadline covers only this await, never a `yield` (a cancel scope must not span
    one), and never the pipeline's own work on a chunk: a slow disk is not an idle client.
    """
    try:
        with anyio.fail_after(idle_timeout_s):
            return await anext(chunks, None)
    except TimeoutError:
        raise RequestTimeout(
            f"no byte of the body arrived for {idle_timeout_s:g} s (after {received} bytes); "
            "the upload was dropped and nothing was stored. Send the file again on a "
            "steady connection"
        ) from None


__all__ = ["ClientDisconnect", "check_declared_length", "receive_upload"]
