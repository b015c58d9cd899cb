"""`deltahub gc` prunes the delivery log (deliveries and attempts) with its events, in
batches, and keeps what retained events need to be redelivered."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from registry.events.service import prune_events
from registry.gc import deliveries as log_retention
from registry.tables import Event, WebhookDelivery, WebhookDeliveryAttempt, utcnow
from tests.conftest import Tokens
from tests.registry.webhooks.conftest import Receiver, deliveries, drain, emit, subscribe


def _count(app: FastAPI, table: type[WebhookDelivery] | type[WebhookDeliveryAttempt]) -> int:
    with app.state.database.reading() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_gc_prunes_deliveries_of_pruned_events_in_batches(
        client: TestClient, app: FastAPI, tokens: Tokens, receiver: Receiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_retention, "BATCH", 2)  # 4 deliveries: three batches
    receiver.behaviour = lambda r, n: (503, {}, b"") if n == 1 else (204, {}, b"")
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database, 3)
    assert client.post(f"/webhooks/{hook['id']}/test",
                       headers=tokens.admin).status_code == 202
    drain(app, lambda: len(receiver.received) == 4)
    assert _count(app, WebhookDeliveryAttempt) == 5  # the first one was tried twice
    old = utcnow() - timedelta(days=30)
    with app.state.database.writing() as session:
        session.execute(update(Event).values(created_at=old))
        session.execute(update(WebhookDelivery).values(created_at=old))
    emit(app.state.database, 1, name="kept")  # within retention: its log stays
    drain(app, lambda: len(receiver.received) == 5)
    kept_event = receiver.received[-1].payload["id"]

    with app.state.database.writing() as session:
        assert prune_events(session, app.state.settings).events == 3

    assert _count(app, WebhookDelivery) == 1
    log = deliveries(client, tokens, hook["id"])
    assert [a["event_id"] for a in log] == [kept_event]
    # The retained event can still be sent again, with its webhook-id.
    again = client.post(f"/webhooks/{hook['id']}/deliveries/{kept_event}/redeliver",
                        headers=tokens.admin)
    assert again.status_code == 202, again.text
    drain(app, lambda: len(receiver.received) == 6)
    assert receiver.ids()[-1] == receiver.ids()[-2]
    # A pruned one cannot: its event is gone from the feed, and its delivery with it.
    gone = client.post(f"/webhooks/{hook['id']}/deliveries/1/redeliver",
                       headers=tokens.admin)
    assert gone.status_code == 404


def test_pending_deliveries_are_not_pruned(client: TestClient, app: FastAPI, tokens: Tokens,
                                           receiver: Receiver) -> None:
    receiver.behaviour = lambda r, n: (410, {}, b"gone")  # disables it: the rest wait
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database, 2)
    drain(app, lambda: receiver.requests == 1)
    drain(app, lambda: True)
    with app.state.database.writing() as session:
        session.execute(update(Event).values(created_at=utcnow() - timedelta(days=30)))
        assert prune_events(session, app.state.settings).events == 2  # its webhook is disabled
    with app.state.database.reading() as session:
        left = session.scalars(select(WebhookDelivery.status)).all()
    assert left == ["pending"]  # the failed one went; the pending one drives its retries
    assert deliveries(client, tokens, hook["id"]) == []
