"""`deltahub engine` as a user runs it: the refusals it makes before serving anything."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from registry.cli.app import app
from registry.cli.failures import EXIT_NOT_FOUND, EXIT_USAGE
from tests.conftest import LiveServer, Tokens

runner = CliRunner()


def test_unknown_base_exits_not_found(live_server: LiveServer, tokens: Tokens,
                                      tmp_path: Path) -> None:
    token = tokens.read["Authorization"].removeprefix("Bearer ")
    result = runner.invoke(app, ["engine", "no-such-base", "--cache-dir", str(tmp_path)],
                           env={"DELTAHUB_URL": live_server.url, "DELTAHUB_TOKEN": token,
                                "COLUMNS": "200"})
    assert result.exit_code == EXIT_NOT_FOUND, result.output
    assert "ModelNotFound" in result.output
    assert not (tmp_path / "models").exists()


def test_unknown_dtype_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["engine", str(tmp_path), "--dtype", "float8"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == EXIT_USAGE
    assert "float8" in result.output
