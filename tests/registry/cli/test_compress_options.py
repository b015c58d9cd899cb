"""`deltahub compress`'s options, checked on the request it would send (no server)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

import registry.cli.job_commands as job_commands
from registry.cli.app import app
from registry.cli.failures import EXIT_USAGE

runner = CliRunner()


class RecordingClient:
    """Takes the job the command submits instead of a server."""

    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []

    def compress(self, model: str, method: str, options: dict[str, Any],
                 idempotency_key: str) -> dict[str, Any]:
        self.options.append(options)
        return {"id": 7, "adapter_name": "a", "status": "queued", "adapter": None,
                "error": None}

    def get_job(self, job_id: int) -> dict[str, Any]:
        raise KeyboardInterrupt  # the user presses Ctrl-C while the job runs


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> RecordingClient:
    client = RecordingClient()

    @contextlib.contextmanager
    def connected(url: str, token: str | None) -> Iterator[RecordingClient]:
        yield client

    monkeypatch.setattr(job_commands, "connected", connected)
    return client


def flat(output: str) -> str:
    return " ".join(output.split())


def compress(*args: str) -> Any:
    return runner.invoke(app, ["compress", "tiny-ft", "--token", "t", *args],
                         env={"COLUMNS": "200"})


@pytest.mark.parametrize(("args", "named"), [
    (["--distill-seed", "3"], "--distill-seed go with --distill DATASET"),
    (["--evaluate-max-batches", "5", "--evaluate-seq-len", "64"],
     "--evaluate-seq-len, --evaluate-max-batches go with --evaluate"),
])
def test_a_sections_tuning_flag_without_its_data_set_is_a_usage_error(
        submitted: RecordingClient, args: list[str], named: str) -> None:
    result = compress("--method", "bitdelta", *args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert named in " ".join(result.output.split())
    assert submitted.options == []


def test_the_tuning_flags_reach_the_request(submitted: RecordingClient) -> None:
    result = compress("--method", "bitdelta", "--distill", "calib", "--distill-batch-size",
                      "2", "--evaluate", "held", "--evaluate-seq-len", "64")
    assert result.exit_code == 0, result.output
    (options,) = submitted.options
    assert options["distill"] == {"dataset": "calib", "batch_size": 2}
    assert options["evaluate"] == {"datasets": ["held"], "seq_len": 64}


def test_base_reaches_the_request(submitted: RecordingClient) -> None:
    result = compress("--method", "bitdelta", "--base", "tiny-base-4bit")
    assert result.exit_code == 0, result.output
    (options,) = submitted.options
    assert options["base"] == "tiny-base-4bit"


def test_ctrl_c_while_waiting_says_the_job_runs_on(submitted: RecordingClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_commands, "_POLL_SECONDS", 0.0)
    result = compress("--method", "bitdelta", "--wait")
    assert result.exit_code == 130, result.output
    assert "job 7 keeps running; `deltahub jobs cancel 7` to stop it" in flat(result.output)
