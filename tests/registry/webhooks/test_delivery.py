"""Deliveries to a real receiver on loopback: signed, once each, in order, filtered."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.events.outbox import record_event
from registry.events.schemas import EventType, TokenData
from registry.tables import WebhookDelivery
from tests.conftest import Tokens
from tests.registry.webhooks.conftest import (
    Receiver,
    deliveries,
    drain,
    emit,
    emit_alias,
    feed,
    subscribe,
)


def test_signed_once_each_in_commit_order(client: TestClient, app: FastAPI, tokens: Tokens,
                                          make_receiver: Callable[[], Receiver]
                                          ) -> None:
    everything, prod_only = make_receiver(), make_receiver()
    subscribe(client, tokens, everything)
    subscribe(client, tokens, prod_only, events=["alias.set", "alias.removed"],
              filters={"base": "b", "alias": "prod"})
    database = app.state.database
    emit(database, 3)
    for version in (1, 2, 3):
        emit_alias(database, "prod", version)
        emit_alias(database, "staging", version)
    emit_alias(database, "prod", 9, base="other")
    events = feed(client, tokens)
    drain(app, lambda: len(everything.received) == len(events)
          and len(prod_only.received) == 3)
    assert [r.payload for r in everything.received] == events  # the feed's JSON, in order
    assert len(set(everything.ids())) == len(events)
    assert [(r.payload["data"]["alias"], r.payload["data"]["version"])
            for r in prod_only.received] == [("prod", 1), ("prod", 2), ("prod", 3)]
    first = everything.received[0]
    assert first.headers["webhook-id"] == f"msg_{events[0]['id']}_1"
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.body) == events[0]
    drain(app, lambda: True)  # nothing more comes
    assert len(everything.received) == len(events)


def test_rotation_signs_with_both_for_the_grace(client: TestClient, app: FastAPI,
                                                tokens: Tokens, receiver: Receiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    hook = subscribe(client, tokens, receiver)
    rotated = client.post(f"/webhooks/{hook['id']}/rotate-secret", headers=tokens.admin)
    receiver.secrets.append(rotated.json()["secret"])  # each secret must verify
    emit(app.state.database)
    drain(app, lambda: len(receiver.received) == 1)
    assert len(receiver.received[0].headers["webhook-signature"].split(" ")) == 2

    monkeypatch.setattr(app.state.settings, "WEBHOOK_SECRET_GRACE_SECONDS", 0)
    client.post(f"/webhooks/{hook['id']}/rotate-secret", headers=tokens.admin)
    receiver.secrets[:] = []  # (the old ones no longer verify; checked below)
    emit(app.state.database)
    drain(app, lambda: len(receiver.received) == 2)
    assert len(receiver.received[1].headers["webhook-signature"].split(" ")) == 1


def test_test_ping_and_redeliver(client: TestClient, app: FastAPI, tokens: Tokens,
                                 receiver: Receiver) -> None:
    hook = subscribe(client, tokens, receiver)
    ping = client.post(f"/webhooks/{hook['id']}/test", headers=tokens.admin)
    assert ping.status_code == 202
    assert ping.json()["event_type"] == "webhook.test"
    drain(app, lambda: len(receiver.received) == 1)
    assert receiver.received[0].payload["type"] == "webhook.test"

    emit(app.state.database)
    drain(app, lambda: len(receiver.received) == 2)
    event_id = receiver.received[1].payload["id"]
    again = client.post(f"/webhooks/{hook['id']}/deliveries/{event_id}/redeliver",
                        headers=tokens.admin)
    assert again.status_code == 202, again.text
    drain(app, lambda: len(receiver.received) == 3)
    assert receiver.received[2].headers["webhook-id"] == receiver.received[1].headers[
        "webhook-id"]
    log = deliveries(client, tokens, hook["id"])  # every attempt: the ping, the event twice
    assert [(d["event_id"], d["outcome"]) for d in log] == [
        (event_id, "delivered"), (event_id, "delivered"), (None, "delivered")]
    assert deliveries(client, tokens, hook["id"], event=event_id) == log[:2]
    assert log[0]["message_id"] == log[1]["message_id"]
    assert log[0]["status_code"] == 204
    assert log[0]["latency_ms"] >= 0
    missing = client.post(f"/webhooks/{hook['id']}/deliveries/999/redeliver",
                          headers=tokens.admin)
    assert missing.status_code == 404
    assert missing.json()["error"] == "DeliveryNotFound"


def test_rolled_back_change_sends_nothing(client: TestClient, app: FastAPI, tokens: Tokens,
                                          receiver: Receiver) -> None:
    subscribe(client, tokens, receiver)
    database = app.state.database

    def failing_change() -> None:
        with database.writing() as session:
            record_event(session, EventType.TOKEN_REVOKED, TokenData(id=1, name="gone"))
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        failing_change()
    emit(database, name="kept")
    drain(app, lambda: len(receiver.received) == 1)
    drain(app, lambda: True)
    assert [r.payload["data"]["name"] for r in receiver.received] == ["kept"]


@pytest.mark.slow
def test_burst_of_1000_all_once_in_order(client: TestClient, app: FastAPI, tokens: Tokens,
                                         receiver: Receiver) -> None:
    subscribe(client, tokens, receiver)
    database = app.state.database
    for batch in range(10):
        with database.writing() as session:
            for i in range(100):
                record_event(session, EventType.TOKEN_REVOKED,
                             TokenData(id=batch * 100 + i + 1, name="t"))
    drain(app, lambda: len(receiver.received) >= 1000, timeout_s=60)
    drain(app, lambda: True)
    ids = [r.payload["data"]["id"] for r in receiver.received]
    assert ids == list(range(1, 1001))  # all, once, in order
    assert receiver.requests == 1000
    with database.reading() as session:
        assert session.query(WebhookDelivery).filter_by(status="delivered").count() == 1000


def test_metrics(client: TestClient, app: FastAPI, tokens: Tokens, receiver: Receiver) -> None:
    receiver.behaviour = lambda r, n: (500, {}, b"") if n == 1 else (204, {}, b"")
    subscribe(client, tokens, receiver)
    emit(app.state.database, 2)
    drain(app, lambda: receiver.requests == 1)
    text = client.get("/metrics", headers=tokens.read).text
    assert "deltahub_webhook_deliveries_pending 2.0" in text
    age = next(line for line in text.splitlines()
               if line.startswith("deltahub_webhook_oldest_undelivered_event_age_seconds "))
    assert float(age.split()[1]) >= 0
    drain(app, lambda: len(receiver.received) == 2)
    text = client.get("/metrics", headers=tokens.read).text
    assert 'deltahub_webhook_deliveries_total{outcome="delivered"} 2.0' in text
    # every attempt: the one answered 500, then the two delivered
    assert "deltahub_webhook_delivery_latency_seconds_count 3.0" in text
    assert "deltahub_webhook_oldest_undelivered_event_age_seconds 0.0" in text
