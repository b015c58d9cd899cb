"""Every repository path that the code's comments and docstrings or the docs name exists.

A path is a token starting with one of the checkout's top-level folders (`registry/`,
`tests/`, `docs/`, ...), as in `registry/jobs/runner.py`; a `::name` after it is not part
of it. A glob (`compress/bitdelta/distill*.py`) must match at least one file, and a
dotted module attribute (`registry/jobs/inputs.open_model`) names the module's file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("registry", "compress", "kernels", "tests", "benchmarks", "docs", "migrations")
SCANNED_CODE = ("registry", "compress", "kernels", "tests", "benchmarks")
# Not after a letter, a slash or a dot (URLs, API routes like /models/x/compress, longer
# paths), nor after a colon (URL schemes).
PATH = re.compile(r"(?<![\w/.:*-])((?:" + "|".join(FOLDERS) + r")/[\w./*-]*)")
# Tokens that look like paths and are not: say what each one is.
NOT_PATHS = {
    "compress/read",  # the compress-to-read time ratio in benchmarks/bitdelta_bench.py
}


def scanned_files() -> list[Path]:
    """The code and the docs, less this file: its examples name missing paths on purpose."""
    code = [p for folder in SCANNED_CODE for p in sorted((ROOT / folder).rglob("*.py"))
            if p != Path(__file__).resolve()]
    return [*code, ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def named_paths(text: str) -> Iterator[tuple[int, str]]:
    """(line number, path) of each path-like token in the text."""
    for number, line in enumerate(text.splitlines(), 1):
        for match in PATH.finditer(line):
            token = match.group(1).rstrip(".")  # a path that ends a sentence
            if token not in NOT_PATHS:
                yield number, token


def exists(token: str) -> bool:
    if "*" in token:
        return any(ROOT.glob(token))
    if (ROOT / token).exists():
        return True
    module, _, attribute = token.rpartition(".")
    return attribute.isidentifier() and (ROOT / f"{module}.py").is_file()


def test_every_path_named_exists() -> None:
    stale = [f"{file.relative_to(ROOT)}:{number}: {token}"
             for file in scanned_files()
             for number, token in named_paths(file.read_text(encoding="utf-8"))
             if not exists(token)]
    assert stale == []


def test_the_scan_finds_paths_and_only_paths() -> None:
    text = ("see registry/jobs/runner.py::run_job and `tests/registry/`, not\n"
            "https://example.org/registry/x.py, /models/m/compress or compress/read.")
    assert list(named_paths(text)) == [(1, "registry/jobs/runner.py"), (1, "tests/registry/")]
    assert not exists("tests/registry/test_nothing_here.py")
    assert exists("compress/bitdelta/distill*.py")
    assert not exists("compress/bitdelta/nothing*.py")
    assert exists("registry/jobs/inputs.open_model")
    assert not exists("registry/jobs/nothing.open_model")
