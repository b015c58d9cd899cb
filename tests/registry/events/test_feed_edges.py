"""The feed's edges: a cursor from another registry, and a long-poll while the server
stops."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens


def test_a_cursor_past_the_newest_event_is_refused(client: TestClient, tokens: Tokens) -> None:
    assert client.post("/tokens", json={"name": "t", "scopes": ["read"]},
                       headers=tokens.admin).status_code == 201  # no event: nothing yet
    newest = client.get("/events", headers=tokens.read).json()["cursor"]
    refused = client.get(f"/events?after={newest + 1000}", headers=tokens.read)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "CursorAhead"
    assert f"after={newest}" in refused.json()["detail"]
    assert client.get(f"/events?after={newest}", headers=tokens.read).status_code == 200


def test_a_long_poll_while_stopping_is_told_to_come_back(app: FastAPI, client: TestClient,
                                                          tokens: Tokens) -> None:
    app.state.event_feed.close()
    try:
        stopping = client.get("/events?wait=5", headers=tokens.read)
        assert stopping.status_code == 503, stopping.text
        assert stopping.json()["error"] == "ServerStopping"
        assert int(stopping.headers["retry-after"]) > 0
        # a plain read (no wait) is still answered
        assert client.get("/events", headers=tokens.read).status_code == 200
    finally:
        app.state.event_feed.open()
