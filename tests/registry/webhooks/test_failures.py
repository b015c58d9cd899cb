"""Receivers that fail: retried per the schedule, disabled when they must be, bounded."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from registry.tables import Webhook
from registry.webhooks.dispatcher import Dispatcher, Dispatchers
from registry.webhooks.queue import Due
from tests.conftest import Tokens
from tests.registry.webhooks.conftest import Receiver, deliveries, drain, emit, subscribe


def _hook(client: TestClient, tokens: Tokens, webhook_id: int) -> dict[str, object]:
    answer: dict[str, object] = client.get(f"/webhooks/{webhook_id}",
                                           headers=tokens.admin).json()
    return answer


def test_down_then_up_retried_then_delivered_with_one_id(
        client: TestClient, app: FastAPI, tokens: Tokens, receiver: Receiver) -> None:
    # Down for two attempts (the connection dropped unanswered), then a 500, then up.
    receiver.behaviour = lambda r, n: (0, {}, b"") if n <= 1 else (
        (500, {}, b"busy") if n == 2 else (200, {}, b"ok"))
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database)
    drain(app, lambda: len(receiver.received) == 1)
    assert receiver.requests == 3
    log = deliveries(client, tokens, hook["id"])  # every attempt, newest first
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in log] == [
        (3, "delivered", 200), (2, "retrying", 500), (1, "retrying", None)]
    assert {a["status"] for a in log} == {"delivered"}  # where the delivery stands now
    assert [a["response_excerpt"] for a in log[:2]] == ["ok", "busy"]
    assert log[2]["error"]  # the dropped connection says what happened
    assert len({a["message_id"] for a in log}) == 1
    # Keyset pages, one attempt each, walk the same log.
    walked, token = [], None
    while True:
        page = client.get(f"/webhooks/{hook['id']}/deliveries", headers=tokens.admin,
                          params={"limit": 1, **({"page_token": token} if token else {})})
        walked += page.json()["items"]
        token = page.json()["next_page_token"]
        if token is None:
            break
    assert walked == log


def test_429_retry_after_is_honoured(client: TestClient, app: FastAPI, tokens: Tokens,
                                     receiver: Receiver) -> None:
    seen: list[float] = []

    def answer(r: Receiver, n: int) -> tuple[int, dict[str, str], bytes]:
        seen.append(time.monotonic())
        return (429, {"Retry-After": "1"}, b"") if n == 1 else (204, {}, b"")

    receiver.behaviour = answer
    subscribe(client, tokens, receiver)
    emit(app.state.database)
    drain(app, lambda: len(receiver.received) == 1)
    assert seen[1] - seen[0] >= 0.9  # not the schedule's 0.1 s


def test_410_disables_the_endpoint(client: TestClient, app: FastAPI, tokens: Tokens,
                                   receiver: Receiver) -> None:
    receiver.behaviour = lambda r, n: (410, {}, b"gone")
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database, 2)
    drain(app, lambda: not _hook(client, tokens, hook["id"])["enabled"])
    drain(app, lambda: True)
    assert receiver.requests == 1  # nothing more after the 410
    assert "410" in str(_hook(client, tokens, hook["id"])["disabled_reason"])
    # One attempt (the second event's delivery waits, never tried, for re-enabling).
    assert [(a["outcome"], a["status_code"]) for a in deliveries(client, tokens, hook["id"])
            ] == [("failed", 410)]
    # Re-enabled, the pending one goes out.
    receiver.behaviour = None
    client.patch(f"/webhooks/{hook['id']}", json={"enabled": True}, headers=tokens.admin)
    drain(app, lambda: len(receiver.received) == 1)


def test_failing_for_the_whole_schedule_disables(client: TestClient, app: FastAPI,
                                                 tokens: Tokens, receiver: Receiver) -> None:
    receiver.behaviour = lambda r, n: (503, {}, b"down")
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database)
    drain(app, lambda: not _hook(client, tokens, hook["id"])["enabled"])
    assert receiver.requests == 3  # the schedule: 0, 0.1, 0.2
    reason = str(_hook(client, tokens, hook["id"])["disabled_reason"])
    assert "3 times" in reason
    assert "HTTP 503" in reason
    log = deliveries(client, tokens, hook["id"])
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in log] == [
        (3, "failed", 503), (2, "retrying", 503), (1, "retrying", 503)]
    assert [a["outcome"] for a in deliveries(client, tokens, hook["id"], outcome="failed")
            ] == ["failed"]


def test_huge_answer_is_not_read(client: TestClient, app: FastAPI, tokens: Tokens,
                                 receiver: Receiver) -> None:
    receiver.behaviour = lambda r, n: (200, {"X-Huge": "1",
                                             "Content-Length": str(100 * 2**20)}, b"")
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database)
    drain(app, lambda: len(receiver.received) == 1)
    [log] = deliveries(client, tokens, hook["id"])
    assert log["status"] == "delivered"
    assert len(log["response_excerpt"]) <= 1024
    time.sleep(0.2)
    assert receiver.huge_written < 50 * 2**20  # the sender hung up long before 100 MiB


def test_hanging_receiver_times_out_and_blocks_no_one(
        client: TestClient, app: FastAPI, tokens: Tokens,
        make_receiver: Callable[[], Receiver]) -> None:
    hostile, good = make_receiver(), make_receiver()
    hostile.behaviour = lambda r, n: None  # never answers
    bad = subscribe(client, tokens, hostile)
    subscribe(client, tokens, good)
    app.state.settings.WEBHOOK_DISPATCHERS = 2
    dispatchers = Dispatchers(app.state.database, app.state.settings, "pair")
    dispatchers.start()
    try:
        emit(app.state.database, 3)
        deadline = time.monotonic() + 10
        while len(good.received) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert hostile.requests >= 1  # it was being tried meanwhile
        while not deliveries(client, tokens, bad["id"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        dispatchers.stop()
    first = deliveries(client, tokens, bad["id"])[-1]
    assert first["error"].startswith("Timeout")
    assert first["latency_ms"] < 3000  # WEBHOOK_TIMEOUT_SECONDS is 1


class Killed(BaseException):
    """The dispatcher dies here (as under SIGKILL: nothing after it runs)."""


def test_killed_between_send_and_record_redelivers_same_id(
        client: TestClient, app: FastAPI, tokens: Tokens, receiver: Receiver) -> None:
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database)
    doomed = Dispatcher(app.state.database, app.state.settings, "doomed")

    def die(due: Due) -> None:
        raise Killed

    doomed.after_send = die
    with pytest.raises(Killed):
        doomed.run_once()
    assert len(receiver.received) == 1
    # Its lease still holds: nobody sends meanwhile.
    survivor = Dispatcher(app.state.database, app.state.settings, "survivor")
    assert not survivor.run_once()
    with app.state.database.writing() as session:  # time passes: the lease expires
        session.execute(update(Webhook).values(lease_expires_at=Webhook.created_at))
    drain(app, lambda: len(receiver.received) == 2, dispatcher=survivor)
    assert receiver.ids()[0] == receiver.ids()[1]  # the receiver's idempotency key
    [log] = deliveries(client, tokens, hook["id"])
    assert (log["status"], log["attempt"]) == ("delivered", 1)  # recorded once


def test_nothing_listening_then_a_receiver(client: TestClient, app: FastAPI, tokens: Tokens,
                                           make_receiver: Callable[..., Receiver]) -> None:
    """Connection refused for a while (retried), then a receiver on that port."""
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    created = client.post("/webhooks", json={"url": url}, headers=tokens.admin).json()
    app.state.settings.WEBHOOK_RETRY_SCHEDULE = "0,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1"
    emit(app.state.database)
    drain(app, lambda: [d["attempt"] for d in deliveries(client, tokens, created["id"])]
          >= [2])
    refused = deliveries(client, tokens, created["id"])[0]
    assert refused["status"] == "pending"
    assert "Connection" in refused["error"] or "refused" in refused["error"]
    receiver = make_receiver(port)
    receiver.secrets.append(created["secret"])
    drain(app, lambda: len(receiver.received) == 1)
    log = deliveries(client, tokens, created["id"])[0]
    assert (log["status"], log["outcome"]) == ("delivered", "delivered")
    assert log["attempt"] >= 3
    assert receiver.ids() == [f"msg_{receiver.received[0].payload['id']}_{created['id']}"]
