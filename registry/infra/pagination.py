"""Keyset pagination with opaque cursors.

A cursor carries the last id of the page and a fingerprint of the filters, so a token
from one query cannot be replayed against another. Lists are newest first (id desc),
or ordered by a value and then newest first; the cursor then carries the last row's
value too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from registry.errors import InvalidPageToken, InvalidRequest
from registry.names import MAX_ID
from registry.settings import Settings

T = TypeVar("T")
# Ours are ~60 characters of unpadded base64url; anything else was not issued here. The
# OpenAPI document states both (registry/infra/openapi.py).
MAX_PAGE_TOKEN_CHARS = 256
CURSOR_PATTERN = "[A-Za-z0-9_-]*"
_CURSOR = re.compile(CURSOR_PATTERN)
_NOT_OURS = ("page_token is not one this server issued; pass the next_page_token of the "
             "previous page unchanged")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str | None


def filters_fingerprint(filters: Mapping[str, object]) -> str:
    canonical = json.dumps(sorted((k, v) for k, v in filters.items() if v is not None),
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_cursor(last_id: int, filters: Mapping[str, object],
                  rank: float | None = None) -> str:
    """`rank`: the last row's sort value, for listings ordered by one (then by id)."""
    data: dict[str, object] = {"id": last_id, "f": filters_fingerprint(filters)}
    if rank is not None:
        data["r"] = rank
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, filters: Mapping[str, object]) -> int:
    return decode_ranked_cursor(token, filters)[0]


def decode_ranked_cursor(token: str, filters: Mapping[str, object]) -> tuple[int, float | None]:
    """The last id and, in a listing ordered by a value, the last row's value (None: the
    row had none, and the page ended among the rows without one)."""
    try:
        if len(token) > MAX_PAGE_TOKEN_CHARS or not _CURSOR.fullmatch(token):
            raise ValueError("not one of ours")
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        last_id, fingerprint, rank = data["id"], data["f"], data.get("r")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidPageToken(_NOT_OURS) from exc
    # bool is an int to Python, and an id past the column's range is no id at all.
    if type(last_id) is not int or not 0 < last_id <= MAX_ID or type(fingerprint) is not str:
        raise InvalidPageToken(_NOT_OURS)
    if rank is not None and (type(rank) not in (int, float) or not math.isfinite(rank)):
        raise InvalidPageToken(_NOT_OURS)
    if fingerprint != filters_fingerprint(filters):
        raise InvalidPageToken(
            "page_token belongs to a query with other filters; repeat the same filters "
            "or start again without a page_token"
        )
    return last_id, None if rank is None else float(rank)


@dataclass(frozen=True)
class PageRequest:
    """A listing's page size, where it resumes, and the filters its cursor is bound to."""

    size: int
    after_id: int | None
    filters: Mapping[str, object]
    after_rank: float | None = None  # with after_id, in a listing ordered by a value

    @property
    def fetch(self) -> int:
        return self.size + 1  # one more than shown tells whether another page follows

    def page(self, rows: list[T], key: Callable[[T], int],
             rank: Callable[[T], float | None] | None = None) -> Page[T]:
        shown = rows[: self.size]
        if len(rows) <= self.size:
            return Page(shown, None)
        last = shown[-1]
        return Page(shown, encode_cursor(key(last), self.filters,
                                         rank(last) if rank is not None else None))


def page_request(settings: Settings, limit: int | None, page_token: str | None,
                 filters: Mapping[str, object]) -> PageRequest:
    size = check_limit(limit, settings.DEFAULT_PAGE_SIZE, settings.MAX_PAGE_SIZE)
    if not page_token:
        return PageRequest(size, None, filters)
    after, rank = decode_ranked_cursor(page_token, filters)
    return PageRequest(size, after, filters, rank)


def check_limit(limit: int | None, default: int, cap: int,
                further: str = "use page_token to fetch further pages") -> int:
    """`further`: how this listing's next page is asked for."""
    if limit is None:
        return default
    if limit < 1 or limit > cap:
        raise InvalidRequest(f"limit must be between 1 and {cap}, got {limit}; {further}")
    return limit
