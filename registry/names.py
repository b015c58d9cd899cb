"""What a name may be: model and adapter names, aliases, and file names.

Names end up in URLs, in storage listings and on disk when pulled, so they are
restricted to a small safe alphabet and checked before anything else happens.
"""

from __future__ import annotations

import re

from registry.errors import InvalidFilename, InvalidName

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def check_name(value: str, what: str = "name") -> str:
    if not _NAME.match(value) or ".." in value or value.isdigit():
        raise InvalidName(
            f"{what} {value!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..', and not only digits "
            "(those are ids), e.g. 'llama2-7b'"
        )
    return value


def check_filename(value: str) -> str:
    if not _FILENAME.match(value) or ".." in value:
        raise InvalidFilename(
            f"file name {value!r} is not allowed: a plain file name of letters, digits, '.', "
            "'_' or '-' (no directories, '..', backslashes, '%' escapes or control characters), "
            "e.g. 'model-00001-of-00002.safetensors'"
        )
    return value
