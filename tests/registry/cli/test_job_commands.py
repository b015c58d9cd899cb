"""`deltahub compress --wait` and `deltahub jobs` against a live server with a worker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from registry.cli.app import app
from registry.cli.job_commands import EXIT_CANCELLED, EXIT_FAILED
from registry.jobs.worker import Worker
from tests.conftest import LiveServer, Tokens
from tests.registry.cli.conftest import env_for, runner
from tests.registry.conftest import TinyModels


def _env(server: LiveServer, headers: dict[str, str]) -> dict[str, str]:
    return env_for(server.url, headers)


@pytest.fixture
def working(live_server: LiveServer) -> Iterator[Worker]:
    state = live_server.app.state
    worker = Worker(state.database, state.store, state.settings, name="cli-test",
                    capabilities=set())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker
    worker.stop()
    thread.join(timeout=30)


@pytest.fixture
def registered(live_server: LiveServer, tokens: Tokens, tiny_models: TinyModels) -> str:
    env = _env(live_server, tokens.admin)
    for args in (["push-model", str(tiny_models.base), "--name", "tiny-base"],
                 ["push-model", str(tiny_models.finetune), "--name", "tiny-ft",
                  "--base", "tiny-base"]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
    return "tiny-ft"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_compress_wait_follows_the_job_to_its_adapter(live_server: LiveServer,
                                                      tokens: Tokens, registered: str,
                                                      working: Worker) -> None:
    env = _env(live_server, tokens.admin)
    result = runner.invoke(app, ["compress", registered, "--method", "bitdelta",
                                 "--alias", "prod", "--wait"], env=env)
    assert result.exit_code == 0, result.output
    assert "succeeded -> tiny-ft-bitdelta@1" in result.output
    listed = runner.invoke(app, ["jobs", "ls"], env=env)
    assert listed.exit_code == 0
    assert "succeeded" in listed.output
    shown = runner.invoke(app, ["jobs", "show", "1"], env=env)
    assert "1 of 3" in shown.output
    as_json = json.loads(runner.invoke(app, ["jobs", "ls", "--json"], env=env).stdout)
    assert [(j["id"], j["status"]) for j in as_json] == [(1, "succeeded")]
    job = json.loads(runner.invoke(app, ["jobs", "show", "1", "--json"], env=env).stdout)
    assert job["adapter"]["name"] == "tiny-ft-bitdelta"
    adapters = runner.invoke(app, ["ls", "adapters", "--alias", "prod"], env=env)
    assert "latest, prod" in adapters.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_compress_exit_status_tells_failure_and_cancellation(live_server: LiveServer,
                                                             tokens: Tokens,
                                                             registered: str,
                                                             working: Worker) -> None:
    env = _env(live_server, tokens.admin)
    failed = runner.invoke(app, ["compress", registered, "--method", "lora", "--rank", "8",
                                 "--max-error", "1e-9", "--wait"], env=env)
    assert failed.exit_code == EXIT_FAILED, failed.output
    assert "QualityBelowThreshold" in failed.output
    working.stop()  # nothing runs the next one: cancel it while queued
    queued = runner.invoke(app, ["compress", registered, "--method", "bitdelta"], env=env)
    assert queued.exit_code == 0, queued.output
    cancelled = runner.invoke(app, ["jobs", "cancel", "2"], env=env)
    assert "job 2: cancelled" in cancelled.output
    shown = runner.invoke(app, ["jobs", "show", "2"], env=env)
    assert "cancelled" in shown.output
    only = runner.invoke(app, ["compress", registered, "--method", "lora", "--rank", "2",
                               "--targets-only"], env=env)
    assert only.exit_code == 0, only.output
    job = json.loads(runner.invoke(app, ["jobs", "show", "3", "--json"], env=env).stdout)
    assert job["params"]["targets_only"] is True
    refused = runner.invoke(app, ["compress", "tiny-base", "--method", "bitdelta"], env=env)
    assert refused.exit_code == 1
    assert "NotAFinetune" in refused.output
    assert EXIT_CANCELLED == 3
