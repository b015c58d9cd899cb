"""Conditional GETs for JSON: a strong `ETag` on every answer, 304 for a matching
`If-None-Match`.

Two ways to name a representation:
- by the registry's change counter (`changes_etag`): for the answers that are a function of
  what the event outbox records (listings of finalized adapters). Every change they can
  show commits an event in its own transaction, and event ids commit in order, so "the
  newest event id" read *before* the page is a version of everything the page shows: a
  matching `If-None-Match` is answered 304 without reading or building the page.
- by the body's digest (`body_etag`): for everything else (drafts, jobs' progress, the
  feed), whose changes do not all write events. It saves the transfer, not the work.

docs/architecture.md, "Conditional GETs", says why the two.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from fastapi import Request, Response, status
from pydantic import BaseModel, TypeAdapter

from registry.infra.preconditions import none_match


def _release() -> str:
    try:
        return metadata.version("deltahub")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "source"


# Part of every change-keyed tag: a new release (which may render the same rows
# differently) must not answer 304 to a tag an older one issued.
_RELEASE = _release()
_CACHE_CONTROL = "no-cache"  # may be stored, but revalidated before every use
_TAG_HEX = 32  # 128 bits of a sha256: collisions are not a practical concern


def changes_etag(request: Request, version: int) -> str:
    """The tag of what `request` reads as of change `version` (the newest event id)."""
    query = "&".join(f"{key}={value}" for key, value in sorted(request.query_params.multi_items()))
    key = f"{_RELEASE}\n{version}\n{request.url.path}\n{query}"
    return f'"c{hashlib.sha256(key.encode()).hexdigest()[:_TAG_HEX]}"'


def body_etag(body: bytes) -> str:
    return f'"b{hashlib.sha256(body).hexdigest()[:_TAG_HEX]}"'


def matches(request: Request, etag: str) -> bool:
    """Whether the request's `If-None-Match` names `etag` (or is `*`)."""
    header = request.headers.get("if-none-match")
    return header is not None and none_match(header, etag)


def not_modified(etag: str) -> Response:
    return Response(status_code=status.HTTP_304_NOT_MODIFIED,
                    headers={"ETag": etag, "Cache-Control": _CACHE_CONTROL})


# Serializes what it is given by its runtime type (a list of models, say).
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def serialized(body: BaseModel | Sequence[BaseModel]) -> bytes:
    """Serialized once: FastAPI would first validate what the route built against the
    route's model again."""
    return (body.model_dump_json(by_alias=True).encode() if isinstance(body, BaseModel)
            else _ANY.dump_json(body, by_alias=True))


def json_answer(request: Request, body: BaseModel | Sequence[BaseModel]) -> Response:
    """`body` tagged by its digest, or 304 when the client holds it already."""
    content = serialized(body)
    return tagged_json(request, content, body_etag(content))


def tagged_json(request: Request, content: bytes, etag: str) -> Response:
    """JSON `content` tagged `etag`, or 304 when the request names that tag."""
    if matches(request, etag):
        return not_modified(etag)
    return Response(content, media_type="application/json",
                    headers={"ETag": etag, "Cache-Control": _CACHE_CONTROL})


class AnswerCache:
    """Bodies of change-tagged answers (`changes_etag`), by tag, in this process.

    A change-tagged body is a function of its tag (that is what lets a 304 skip the
    work), so a poller that does not send `If-None-Match` can be answered from here too:
    every serving replica asking for the same listing between two changes costs one
    token check, not a page read and its serialization. Bounded in bytes, oldest out.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # apps are served by more than one event loop (tests)

    def get(self, etag: str) -> bytes | None:
        with self._lock:
            body = self._bodies.get(etag)
            if body is not None:
                self._bodies.move_to_end(etag)
            return body

    def put(self, etag: str, body: bytes) -> None:
        if len(body) > self.max_bytes // 8:
            return  # one huge page must not push out everything else
        with self._lock:
            if etag in self._bodies:
                return
            self._bodies[etag] = body
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                _, dropped = self._bodies.popitem(last=False)
                self._bytes -= len(dropped)
