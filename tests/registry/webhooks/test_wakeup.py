"""Idle dispatchers wake when events commit, not at their next poll: in this process
through the outbox's commit listeners, from any process on PostgreSQL through its NOTIFY.

The poll interval here is a minute, so a delivery that arrives within seconds can only
have been woken."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.events.outbox import remove_commit_listener
from registry.settings import Settings
from registry.webhooks.dispatcher import Dispatchers
from tests.conftest import Tokens
from tests.registry.webhooks.conftest import Receiver, emit, subscribe

POLL_SECONDS = 60.0
ARRIVAL_BOUND_SECONDS = 20.0  # far under the poll: only a wake-up gets there in time


@pytest.fixture
def dispatchers(app: FastAPI, settings: Settings) -> Iterator[Dispatchers]:
    slow_poll = settings.model_copy(update={"WEBHOOK_POLL_SECONDS": POLL_SECONDS,
                                            "WEBHOOK_DISPATCHERS": 2})
    running = Dispatchers(app.state.database, slow_poll, "wake")
    running.start()
    yield running
    running.stop()


def _arrives(receiver: Receiver, count: int) -> None:
    deadline = time.monotonic() + ARRIVAL_BOUND_SECONDS
    while len(receiver.received) < count:
        assert time.monotonic() < deadline, "the dispatchers slept through the commit"
        time.sleep(0.02)


def test_a_commit_in_this_process_wakes_them(client: TestClient, app: FastAPI,
                                             tokens: Tokens, receiver: Receiver,
                                             dispatchers: Dispatchers) -> None:
    subscribe(client, tokens, receiver)
    time.sleep(0.5)  # every dispatcher has looked, found nothing, and waits its minute
    emit(app.state.database)
    _arrives(receiver, 1)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_notify_from_another_process_wakes_them(client: TestClient, app: FastAPI,
                                                  tokens: Tokens, receiver: Receiver,
                                                  dispatchers: Dispatchers) -> None:
    # Without the in-process listener, this commit reaches them only as the NOTIFY any
    # process's commit sends.
    remove_commit_listener(dispatchers.wakeup.poke)
    subscribe(client, tokens, receiver)
    time.sleep(0.5)
    emit(app.state.database)
    _arrives(receiver, 1)
