"""The rules the OpenAPI document states as JSON Schema patterns: names, references, and
the file names each owner takes.

The name rules restate the checks in registry/names.py around its patterns.
registry/uploads/rules.py decides which files a model, an adapter or a data set takes,
from the formats' own lists (compress/filenames.py, compress/modeling/data.py). The
document states the same sets, built from the same lists, so a name it calls valid is
never refused for its kind (415 `UnsupportedFile`, or 422 when a push declares it);
tests/registry/test_openapi.py holds each pattern to the function that decides.
"""

from __future__ import annotations

import re

from compress.filenames import (
    ADAPTER_FILES,
    CONFIG_FILE,
    DELTA_INDEX,
    DELTA_STEM,
    MODEL_CARD,
    MODEL_FILE_SUFFIXES,
    PICTURE_SUFFIX,
    REPORT_FILE,
)
from compress.modeling.data import DataKind
from registry.names import FILENAME_PATTERN, NAME_PATTERN

# ECMA-262 patterns: `$` is the end of the input.
_NO_DOUBLE_DOT = r"(?!.*\.\.)"
_N = f"(?:{NAME_PATTERN})"
# check_name: and not only digits, which would read as an id.
NAME_RULE = rf"^{_NO_DOUBLE_DOT}(?![0-9]+$){_N}$"
# A model by name, or by id: any run of ASCII digits (one no row has is just not found).
MODEL_REF_RULE = rf"^(?:[0-9]+|{_NO_DOUBLE_DOT}{_N})$"
# <id>, <name>, <name>@<version> or <name>:<alias> (adapters.service.get_adapter).
ADAPTER_REF_RULE = (rf"^{_NO_DOUBLE_DOT}(?:{_N}|(?![0-9]+@){_N}@[0-9]+"
                    rf"|(?![0-9]+:){_N}:(?![0-9]+$){_N})$")
FILENAME_RULE = rf"^{_NO_DOUBLE_DOT}(?:{FILENAME_PATTERN})$"


def _literal(text: str) -> str:
    return text.replace(".", r"\.")


def _any_case(suffix: str) -> str:
    # JSON Schema patterns take no flags: a data set's suffix is matched in any case.
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else _literal(c)
                   for c in suffix)


def _ending_in(suffixes: list[str]) -> str:
    """A file name (check_filename) that ends in one of `suffixes` (already patterns)."""
    return rf"^{_NO_DOUBLE_DOT}(?=.*(?:{'|'.join(suffixes)})$)(?:{FILENAME_PATTERN})$"


# compress.filenames.is_model_file: one of the suffixes, as written.
MODEL_FILE_RULE = _ending_in([_literal(s) for s in MODEL_FILE_SUFFIXES])
# compress.modeling.data.data_kind: the suffix in any case.
DATASET_FILE_RULE = _ending_in([_any_case(kind.value) for kind in DataKind])
# Either kind's files (is_adapter_file, is_delta_file) and the codec's report and
# pictures (is_report_file). Which kind takes which is the adapter's state, not the name's.
_DELTA_SHARD = rf"{DELTA_STEM}(?:-[0-9]{{5}}-of-[0-9]{{5}})?\.safetensors"
_ADAPTER_NAMES = sorted({*ADAPTER_FILES, CONFIG_FILE, DELTA_INDEX, REPORT_FILE, MODEL_CARD})
ADAPTER_FILE_RULE = (rf"^{_NO_DOUBLE_DOT}(?:{'|'.join(_literal(n) for n in _ADAPTER_NAMES)}"
                     rf"|{_DELTA_SHARD}|(?=.*{_literal(PICTURE_SUFFIX)}$)(?:{FILENAME_PATTERN}))$")


def _longest_match(pattern: str, limit: int = 1024) -> int:
    """The length of the longest run of one letter that `pattern` admits.

    Asked of the pattern itself, so the bound follows registry/names.py; one letter
    suffices because the names' repeated class takes letters.
    """
    compiled = re.compile(pattern)
    longest = max(n for n in range(1, limit + 1) if compiled.fullmatch("a" * n))
    if longest == limit:
        raise ValueError(f"{pattern!r} admits names of {limit} characters or more")
    return longest


# References have no bound of their own: an id or a version may have any number of digits.
_MAX_FILENAME = _longest_match(FILENAME_PATTERN)
MAX_LENGTHS = {NAME_RULE: _longest_match(NAME_PATTERN), FILENAME_RULE: _MAX_FILENAME,
               MODEL_FILE_RULE: _MAX_FILENAME, ADAPTER_FILE_RULE: _MAX_FILENAME,
               DATASET_FILE_RULE: _MAX_FILENAME}
