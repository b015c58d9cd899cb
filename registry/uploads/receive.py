"""Pump an HTTP request body through an UploadPipeline without blocking the event loop."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from registry.errors import InvalidRequest, PayloadTooLarge
from registry.uploads.pipeline import UploadPipeline, UploadResult

# Hand the worker thread about a megabyte at a time: small enough to keep memory low,
# large enough that the thread hand-off costs nothing next to hashing the bytes.
_BATCH_BYTES = 1024 * 1024


def check_declared_length(request: Request, max_bytes: int, filename: str) -> None:
    """Refuse an oversized body from its Content-Length, before reading a byte of it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return  # chunked: the pipeline counts bytes as they arrive
    if not declared.isdigit():
        raise InvalidRequest(f"Content-Length {declared!r} is not a number")
    if int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"{filename!r} is {declared} bytes, over the {max_bytes}-byte limit for this file"
        )


async def receive_upload(request: Request, pipeline: UploadPipeline) -> UploadResult:
    batch = bytearray()
    try:
        async for chunk in request.stream():
            batch += chunk
            if len(batch) >= _BATCH_BYTES:
                await run_in_threadpool(pipeline.feed, bytes(batch))
                batch.clear()
        if batch:
            await run_in_threadpool(pipeline.feed, bytes(batch))
        return await run_in_threadpool(pipeline.finish)
    except BaseException:
        # Covers a client that disconnects midway (ClientDisconnect), a cancelled
        # request and every validation error: the staging object is removed.
        await run_in_threadpool(pipeline.abort)
        raise


__all__ = ["ClientDisconnect", "check_declared_length", "receive_upload"]
