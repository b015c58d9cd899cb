"""The strict JSON loader: bounded depth without recursion, no NaN/Infinity, exact errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import CodecError, InvalidJSON, InvalidModel
from compress.tensorio.strictjson import (
    DEFAULT_MAX_DEPTH,
    Bounds,
    PairsHook,
    loads,
    nesting_depth,
    past_bounds,
    within_bounds,
)


def reference_depth(value: Any) -> int:
    """Nesting of a parsed value, the obvious recursive way (fine for test-sized values)."""
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


# Strings full of the characters the depth scan must see through.
tricky_text = st.text(alphabet=st.sampled_from(list('[]{}"\\/ab\n\u00e9\U0001f600')), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_depth_scan_agrees_with_the_parsed_structure(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert nesting_depth(text) == reference_depth(value)
    assert loads(text, "f.json", max_depth=64) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('"[[[["', 0),
        ('["\\"[[[", [1]]', 2),  # escaped quote: the string goes on, its bracket is text
        ('["\\\\", [1]]', 2),  # escaped backslash: the next quote closes the string
        ('["\\\\\\"]"]', 1),  # \\ then \": the string is \"], no bracket counts
        ('{"a": {"b": []}}', 3),
        ("", 0),
    ],
)
def test_depth_scan_reads_strings_and_escapes(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


@pytest.mark.parametrize("opener", ["[", '{"k":'])
def test_100000_deep_is_refused_not_a_recursion_error(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * 100_000 + "1" + closer * 100_000
    with pytest.raises(InvalidJSON, match="nested 100000 deep, over the limit of 64") as info:
        loads(text, "adapter_config.json")
    assert info.value.detail.startswith("adapter_config.json is not valid JSON: ")
    assert "fix the program that wrote the file" in info.value.detail


def test_unbalanced_deep_prefix_is_refused_by_depth() -> None:
    # Never closed, and not valid JSON: refused before json could recurse into it.
    with pytest.raises(InvalidJSON, match="nested 50000 deep"):
        loads("[" * 50_000, "f.json")


def test_the_limit_itself_is_allowed() -> None:
    at_limit = "[" * DEFAULT_MAX_DEPTH + "]" * DEFAULT_MAX_DEPTH
    assert nesting_depth(at_limit) == DEFAULT_MAX_DEPTH
    loads(at_limit, "f.json")
    with pytest.raises(InvalidJSON, match="nested 65 deep, over the limit of 64"):
        loads("[" + at_limit + "]", "f.json")
    with pytest.raises(InvalidJSON, match="nested 3 deep, over the limit of 2"):
        loads('{"a": [[]]}', "f.json", max_depth=2)


def test_a_depth_past_pythons_stack_is_still_an_invalid_json() -> None:
    text = "[" * 200_000 + "]" * 200_000
    with pytest.raises(InvalidJSON, match="nested 200000 deep, too deep to parse"):
        loads(text, "f.json", max_depth=10**9)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("NaN", "NaN is not a JSON value"),
        ('{"ratio": Infinity}', "Infinity is not a JSON value"),
        ('[1, -Infinity]', "-Infinity is not a JSON value"),
        ('{"x": {"y": [NaN]}}', "NaN is not a JSON value"),
        ("1e999", "the number 1e999 overflows a 64-bit float to Infinity"),
        ('{"x": -1.5e400}', "the number -1.5e400 overflows"),
    ],
)
def test_non_finite_numbers_are_refused(text: str, cause: str) -> None:
    with pytest.raises(InvalidJSON) as info:
        loads(text, "report.json")
    assert cause in info.value.cause
    assert "write null or a finite number instead" in info.value.detail


def test_finite_extremes_pass() -> None:
    assert loads("[1.7976931348623157e308, -5e-324, 0.0, -0.0]", "f.json")[0] > 1e308


def test_lone_surrogates_are_refused_and_pairs_pass() -> None:
    with pytest.raises(InvalidJSON, match="unpaired surrogate escape"):
        loads('{"name": "a\\ud800b"}', "f.json")
    with pytest.raises(InvalidJSON, match="unpaired surrogate escape"):
        loads('["\\udc00"]', "f.json")
    with pytest.raises(InvalidJSON, match="unpaired surrogate escape"):
        loads('{"\\ud83d": 1}', "f.json")  # in a key
    assert loads('["\\ud83d\\ude00"]', "f.json") == ["\U0001f600"]
    assert loads('["\\\\ud800"]', "f.json") == ["\\ud800"]  # an escaped backslash, then text


def test_syntax_errors_name_the_file_and_position() -> None:
    with pytest.raises(InvalidJSON) as info:
        loads(b"{not json", "config.json")
    assert info.value.detail.startswith("config.json is not valid JSON: Expecting property name")
    assert "line 1 column 2" in info.value.detail


def test_bytes_must_be_utf8() -> None:
    with pytest.raises(InvalidJSON, match=r"not UTF-8 \(invalid start byte at byte 2\)"):
        loads(b'["\xff"]', "f.json")
    assert loads('["\u00e9"]'.encode(), "f.json") == ["\u00e9"]


def test_huge_integers_are_invalid_json_not_a_crash() -> None:
    with pytest.raises(InvalidJSON, match="4300 digits"):
        loads("1" * 5000, "f.json")


def test_a_hook_raising_a_codec_error_passes_through() -> None:
    def refuse(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        raise InvalidModel(f"refused {pairs[0][0]!r}")

    hook: PairsHook = refuse
    with pytest.raises(InvalidModel, match="refused 'a'"):
        loads('{"a": 1}', "f.json", object_pairs_hook=hook)


def test_every_refusal_is_a_codec_error() -> None:
    for text in ["[" * 100, "NaN", "{", '["\\ud800"]']:
        with pytest.raises(CodecError):
            loads(text, "f.json")


@pytest.mark.parametrize(("value", "found"), [
    ({"a": [1, {"b": 10**400}]}, "$.a[1].b: an integer of 401 digits"),
    ({"a": -(2**63)}, "$.a: an integer of 19 digits"),
    ([1.5, float("nan")], "$[1]: nan is not a finite number"),
    ({"a b": {"x" * 9: "y" * 9}}, '$["a b"]: a key of 9 characters, over the limit of 8'),
    ({"k": ["y" * 9]}, "$.k[0]: a string of 9 characters, over the limit of 8"),
    ({"k": list(range(5))}, "$.k: an array of 5 items, over the limit of 4"),
])
def test_past_bounds_names_the_first_value_out_of_bounds(value: Any, found: str) -> None:
    where = past_bounds(value, Bounds(max_string_chars=8, max_items=4))
    assert where is not None
    assert where.startswith(found)


def test_within_bounds_keeps_what_a_float_holds_and_drops_the_rest() -> None:
    document = {"a": [2**63 - 1, -(2**63), True, 1.5, float("inf")], "b": {"c": 10**400}}
    assert past_bounds({"a": [2**63 - 1, -(2**63 - 1), 1e308, "x" * 10**5]}, Bounds()) is None
    assert within_bounds(document) == {"a": [2**63 - 1, None, True, 1.5, None],
                                       "b": {"c": None}}
