"""Refuse a request path whose decoded form holds a control character, as the name it is.

Starlette matches routes with `^...$`, and `$` also matches before a final newline, so
`PUT /datasets/x/files/x.txt%0A` would route as `x.txt` and store it; a path parameter
never sees the newline to refuse it. No name or file name may hold a control character
(registry/names.py), so any path holding one is answered here, before routing, with the
422 its segment would get as a name (`InvalidName`) or a file name (`InvalidFilename`).
"""

from __future__ import annotations

import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.errors import APIError
from registry.names import check_filename, check_name

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def path_refusal(path: str) -> APIError | None:
    """The error for a decoded request path holding a control character (None: it holds
    none). A segment after `files` is a file name; any other is a name."""
    segments = path.split("/")
    for index, segment in enumerate(segments):
        if _CONTROL.search(segment) is None:
            continue
        try:  # both refuse any control character
            if index > 0 and segments[index - 1] == "files":
                check_filename(segment)
            else:
                check_name(segment, "name in the path")
        except APIError as exc:
            return exc
    return None


class PathNameMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = path_refusal(scope["path"]) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        response = JSONResponse(refusal.body(), status_code=refusal.status_code,
                                headers=refusal.headers())
        await response(scope, receive, send)
