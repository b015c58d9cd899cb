"""A real `deltahub worker` SIGKILLed between its send and its record."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.settings import Settings
from tests.conftest import Tokens
from tests.registry.webhooks.conftest import Receiver, deliveries, emit, subscribe
from tests.registry.workerproc import WorkerPool, WorkerProcess, poll_until


@pytest.mark.slow
def test_sigkilled_dispatcher_redelivers_same_id_recorded_once(
        client: TestClient, app: FastAPI, tokens: Tokens, receiver: Receiver,
        settings: Settings, tmp_path: Path) -> None:
    pool = WorkerPool({
        "DELTAHUB_DATABASE_URL": settings.DATABASE_URL,
        "DELTAHUB_STORAGE_URL": settings.STORAGE_URL,
        "DELTAHUB_WORK_DIR": str(tmp_path / "work"),
        "DELTAHUB_WEBHOOK_ALLOW_PRIVATE": "true",
        "DELTAHUB_WEBHOOK_DISPATCHERS": "1",
        "DELTAHUB_WEBHOOK_POLL_SECONDS": "0.05",
        "DELTAHUB_WEBHOOK_TIMEOUT_SECONDS": "1",
        "DELTAHUB_WEBHOOK_LEASE_SECONDS": "2",
    }, tmp_path / "workers")
    victim: list[WorkerProcess] = []

    def kill_the_sender(r: Receiver, n: int) -> tuple[int, dict[str, str], bytes]:
        if n == 1:
            victim[0].kill()  # it sent, and never hears the answer: nothing recorded
        return 204, {}, b""

    receiver.behaviour = kill_the_sender
    hook = subscribe(client, tokens, receiver)
    try:
        victim.append(pool.start("victim"))
        pool.wait_started(victim)
        emit(app.state.database)
        poll_until(lambda: not victim[0].alive(), 30, "the victim to be killed")
        assert deliveries(client, tokens, hook["id"]) == []  # no attempt recorded
        survivor = pool.start("survivor")
        pool.wait_started([survivor])
        poll_until(lambda: [a["status"] for a in deliveries(client, tokens, hook["id"])]
                   == ["delivered"],
                   30, "the redelivery", diagnose=pool.log_tails)
    finally:
        pool.stop_all()
    assert receiver.requests == 2
    assert len(set(receiver.ids())) == 1  # both requests carried one webhook-id
    [log] = deliveries(client, tokens, hook["id"])
    assert log["attempt"] == 1  # recorded once
