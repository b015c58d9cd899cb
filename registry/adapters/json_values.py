"""JSON values as a pushed document holds them, narrowed leniently: a value of the wrong
type reads as None (or empty), never an error (registry/adapters/quality.py)."""

from __future__ import annotations

import math

# A JSON object as `json.loads` gives it: each reader narrows what it takes out of one.
JSONObject = dict[str, object]


def finite(value: object) -> float | None:
    """`value` as a float when it is a finite JSON number (a bool is not one), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer no float holds
        return None
    return number if math.isfinite(number) else None


def integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def boolean(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def json_object(value: object) -> JSONObject:
    return value if isinstance(value, dict) else {}


def json_objects(value: object) -> list[JSONObject] | None:
    """A list's objects (anything else in it skipped); None when `value` is no list."""
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else None
