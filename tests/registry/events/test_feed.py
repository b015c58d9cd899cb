"""GET /events: filters, cursor, limit, retention's 410, refusals, rollbacks, long-polls."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from registry.auth.service import create_token, revoke_token
from registry.events.outbox import record_event
from registry.events.payloads import token_data
from registry.events.schemas import EventType
from registry.events.service import prune_events
from registry.tables import Token
from tests.conftest import LiveServer, Tokens
from tests.registry.events.conftest import Feed


def _revoke_tokens(app: FastAPI, count: int, prefix: str = "t") -> list[int]:
    """`count` token.revoked events (the cheapest real change), one transaction each."""
    ids = []
    for i in range(count):
        with app.state.database.writing() as session:
            token = create_token(session, f"{prefix}{i}", ["read"]).token
            ids.append(token.id)
        with app.state.database.writing() as session:
            revoke_token(session, token.id)
    return ids


def test_cursor_limit_and_filters(app: FastAPI, client: TestClient, tokens: Tokens,
                                  feed: Feed) -> None:
    _revoke_tokens(app, 5)
    everything = feed()
    assert [e["data"]["name"] for e in everything] == ["t0", "t1", "t2", "t3", "t4"]
    page = client.get("/events?limit=2", headers=tokens.read).json()
    assert [e["data"]["name"] for e in page["items"]] == ["t0", "t1"]
    after = client.get(f"/events?after={page['cursor']}&limit=2", headers=tokens.read).json()
    assert [e["data"]["name"] for e in after["items"]] == ["t2", "t3"]
    end = client.get(f"/events?after={everything[-1]['id']}", headers=tokens.read).json()
    assert end == {"items": [], "cursor": everything[-1]["id"]}  # nothing new: same cursor
    assert [e["data"]["name"] for e in feed(name="t3")] == ["t3"]
    assert feed(types="adapter.registered,alias.set") == []
    assert len(feed(types="token.revoked, alias.set")) == 5
    assert feed(base="llama") == []


@pytest.mark.parametrize(("query", "error"), [
    ("types=adapter.registred", "InvalidRequest"), ("types=,", "InvalidRequest"),
    ("wait=30.5", "InvalidRequest"), ("wait=-1", "ValidationError"),
    ("after=-1", "ValidationError"), ("after=x", "ValidationError"),
    ("limit=0", "InvalidRequest"), ("limit=100000", "InvalidRequest"),
    ("name=bad%20name", "InvalidName"),
])
def test_bad_queries_are_422(client: TestClient, tokens: Tokens, query: str,
                             error: str) -> None:
    answer = client.get(f"/events?{query}", headers=tokens.read)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == error
    assert answer.json()["detail"]


def test_the_feed_needs_a_token(client: TestClient) -> None:
    assert client.get("/events").status_code == 401


def test_a_cursor_older_than_retention_is_410(app: FastAPI, client: TestClient,
                                               tokens: Tokens, feed: Feed) -> None:
    _revoke_tokens(app, 3)
    ids = [e["id"] for e in feed()]
    with app.state.database.writing() as session:  # nothing is old enough yet
        assert prune_events(session, app.state.settings).events == 0
    later = datetime.now(UTC) + timedelta(days=app.state.settings.EVENT_RETENTION_DAYS + 1)
    with app.state.database.writing() as session:
        assert prune_events(session, app.state.settings, now=later).events == 3
    gone = client.get("/events?after=0", headers=tokens.read)
    assert gone.status_code == 410
    assert gone.json()["error"] == "CursorExpired"
    assert f"after={ids[-1]}" in gone.json()["detail"]
    assert client.get(f"/events?after={ids[0]}", headers=tokens.read).status_code == 410
    # Ids are never reused after a prune: the next event comes after the cursor.
    _revoke_tokens(app, 1, prefix="new")
    fresh = client.get(f"/events?after={ids[-1]}", headers=tokens.read).json()["items"]
    assert [e["data"]["name"] for e in fresh] == ["new0"]
    assert fresh[0]["id"] > ids[-1]


def test_a_rolled_back_change_emits_nothing(app: FastAPI, feed: Feed) -> None:
    with app.state.database.writing() as session:
        token = create_token(session, "kept", ["read"]).token

    def failing_request() -> None:
        with app.state.database.writing() as session:
            revoke_token(session, token.id)
            raise RuntimeError("the request failed after the change")

    with pytest.raises(RuntimeError):
        failing_request()
    with app.state.database.writing() as session:
        row = session.get(Token, token.id)
        assert row is not None
        assert row.revoked_at is None
        record_event(session, EventType.TOKEN_REVOKED, token_data(row))
        session.rollback()  # a rollback drops what was recorded
    assert feed() == []
    # The session goes on to commit something else: still nothing of the rolled back.
    with app.state.database.writing() as session:
        row = session.get(Token, token.id)
        assert row is not None
        record_event(session, EventType.TOKEN_REVOKED, token_data(row))
        session.rollback()
        session.get(Token, token.id)
    assert feed() == []


def test_a_refused_change_emits_nothing(client: TestClient, tokens: Tokens, feed: Feed) -> None:
    # The last admin token cannot be revoked (409): no event either.
    admin_id = next(t["id"] for t in client.get("/tokens", headers=tokens.admin).json()
                    if "admin" in t["scopes"])
    assert client.delete(f"/tokens/{admin_id}", headers=tokens.admin).status_code == 409
    assert feed() == []


def _long_poll(url: str, headers: dict[str, str], query: str,
               answers: list[Any]) -> threading.Thread:
    import httpx

    def run() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            answers.append(http.get(f"/events?{query}", headers=headers))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_long_poll_answers_when_a_matching_event_commits(
        app: FastAPI, live_server: LiveServer, tokens: Tokens) -> None:
    _revoke_tokens(app, 1, prefix="old")
    answers: list[Any] = []
    started = time.monotonic()
    wait = 4  # a wake-up that waited for a batch of notifications would miss it
    thread = _long_poll(live_server.url, tokens.read,
                        f"after=1&types=token.revoked&name=wanted&wait={wait}", answers)
    time.sleep(0.5)  # it is waiting now (or reads after the event: the same answer)
    _revoke_tokens(app, 1, prefix="other")  # not a match: it keeps waiting
    time.sleep(0.3)
    assert thread.is_alive()
    with app.state.database.writing() as session:
        token = create_token(session, "wanted", ["read"]).token
    with app.state.database.writing() as session:
        revoke_token(session, token.id)
    thread.join(timeout=wait + 10)
    assert time.monotonic() - started < wait  # woken, not timed out
    assert answers[0].status_code == 200
    body = answers[0].json()
    assert [e["data"]["name"] for e in body["items"]] == ["wanted"]
    assert body["cursor"] == body["items"][0]["id"]


def test_a_long_poll_with_nothing_new_answers_the_same_cursor(
        live_server: LiveServer, tokens: Tokens) -> None:
    answers: list[Any] = []
    _long_poll(live_server.url, tokens.read, "after=0&wait=0.5", answers).join(timeout=20)
    assert answers[0].json() == {"items": [], "cursor": 0}


def test_closing_the_feed_answers_waiters_at_once(app: FastAPI, live_server: LiveServer,
                                                  tokens: Tokens) -> None:
    answers: list[Any] = []
    started = time.monotonic()
    thread = _long_poll(live_server.url, tokens.read, "wait=25", answers)
    deadline = time.monotonic() + 10
    while app.state.event_feed.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    metrics = TestClient(app).get("/metrics", headers=tokens.read).text
    assert "deltahub_event_followers 1.0" in metrics
    app.state.event_feed.close()  # what server shutdown does
    thread.join(timeout=30)
    assert time.monotonic() - started < 25
    # told to come back later rather than given an empty page to ask again at once
    assert answers[0].status_code == 503
    assert answers[0].json()["error"] == "ServerStopping"
    assert int(answers[0].headers["retry-after"]) > 0


def test_the_document_has_a_schema_per_event_type(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    items = doc["components"]["schemas"]["EventsPage"]["properties"]["items"]["items"]
    mapping = items["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(t.value for t in EventType)
    alias_set = doc["components"]["schemas"]["AliasData"]["properties"]
    assert {"version", "previous_version"} <= set(alias_set)
    assert "410" in doc["paths"]["/events"]["get"]["responses"]


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_lost_listen_connection_still_wakes_waiters(app: FastAPI, live_server: LiveServer,
                                                     tokens: Tokens, engine: Engine) -> None:
    def listener_pids() -> list[int]:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN deltahub_events%' "
                "AND datname = current_database()")).scalars())

    answers: list[Any] = []
    wait = 8
    thread = _long_poll(live_server.url, tokens.read, f"after=0&wait={wait}", answers)
    deadline = time.monotonic() + 10
    while not listener_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = listener_pids()
    assert len(pids) == 1  # one per server process, however many wait
    with engine.connect() as conn:  # the server's LISTEN connection dies
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    started = time.monotonic()
    _revoke_tokens(app, 1, prefix="after-the-loss")
    thread.join(timeout=wait + 10)
    assert time.monotonic() - started < wait  # answered, not timed out
    assert [e["data"]["name"] for e in answers[0].json()["items"]] == ["after-the-loss0"]


def test_events_a_waiter_does_not_ask_for_do_not_make_it_read_again(
        app: FastAPI, live_server: LiveServer, tokens: Tokens,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher reads each new event's key once; a follower of other events is woken
    but matches nothing, so the database is not read again for it (issue 24's CPU aim:
    100 idle followers cost a read each per commit before)."""
    from registry.events import service

    reads: list[int] = []
    read_page = service.read_page

    def counted(session: Any, query: Any) -> Any:
        reads.append(query.after)
        return read_page(session, query)

    monkeypatch.setattr(service, "read_page", counted)
    answers: list[Any] = []
    thread = _long_poll(live_server.url, tokens.read,
                        "types=alias.set&name=wanted&wait=20", answers)
    deadline = time.monotonic() + 20
    while app.state.event_feed.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # the watcher has started its log
    first = len(reads)
    _revoke_tokens(app, 10, prefix="other")  # ten commits, none a match
    time.sleep(1.0)  # SQLite's watcher looks every EVENTS_POLL_SECONDS
    assert thread.is_alive()
    assert len(reads) == first  # woken ten times, read nothing
    with app.state.database.writing() as session:
        record_event(session, EventType.ALIAS_SET, _alias("wanted"))
    thread.join(timeout=20)
    assert [e["data"]["name"] for e in answers[0].json()["items"]] == ["wanted"]
    assert len(reads) == first + 1


def _alias(name: str) -> Any:
    from registry.events.schemas import AliasData

    return AliasData(name=name, alias="prod", base="b", adapter_id=1, version=1,
                     previous_version=None, path=f"/adapters/{name}:prod")
