"""The CLI against a real server on loopback, as a CI job would use it."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli.app import app
from tests.conftest import LiveServer, Tokens
from tests.registry.conftest import TinyModels

runner = CliRunner()


def _env(server: LiveServer, headers: dict[str, str]) -> dict[str, str]:
    return {"DELTAHUB_URL": server.url,
            "DELTAHUB_TOKEN": headers["Authorization"].removeprefix("Bearer ")}


def test_push_ls_pull(live_server: LiveServer, tokens: Tokens, tiny_models: TinyModels,
                      tmp_path: Path) -> None:
    env = _env(live_server, tokens.admin)
    result = runner.invoke(app, ["push-model", str(tiny_models.base), "--name", "llama-tiny"],
                           env=env)
    assert result.exit_code == 0, result.output
    assert "21 tensors" in result.output

    lora = tmp_path / "lora"
    shutil.copytree(tiny_models.lora, lora)
    (lora / "training_args.bin").write_bytes(b"\x80\x04 not ours")  # what a Trainer leaves
    push = ["push", str(lora), "--base", "llama-tiny", "--name", "support-bot", "--alias", "prod"]
    result = runner.invoke(app, push, env=env)
    assert result.exit_code == 0, result.output
    assert "support-bot@1 (new version)" in result.output
    assert "skipping training_args.bin" in result.output
    again = runner.invoke(app, push, env=env)
    assert "support-bot@1 (unchanged" in again.output

    listed = runner.invoke(app, ["ls", "adapters", "--base", "llama-tiny"], env=env)
    assert listed.exit_code == 0
    assert "support-bot" in listed.output
    assert "latest, prod" in listed.output

    out = tmp_path / "pulled"
    pulled = runner.invoke(app, ["pull", "support-bot:prod", "-o", str(out)], env=env)
    assert pulled.exit_code == 0, pulled.output
    names = sorted(p.name for p in tiny_models.lora.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    same, mismatch, errors = filecmp.cmpfiles(out, tiny_models.lora, names, shallow=False)
    assert (same, mismatch, errors) == (names, [], [])


def test_cli_reports_server_errors(live_server: LiveServer, tokens: Tokens,
                                   tiny_models: TinyModels) -> None:
    env = _env(live_server, tokens.read)
    result = runner.invoke(app, ["push", str(tiny_models.lora), "--base", "nope",
                                 "--name", "x"], env=env)
    assert result.exit_code == 1
    assert "Forbidden" in result.output
    no_token = runner.invoke(app, ["ls", "adapters"], env={"DELTAHUB_URL": live_server.url,
                                                           "DELTAHUB_TOKEN": ""})
    assert no_token.exit_code == 2
    assert "DELTAHUB_TOKEN" in no_token.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_admin_commands(database_url: str, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DELTAHUB_DATABASE_URL", fresh)
    monkeypatch.setenv("DELTAHUB_STORAGE_URL", f"file://{tmp_path / 'blobs'}")
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    current = runner.invoke(app, ["db", "current"]).output.replace(",", "").split()
    assert current[0] == "current"
    assert current[1] == current[3]  # at head

    created = runner.invoke(app, ["token", "create", "--scopes", "read,push", "--name", "ci"])
    assert created.exit_code == 0
    secret = created.output.strip()
    assert secret.startswith("dh_")
    assert len(secret.split()) == 1  # only the token, so `$(deltahub token create ...)` works

    listed = runner.invoke(app, ["token", "list"])
    assert "push,read" in listed.output
    assert secret not in listed.output
    assert runner.invoke(app, ["token", "revoke", "1"]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["token", "list"]).output

    bad = runner.invoke(app, ["token", "create", "--scopes", "root"])
    assert bad.exit_code != 0
    assert runner.invoke(app, ["gc", "--grace-seconds", "0"]).exit_code == 0
