"""SQL statements per request: a fixed number per route, whatever the page size (no
statement per item), and a listing in at most three."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from registry.infra.conditional import AnswerCache
from tests.conftest import Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels


class Statements:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # SQLite's BEGIN is sent as a statement (registry/infra/engines.py); PostgreSQL's
        # is not: neither is work the database plans.
        # The event feed's watcher reads the newest id in the background when a commit
        # notification asks it to: not the request's.
        if statement.strip().upper() not in ("BEGIN", "BEGIN IMMEDIATE") and not (
                statement.startswith("SELECT max(events.id)")):
            self.seen.append(statement)

    def during(self, client: TestClient, url: str, headers: dict[str, str]) -> int:
        # A first request starts what the process starts once (the event feed's watcher
        # reads the newest id when it starts): not the route's cost.
        client.get(url, headers=headers)
        self.seen.clear()
        answer = client.get(url, headers=headers)
        assert answer.status_code in (200, 304), answer.text
        return len(self.seen)


@pytest.fixture
def statements(app: FastAPI, client: TestClient) -> Iterator[Statements]:
    counter = Statements()
    engines = {app.state.database.read_engine, app.state.database.write_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", counter)
    yield counter
    for engine in engines:
        event.remove(engine, "before_cursor_execute", counter)


@pytest.fixture
def many(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    """One base with five adapter names, the last with an alias."""
    register_model(client, tokens.push, "tiny-base", tiny_models.base)
    for index in range(5):
        pushed = push_adapter(client, tokens.push, f"bot-{index}", "tiny-base", tiny_models.lora)
        assert pushed.status_code == 201, pushed.text
    assert client.put("/adapters/bot-4@1/aliases/prod", headers=tokens.push).status_code == 200


def test_a_listing_takes_three_statements_at_any_page_size(
        app: FastAPI, client: TestClient, tokens: Tokens, statements: Statements,
        many: None) -> None:
    app.state.answers = AnswerCache(0)  # every listing read afresh
    one = statements.during(client, "/adapters?base=tiny-base&limit=1", tokens.read)
    five = statements.during(client, "/adapters?base=tiny-base&limit=5", tokens.read)
    # the token with the newest change id; the page with its models' names; its files
    # and aliases
    assert one == five == 3, statements.seen
    filtered = statements.during(client, "/adapters?base=tiny-base&alias=prod&kind=lora",
                                 tokens.read)
    assert filtered == 3, statements.seen


def test_a_repeated_listing_is_answered_from_the_answer_cache(
        client: TestClient, tokens: Tokens, statements: Statements, many: None) -> None:
    url = "/adapters?base=tiny-base"
    first = client.get(url, headers=tokens.read)
    assert statements.during(client, url, tokens.read) == 1  # the token check
    again = client.get(url, headers=tokens.read)
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert client.put("/adapters/bot-0@1/aliases/prod", headers=tokens.push).status_code == 200
    moved = client.get(url, headers=tokens.read)  # a change: read afresh, and shown
    assert moved.headers["etag"] != first.headers["etag"]
    assert [a["aliases"] for a in moved.json()["items"] if a["name"] == "bot-0"] == [
        ["latest", "prod"]]


def test_a_304_takes_one_statement(client: TestClient, tokens: Tokens,
                                   statements: Statements, many: None) -> None:
    url = "/adapters?base=tiny-base"
    tag = client.get(url, headers=tokens.read).headers["etag"]
    assert statements.during(client, url, {**tokens.read, "If-None-Match": tag}) == 1


@pytest.mark.parametrize(("url", "most"), [
    ("/adapters/bot-1@1", 5), ("/adapters/bot-4:prod", 5), ("/models", 3),
    ("/models/tiny-base", 4), ("/jobs", 3), ("/datasets", 3), ("/events?limit=5", 3),
])
def test_other_routes_take_a_fixed_number(client: TestClient, tokens: Tokens,
                                          statements: Statements, many: None, url: str,
                                          most: int) -> None:
    """The numbers as they are: a change that adds a statement to a route shows here."""
    assert statements.during(client, url, tokens.read) <= most, "\n".join(
        s[:300] for s in statements.seen)
