"""What a GET of a stored file should answer, from its conditional and range headers.

RFC 9110: `If-None-Match` first (§13.1.2, weak comparison: a `W/` tag matches the same
strong tag, and `*` matches any file that exists), then `Range` (§14.2) unless an
`If-Range` (§13.1.5, strong comparison) names another version. One range is served; a
request for several, or a malformed `Range`, gets the whole file, which the RFC allows
("a server MAY ignore the Range header field"). Pure functions of the header values: the
response is built in registry/infra/downloads.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# bytes=first-last, bytes=first-, bytes=-suffix (one range; whitespace around the parts).
_ONE_RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")
_ENTITY_TAG = re.compile(r'\s*(W/)?("[^"]*")\s*')


@dataclass(frozen=True)
class Whole:
    """200 with the whole file."""


@dataclass(frozen=True)
class NotModified:
    """304: the client's copy is current."""


@dataclass(frozen=True)
class Part:
    """206 with bytes [start, end) of the file."""

    start: int
    end: int

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


@dataclass(frozen=True)
class Unsatisfiable:
    """416: the one range asked for starts past the end of the file."""


Answer = Whole | NotModified | Part | Unsatisfiable


def entity_tags(header: str) -> list[tuple[bool, str]] | None:
    """(weak, opaque tag with its quotes) for each tag of a comma-separated list; None if
    the list is malformed (then the header is ignored, as the RFC lets a server do)."""
    tags = []
    for item in header.split(","):
        if not item.strip():
            continue  # RFC 9110 §5.6.1: empty list elements are allowed and ignored
        match = _ENTITY_TAG.fullmatch(item)
        if match is None:
            return None
        tags.append((match[1] is not None, match[2]))
    return tags


def none_match(header: str, etag: str) -> bool:
    """Whether `If-None-Match: header` matches the strong `etag` (weak comparison)."""
    if header.strip() == "*":
        return True
    tags = entity_tags(header)
    return tags is not None and any(tag == etag for _, tag in tags)


def if_range_matches(header: str, etag: str) -> bool:
    """Whether `If-Range: header` names this version: a strong tag equal to `etag`. A
    weak tag or a date never does (these files carry no Last-Modified)."""
    tags = entity_tags(header)
    return tags is not None and len(tags) == 1 and tags[0] == (False, etag)


def byte_range(header: str, size: int) -> Part | Unsatisfiable | None:
    """The one range `Range: header` asks for, clamped to `size`; None when the header
    is malformed, not in bytes or asks for several ranges (the whole file is sent)."""
    unit, _, ranges = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in ranges:
        return None
    match = _ONE_RANGE.fullmatch(ranges)
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # bytes=-n: the last n bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            return Unsatisfiable()
        return Part(max(0, size - suffix), size)
    first = int(match[1])
    last = int(match[2]) if match[2] else None
    if last is not None and last < first:
        return None  # invalid: the RFC has the header ignored
    if first >= size:
        return Unsatisfiable()
    return Part(first, size if last is None else min(last + 1, size))


def answer(etag: str, size: int, *, if_none_match: str | None, range_: str | None,
           if_range: str | None) -> Answer:
    """What to answer a GET of a file of `size` bytes whose strong ETag is `etag`."""
    if if_none_match is not None and none_match(if_none_match, etag):
        return NotModified()
    if range_ is None:
        return Whole()
    if if_range is not None and not if_range_matches(if_range, etag):
        return Whole()  # the client's part is of another version: send it all
    return byte_range(range_, size) or Whole()
