"""`deltahub db`, `token`, `gc`, `serve` and `worker`: the database found as the server
finds it, and never created by accident."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import Result

from registry.cli.app import app
from registry.cli.failures import EXIT_NO_DATABASE
from registry.client import DeltahubClient, sha256_of
from tests.conftest import LiveServer, Tokens
from tests.registry.cli.conftest import runner
from tests.registry.conftest import TinyModels

SERVER_COMMANDS = (["token", "create", "--scopes", "read"], ["token", "list"],
                   ["token", "revoke", "1"], ["gc"], ["db", "current"], ["serve"],
                   ["worker"])


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is not the checkout, with no DELTAHUB_* settings."""
    for name in ("DELTAHUB_DATABASE_URL", "DELTAHUB_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "somewhere-else"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def deltahub(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_without_a_database_each_says_where_it_looked(elsewhere: Path,
                                                      command: list[str]) -> None:
    result = deltahub(*command)
    assert result.exit_code == EXIT_NO_DATABASE, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert str(elsewhere / "deltahub-data" / "deltahub.db") in line
    assert "relative to the current directory" in line
    assert "deltahub db upgrade" in line
    assert list(elsewhere.iterdir()) == []  # no ./deltahub-data, no empty database


def test_an_unmigrated_or_unreachable_database(elsewhere: Path) -> None:
    empty = elsewhere / "empty.db"
    empty.touch()
    url = f"sqlite:///{empty}"
    result = deltahub("token", "list", env={"DELTAHUB_DATABASE_URL": url})
    assert result.exit_code == EXIT_NO_DATABASE
    assert "has no deltahub tables" in result.stderr
    assert "DELTAHUB_DATABASE_URL" not in result.stderr.split("(from")[0]
    assert "(from DELTAHUB_DATABASE_URL)" in result.stderr
    down = deltahub("gc", env={
        "DELTAHUB_DATABASE_URL": "postgresql+psycopg://postgres:secret@127.0.0.1:1/none"})
    assert down.exit_code == EXIT_NO_DATABASE
    assert "cannot open the database" in down.stderr
    assert "secret" not in down.stderr  # the password is hidden


def test_the_database_named_in_a_dot_env_file(elsewhere: Path) -> None:
    (elsewhere / ".env").write_text(
        f"DELTAHUB_DATABASE_URL=sqlite:///{elsewhere / 'data' / 'hub.db'}\n")
    missing = deltahub("token", "list")
    assert missing.exit_code == EXIT_NO_DATABASE
    assert str(elsewhere / ".env") in missing.stderr
    created = deltahub("db", "upgrade")
    assert created.exit_code == 0, created.output
    assert str(elsewhere / "data" / "hub.db") in created.stderr
    assert deltahub("token", "list").exit_code == 0


def test_an_install_without_its_migrations_says_how_to_get_them(
        elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("registry.infra.migrate.MIGRATIONS_DIR", elsewhere / "site-packages" /
                        "migrations")
    result = deltahub("db", "upgrade", env={
        "DELTAHUB_DATABASE_URL": f"sqlite:///{elsewhere / 'hub.db'}"})
    assert result.exit_code == 1, result.output
    assert "migrations are not installed" in result.stderr
    assert "pip install -e '.[server]'" in result.stderr
    assert "Traceback" not in result.output
    assert not (elsewhere / "hub.db").exists()  # nothing half-made


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_admin_commands(database_url: str, elsewhere: Path) -> None:
    env = {"DELTAHUB_DATABASE_URL": f"sqlite:///{elsewhere / 'fresh.db'}",
           "DELTAHUB_STORAGE_URL": f"file://{elsewhere / 'blobs'}"}
    assert deltahub("db", "upgrade", env=env).exit_code == 0
    current = deltahub("db", "current", env=env).stdout.replace(",", "").split()
    assert current[0] == "current"
    assert current[1] == current[3]  # at head

    created = deltahub("token", "create", "--scopes", "read,push", "--name", "ci", env=env)
    assert created.exit_code == 0
    secret = created.stdout.strip()
    assert secret.startswith("dh_")
    assert len(secret.split()) == 1  # only the token, so `$(deltahub token create ...)` works

    listed = deltahub("token", "list", env=env)
    assert "push,read" in listed.stdout
    assert secret not in listed.stdout
    as_json = json.loads(deltahub("token", "list", "--json", env=env).stdout)
    assert as_json == [{"id": 1, "name": "ci", "prefix": secret[:len(as_json[0]["prefix"])],
                        "scopes": ["push", "read"], "revoked": False}]
    assert deltahub("token", "revoke", "1", env=env).exit_code == 0
    assert "revoked" in deltahub("token", "list", env=env).stdout

    bad = deltahub("token", "create", "--scopes", "root", env=env)
    assert bad.exit_code != 0
    assert deltahub("gc", "--grace-seconds", "0", env=env).exit_code == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_gc_removes_stale_drafts(live_server: LiveServer, tokens: Tokens, database_url: str,
                                 tiny_models: TinyModels, tmp_path: Path) -> None:
    client = DeltahubClient(live_server.url, tokens.push["Authorization"].split()[1])
    client.create_model("abandoned")
    config = tiny_models.base / "config.json"
    digest = sha256_of(config)
    client.upload("/models/abandoned", config, digest)
    client.close()
    blob = tmp_path / "blobs" / "blobs" / "sha256" / digest
    assert blob.is_file()
    env = {"DELTAHUB_DATABASE_URL": database_url,
           "DELTAHUB_STORAGE_URL": f"file://{tmp_path / 'blobs'}"}
    young = deltahub("gc", "--draft-ttl-seconds", "3600", env=env)
    assert young.exit_code == 0, young.output
    assert _count(young.stdout, "stale drafts removed") == 0
    time.sleep(1.2)
    old = deltahub("gc", "--draft-ttl-seconds", "1", "--grace-seconds", "1", env=env)
    assert old.exit_code == 0, old.output
    assert _count(old.stdout, "stale drafts removed") == 1
    assert not blob.exists()  # the draft's config.json, which nothing else referenced
    assert _count(deltahub("gc", "--draft-ttl-seconds", "1", env=env).stdout,
                  "stale drafts removed") == 0


def _count(table: str, row: str) -> int:
    line = next(line for line in table.splitlines() if row in line)
    return int(line.split("│")[2].strip())
