"""How the suite shares code: helpers in helpers modules and conftests, fixtures through
conftests and the root conftest's pytest_plugins; never one test module imported by
another (pytest would collect its tests twice over, and its private names leak)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
NOQA_FIXTURE = re.compile(r"#\s*noqa:[^#]*\bF(401|811)\b")


def imported_modules(source: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def test_no_module_of_the_suite_imports_a_test_module() -> None:
    found = [f"{path.relative_to(TESTS)}: {module}"
             for path in sorted(TESTS.rglob("*.py"))
             for module in imported_modules(path.read_text(encoding="utf-8"))
             if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_")]
    assert found == []


def test_fixtures_are_not_imported_past_the_linter() -> None:
    """An imported fixture needs `noqa: F401` (and F811 where a test takes it): register its
    module in tests/conftest.py's pytest_plugins instead."""
    found = [f"{path.relative_to(TESTS)}:{number}"
             for path in sorted(TESTS.rglob("*.py")) if path != Path(__file__).resolve()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if NOQA_FIXTURE.search(line)]
    assert found == []


def test_the_checks_see_what_they_look_for() -> None:
    assert imported_modules("from tests.a.test_b import x\nimport tests.c.test_d\n") == [
        "tests.a.test_b", "tests.c.test_d"]
    assert NOQA_FIXTURE.search("from tests.finetune import finetune_pair  # noqa: F401")
    assert NOQA_FIXTURE.search("def f(finetune_pair: X,  # noqa: E501, F811")
