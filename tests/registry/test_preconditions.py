"""What a file download answers for each conditional and range header (RFC 9110), as a table."""

from __future__ import annotations

import pytest

from registry.infra.preconditions import (
    Answer,
    NotModified,
    Part,
    Unsatisfiable,
    Whole,
    answer,
)

ETAG = '"' + "ab" * 32 + '"'
OTHER = '"' + "cd" * 32 + '"'
SIZE = 100


@pytest.mark.parametrize(("if_none_match", "expected"), [
    (ETAG, NotModified()),
    (f"{OTHER}, {ETAG}", NotModified()),  # a list: any one matching is enough
    (f" {OTHER} ,, {ETAG} ", NotModified()),  # whitespace and empty elements
    ("*", NotModified()),  # the file exists
    (f"W/{ETAG}", NotModified()),  # If-None-Match compares weakly (§13.1.2)
    (OTHER, Whole()),
    ("ab" * 32, Whole()),  # unquoted: malformed, ignored
    (f"{OTHER}, *", Whole()),  # `*` only alone
])
def test_if_none_match(if_none_match: str, expected: Answer) -> None:
    assert answer(ETAG, SIZE, if_none_match=if_none_match, range_=None,
                  if_range=None) == expected


@pytest.mark.parametrize(("range_", "expected"), [
    ("bytes=0-9", Part(0, 10)),
    ("bytes=10-", Part(10, 100)),
    ("bytes=-7", Part(93, 100)),
    ("bytes=-1000", Part(0, 100)),  # a suffix longer than the file: all of it
    ("bytes=90-1000", Part(90, 100)),  # the end is clamped
    ("bytes=99-99", Part(99, 100)),
    ("BYTES = 5 - 6", Part(5, 7)),  # the unit is case-insensitive; spaces allowed
    ("bytes=100-", Unsatisfiable()),
    ("bytes=100-200", Unsatisfiable()),
    ("bytes=-0", Unsatisfiable()),
    ("bytes=0-9,20-29", Whole()),  # several ranges: the whole file, as the RFC allows
    ("bytes=9-0", Whole()),  # last before first: invalid, ignored
    ("bytes=-", Whole()),
    ("bytes=a-b", Whole()),
    ("items=0-9", Whole()),  # not a unit we serve
])
def test_range(range_: str, expected: Answer) -> None:
    assert answer(ETAG, SIZE, if_none_match=None, range_=range_, if_range=None) == expected


def test_any_range_of_an_empty_file_is_unsatisfiable() -> None:
    for range_ in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        assert answer(ETAG, 0, if_none_match=None, range_=range_,
                      if_range=None) == Unsatisfiable()


@pytest.mark.parametrize(("if_range", "expected"), [
    (ETAG, Part(10, 100)),
    (OTHER, Whole()),  # the client's part is of another version
    (f"W/{ETAG}", Whole()),  # If-Range compares strongly (§13.1.5)
    ("Mon, 07 Dec 2026 10:00:00 GMT", Whole()),  # a date: these files carry none
    (f"{ETAG}, {ETAG}", Whole()),  # one tag only
])
def test_if_range(if_range: str, expected: Answer) -> None:
    assert answer(ETAG, SIZE, if_none_match=None, range_="bytes=10-",
                  if_range=if_range) == expected


def test_if_none_match_comes_before_range_and_if_range_needs_a_range() -> None:
    assert answer(ETAG, SIZE, if_none_match=ETAG, range_="bytes=0-9",
                  if_range=ETAG) == NotModified()
    assert answer(ETAG, SIZE, if_none_match=OTHER, range_="bytes=0-9",
                  if_range=ETAG) == Part(0, 10)
    assert answer(ETAG, SIZE, if_none_match=None, range_=None, if_range=ETAG) == Whole()


def test_content_range() -> None:
    assert Part(0, 10).content_range(100) == "bytes 0-9/100"
