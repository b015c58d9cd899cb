"""Refuse oversized request bodies, declared or chunked, before the app buffers them.

File uploads are exempt: they stream through the upload pipeline, which applies the
per-file limits itself while hashing.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_UPLOAD_PATH = re.compile(r"^/(models|adapters|datasets)/[^/]+/files/")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"] == "PUT"
                                       and _UPLOAD_PATH.match(scope["path"])):
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside FastAPI's body parsing, which passes HTTPException
                    # through (anything else becomes a 400) to the app's error handler.
                    raise HTTPException(413, (
                        f"request body is over the {self.max_bytes}-byte limit for this "
                        "endpoint; files go to PUT .../files/<filename>"))
            return message

        await self.app(scope, limited_receive, send)
