"""A push whose server dies in the middle, run again against the restarted server."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from registry.cli.app import app
from registry.cli.failures import EXIT_UNAVAILABLE
from registry.client import DeltahubClient
from registry.client.files import Advance
from registry.infra.engines import make_engine
from registry.tables import Adapter, Status
from tests.registry.cli.conftest import runner
from tests.registry.conftest import TinyModels
from tests.registry.serverproc import issue_admin_token, serve


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_push_cut_off_by_a_dead_server_succeeds_when_run_again(
        database_url: str, tiny_models: TinyModels, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    token = issue_admin_token(database_url)
    workdir = tmp_path / "server"
    lora = sorted(p.name for p in tiny_models.lora.iterdir())
    assert len(lora) == 3  # README.md, adapter_config.json, adapter_model.safetensors

    def deltahub(url: str, *args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env={
            "DELTAHUB_URL": url, "DELTAHUB_TOKEN": token, "COLUMNS": "200"})
        return result.exit_code, result.output

    push = ["push", str(tiny_models.lora), "--base", "tiny-base", "--name", "bot"]
    with serve(database_url, workdir) as server:
        code, output = deltahub(server.url, "push-model", str(tiny_models.base),
                                "--name", "tiny-base")
        assert code == 0, output
        real_upload = DeltahubClient.upload
        started: list[str] = []

        def killed_while_sending_the_second_file(
                self: DeltahubClient, owner: str, path: Path, sha256: str,
                advance: Advance | None = None) -> dict[str, object]:
            started.append(path.name)

            def moved(n: int) -> None:
                if len(started) == 2 and server.process.poll() is None:
                    # The body is on its way: the server dies before it answers.
                    os.kill(server.process.pid, signal.SIGKILL)
                    server.process.wait()

            return real_upload(self, owner, path, sha256, moved)

        monkeypatch.setattr(DeltahubClient, "upload", killed_while_sending_the_second_file)
        code, output = deltahub(server.url, *push)
        assert code == EXIT_UNAVAILABLE, output
        assert server.process.returncode == -signal.SIGKILL
        assert started == lora[:2]
        monkeypatch.setattr(DeltahubClient, "upload", real_upload)

    with serve(database_url, workdir) as restarted:
        code, output = deltahub(restarted.url, *push)
        assert code == 0, output
        assert "resuming: 1 of 3 files already uploaded" in output
        assert "bot@1 (new version)" in output
        code, output = deltahub(restarted.url, "ls", "adapters", "--json")
        listed = json.loads(output)
        assert [(a["name"], a["version"]) for a in listed] == [("bot", 1)]
        assert sorted(f["filename"] for f in listed[0]["files"]) == lora

    engine = make_engine(database_url)
    with engine.connect() as conn:
        statuses = conn.execute(select(Adapter.status, func.count()).group_by(
            Adapter.status)).all()
    engine.dispose()
    assert statuses == [(Status.READY, 1)]  # one version, and no draft left behind
