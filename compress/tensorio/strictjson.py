"""Parse JSON that a client sent, refusing what would crash or poison the server.

Python's `json` recurses once per nesting level, so `[[[[...` a few thousand deep raises
RecursionError (a 500, not a 4xx). It also reads `NaN`, `Infinity` and `-Infinity` (not
JSON at all) and numbers such as `1e999` that overflow to infinity: PostgreSQL's JSON
column refuses them, SQLite stores them, and every later response that includes them
fails to render. A lone surrogate escape (`"\\ud800"`) parses to a string that cannot be
encoded as UTF-8 again, so it fails the same way.

`loads` measures the nesting depth first, in linear time and without recursion, and
parses only what is within the limit; every refusal is an `InvalidJSON` naming the limit
or the value that broke it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from compress.errors import InvalidJSON

# No config, index, report or safetensors header nests deeper than a handful of levels.
DEFAULT_MAX_DEPTH = 64

PairsHook = Callable[[list[tuple[str, Any]]], Any]

# A string once its escapes are gone. The closing quote is optional so that an
# unterminated string swallows the rest of the text, and its brackets with it.
_STRING = re.compile(r'"[^"]*"?')
# Every byte but the four brackets, to delete; and each bracket's step in depth.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1
# Only a document with such an escape can hold a lone surrogate (see _check_unicode).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

_NON_FINITE_ADVICE = ("write null or a finite number instead (json.dump(..., allow_nan=False) "
                      "catches this when the file is written)")


class _NonFinite(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, ignoring brackets in strings.

    A few passes in C (replace, substitute, translate, a running sum): linear in the text,
    no recursion, whatever the input (valid JSON or not).
    """
    # Escapes first, left to right as JSON reads them: escaped backslashes, then escaped
    # quotes, so that every quote left over opens or closes a string. (A backslash outside
    # a string is invalid JSON: `json` stops there, before any miscount could matter.)
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    outside = _STRING.sub("", unescaped)
    brackets = outside.encode("utf-8", "ignore").translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(data: bytes | str, source: str, *, max_depth: int = DEFAULT_MAX_DEPTH,
          object_pairs_hook: PairsHook | None = None) -> Any:
    """Parse `data` (UTF-8 bytes or text) as strict JSON; `source` names it in errors.

    `object_pairs_hook` is passed to `json.loads` (e.g. to refuse duplicate keys). It
    must return JSON-serialisable objects, and should raise a CodecError (which passes
    through unchanged) rather than a ValueError (which becomes "not valid JSON").
    """
    text = _decode(data, source)
    depth = nesting_depth(text)
    if depth > max_depth:
        raise InvalidJSON(source, f"nested {depth} deep, over the limit of {max_depth}",
                          "no config, index or report needs that; fix the program that "
                          "wrote the file")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                           object_pairs_hook=object_pairs_hook)
    except _NonFinite as exc:
        raise InvalidJSON(source, exc.cause, _NON_FINITE_ADVICE) from exc
    except RecursionError as exc:  # only when a caller allows a depth past Python's stack
        raise InvalidJSON(source, f"nested {depth} deep, too deep to parse",
                          "fix the program that wrote the file") from exc
    except ValueError as exc:  # JSONDecodeError, and int() past its 4300-digit limit
        raise InvalidJSON(source, str(exc), "fix the file and send it again") from exc
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(value, source)
    return value


def _decode(data: bytes | str, source: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJSON(source, f"not UTF-8 ({exc.reason} at byte {exc.start})",
                          "save the file as UTF-8") from exc


def _refuse_constant(token: str) -> Any:
    raise _NonFinite(f"{token} is not a JSON value")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _NonFinite(f"the number {token[:40]} overflows a 64-bit float to Infinity")
    return value


def _check_unicode(value: Any, source: str) -> None:
    # Serialising is the cheapest exact check: it visits every key and string in C, and
    # the depth is already bounded, so its recursion is too.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJSON(source, "a string holds an unpaired surrogate escape such as "
                          "\\ud800, which is not Unicode",
                          "write the character itself, or a complete surrogate pair") from exc
