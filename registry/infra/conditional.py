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


def json_answer(request: Request, body: BaseModel | Sequence[BaseModel],
                etag: str | None = None) -> Response:
    """`body` serialized once (FastAPI would validate it against the route's model again
    first), tagged (by `etag`, or its digest), or 304 when the client holds it already."""
    content = (body.model_dump_json(by_alias=True).encode() if isinstance(body, BaseModel)
               else _ANY.dump_json(body, by_alias=True))
    tag = etag or body_etag(content)
    if matches(request, tag):
        return not_modified(tag)
    return Response(content, media_type="application/json",
                    headers={"ETag": tag, "Cache-Control": _CACHE_CONTROL})
