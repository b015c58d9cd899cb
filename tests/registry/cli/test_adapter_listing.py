"""`deltahub ls adapters` fits the terminal: columns give way by priority, the name is
never cut, and gain kept comes with the data set it was measured on and the ratio."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

import registry.cli.catalog_commands as catalog_commands
from registry.cli.app import app

runner = CliRunner()
NAME = "tiny-llama-python-ft-bitdelta-distilled"
ADAPTER: dict[str, Any] = {
    "id": 12, "name": NAME, "version": 1, "kind": "bitdelta", "base": "tiny-llama-base",
    "source_model": "py-ft", "aliases": ["latest", "prod"], "size_bytes": 26_300_000,
    "compression_ratio": 15.93, "quality": {"gain_kept": 0.9851, "gain_kept_on": "python-held"},
}
ALL = ["id", "name", "version", "kind", "base", "source", "aliases", "size", "ratio",
       "gain kept", "data set"]


class ListingClient:
    def list_adapters(self, **_: Any) -> Iterator[dict[str, Any]]:
        return iter([ADAPTER, {**ADAPTER, "id": 11, "name": "bot", "quality": None,
                               "compression_ratio": None, "aliases": []}])


@pytest.fixture(autouse=True)
def listing(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def connected(url: str, token: str | None) -> Iterator[ListingClient]:
        yield ListingClient()

    monkeypatch.setattr(catalog_commands, "connected", connected)


def header(stdout: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


@pytest.mark.parametrize(("columns", "shown"), [
    (80, ["name", "version", "kind", "gain kept"]),
    (100, ["name", "version", "kind", "ratio", "gain kept", "data set"]),
    (160, ALL),
])
def test_the_listing_fits_the_terminal_with_names_whole(columns: int,
                                                        shown: list[str]) -> None:
    result = runner.invoke(app, ["ls", "adapters", "--token", "t"],
                           env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert header(result.stdout) == shown
    assert all(len(line) <= columns for line in result.stdout.splitlines())
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 2  # one line per adapter
    assert f"│ {NAME} │" in rows[0]
    assert "…" not in result.stdout
    assert "0.985" in rows[0]
    hidden = [c for c in ALL if c not in shown]
    if hidden:
        assert f"not shown at this width: {', '.join(hidden)}" in " ".join(
            result.output.split())
    if "data set" in shown:
        assert "python-held" in rows[0]
    if "ratio" in shown:
        assert "15.9x" in rows[0]


def test_a_name_wider_than_the_terminal_wraps_whole() -> None:
    result = runner.invoke(app, ["ls", "adapters", "--token", "t"], env={"COLUMNS": "30"})
    assert result.exit_code == 0, result.output
    assert NAME in "".join(line.strip("│ ") for line in result.stdout.splitlines())
    assert "…" not in result.stdout


def test_a_column_with_nothing_in_it_gives_way_first(monkeypatch: pytest.MonkeyPatch) -> None:
    unmeasured = {**ADAPTER, "quality": None}

    class Unmeasured(ListingClient):
        def list_adapters(self, **_: Any) -> Iterator[dict[str, Any]]:
            return iter([unmeasured, {**unmeasured, "id": 11, "name": "bot"}])

    @contextlib.contextmanager
    def connected(url: str, token: str | None) -> Iterator[ListingClient]:
        yield Unmeasured()

    monkeypatch.setattr(catalog_commands, "connected", connected)
    result = runner.invoke(app, ["ls", "adapters", "--token", "t"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    shown = header(result.stdout)
    assert "gain kept" not in shown
    assert "data set" not in shown
    assert "aliases" in shown  # prod is visible
