"""Retention never prunes an event an enabled webhook has yet to deliver."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from registry.events.service import prune_events
from registry.tables import Event, utcnow
from tests.conftest import Tokens
from tests.registry.webhooks.conftest import Receiver, drain, emit, subscribe


def _age_all(app: FastAPI) -> None:
    with app.state.database.writing() as session:
        session.execute(update(Event).values(created_at=utcnow() - timedelta(days=30)))


def _prune(app: FastAPI) -> int:
    with app.state.database.writing() as session:
        return prune_events(session, app.state.settings).events


def _left(app: FastAPI) -> int:
    with app.state.database.reading() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_undelivered_events_outlive_retention(client: TestClient, app: FastAPI,
                                              tokens: Tokens, receiver: Receiver) -> None:
    emit(app.state.database, 2)  # before the webhook: not its business
    receiver.behaviour = lambda r, n: (503, {}, b"") if n == 1 else (204, {}, b"")
    subscribe(client, tokens, receiver)
    emit(app.state.database, 3)
    _age_all(app)
    assert _prune(app) == 2  # none of the webhook's, not yet fanned out
    drain(app, lambda: receiver.requests == 1)  # fanned out; the first one failed
    _age_all(app)
    assert _prune(app) == 0  # pending: kept
    assert _left(app) == 3
    drain(app, lambda: len(receiver.received) == 3)
    assert _prune(app) == 3  # all delivered: retention applies again
