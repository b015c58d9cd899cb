"""What a name may be: model and adapter names, aliases, and file names.

Names end up in URLs, in storage listings and on disk when pulled, so they are
restricted to a small safe alphabet and checked before anything else happens.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from registry.errors import InvalidFilename, InvalidName

# Matched with fullmatch: `$` would also accept a trailing newline.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
FILENAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}"
_NAME = re.compile(NAME_PATTERN)
_FILENAME = re.compile(FILENAME_PATTERN)
# ASCII digits only: str.isdigit() also accepts '²' and '١', which int() then rejects
# or reads as another number.
_ID = re.compile(r"[0-9]+")
# Ids are 32-bit integer columns; a larger number cannot be one (and PostgreSQL would
# refuse to compare with it rather than find nothing).
MAX_ID = 2**31 - 1


def is_id(value: str) -> bool:
    """Whether a reference is an id (ASCII digits) rather than a name."""
    return _ID.fullmatch(value) is not None


def parse_id(value: str) -> int | None:
    """The id `value` spells, or None when it is not a number any row can have."""
    if not is_id(value):
        return None
    number = int(value)
    return number if 0 < number <= MAX_ID else None


def check_name(value: str, what: str = "name") -> str:
    if not _NAME.fullmatch(value) or ".." in value or is_id(value):
        raise InvalidName(
            f"{what} {value!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..', and not only digits "
            "(those are ids), e.g. 'llama2-7b'"
        )
    return value


def check_filename(value: str) -> str:
    if not _FILENAME.fullmatch(value) or ".." in value:
        raise InvalidFilename(
            f"file name {value!r} is not allowed: a plain file name of letters, digits, '.', "
            "'_' or '-' (no directories, '..', backslashes, '%' escapes or control characters), "
            "e.g. 'model-00001-of-00002.safetensors'"
        )
    return value


# Suggestions for an unknown name: at most this many, and no weaker than difflib's usual
# similarity cut-off (0.6: 'tiny-lama' finds 'tiny-llama', 'gpt2' does not find 'llama').
MAX_SUGGESTIONS = 3
_SIMILARITY_CUTOFF = 0.6


def close_matches(name: str, candidates: Iterable[str]) -> list[str]:
    """Up to MAX_SUGGESTIONS of `candidates` that `name` may have meant, best first.

    Compared case-insensitively (`Tiny-Llama` finds `tiny-llama`). The caller bounds
    `candidates`; nothing here reads the database.
    """
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        if candidate != name:
            by_folded.setdefault(candidate.lower(), candidate)
    found = difflib.get_close_matches(name.lower(), list(by_folded), n=MAX_SUGGESTIONS,
                                      cutoff=_SIMILARITY_CUTOFF)
    return [by_folded[f] for f in found]


def did_you_mean(matches: list[str]) -> str:
    """The sentence an error message gains from `matches` ('' without any)."""
    if not matches:
        return ""
    return f"; did you mean {' or '.join(repr(m) for m in matches)}?"
