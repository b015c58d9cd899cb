"""Parse JSON that a client sent, refusing what would crash or poison the server.

`loads` bounds nesting without recursion and refuses NaN/Infinity, overflowing numbers and
lone surrogates with `InvalidJSON`; `past_bounds` / `within_bounds` handle values a reader
cannot (huge integers, huge names). See docs/codecs.md, "Reading and writing models".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
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


# The largest integer magnitude a client's JSON may hold where it is checked (a signed
# 64-bit integer: what PostgreSQL's bigint and NumPy hold). JSON itself sets no bound, and
# Python parses 4,000 digits happily, but `float()` and `math.isfinite` raise
# OverflowError past 1.8e308, so every page or sort that reads such a number fails.
MAX_INTEGER = 2**63 - 1
# How much of a key a path quotes.
_PATH_KEY_CHARS = 40


@dataclass(frozen=True)
class Bounds:
    """What a parsed document may hold beyond valid JSON (None: no bound)."""

    max_string_chars: int | None = None  # every string and object key
    max_items: int | None = None  # every array and object
    max_integer: int = MAX_INTEGER


def past_bounds(value: Any, bounds: Bounds) -> str | None:
    """Where `value` first breaks `bounds` and how (`$.a.b[3]: ...`), or None.

    Iterative, so any depth is walked without recursion; a path is spelled out only for
    the value that breaks a bound.
    """
    stack: list[tuple[Any, _Where]] = [(value, None)]
    while stack:
        item, where = stack.pop()
        if why := _why_past(item, bounds):
            return f"{_path(where)}: {why}"
        if isinstance(item, dict):
            for key in item:
                if (bounds.max_string_chars is not None
                        and len(key) > bounds.max_string_chars):
                    return (f"{_path(where)}: a key of {len(key)} characters, over the "
                            f"limit of {bounds.max_string_chars}")
            stack.extend((child, (where, key)) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((item[i], (where, i)) for i in range(len(item) - 1, -1, -1))
    return None


def within_bounds(value: Any, max_integer: int = MAX_INTEGER) -> Any:
    """A copy of `value` with every number that no float can hold (an integer past
    `max_integer`, NaN, an infinity) replaced by None: a document stored before its numbers
    were checked, made safe to read."""
    if isinstance(value, dict):
        return {key: within_bounds(child, max_integer) for key, child in value.items()}
    if isinstance(value, list):
        return [within_bounds(child, max_integer) for child in value]
    return None if _number_past(value, max_integer) else value


# A value's place: None for the document, else (the parent's place, key or index).
_Where = tuple[Any, str | int] | None


def _number_past(value: Any, max_integer: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) > max_integer
    return isinstance(value, float) and not math.isfinite(value)


def _why_past(value: Any, bounds: Bounds) -> str | None:
    if _number_past(value, bounds.max_integer):
        if isinstance(value, float):
            return f"{value} is not a finite number"
        return (f"an integer of {len(str(abs(value)))} digits, past the limit of "
                f"±{bounds.max_integer}")
    if isinstance(value, str):
        limit = bounds.max_string_chars
        if limit is not None and len(value) > limit:
            return f"a string of {len(value)} characters, over the limit of {limit}"
    elif isinstance(value, list | dict):
        limit = bounds.max_items
        if limit is not None and len(value) > limit:
            what = "an array" if isinstance(value, list) else "an object"
            return f"{what} of {len(value)} items, over the limit of {limit}"
    return None


def _path(where: _Where) -> str:
    parts: list[str] = []
    while where is not None:
        where, step = where
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _IDENTIFIER.fullmatch(step):
            parts.append(f".{step}")
        else:
            quoted = json.dumps(step[:_PATH_KEY_CHARS] + ("…" if len(step) > _PATH_KEY_CHARS
                                                          else ""), ensure_ascii=True)
            parts.append(f"[{quoted}]")
    return "$" + "".join(reversed(parts))


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
