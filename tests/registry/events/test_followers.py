"""Followers under load: every long-polling follower sees every event once, in order."""

from __future__ import annotations

import threading
import time

import httpx

from registry.auth.service import create_token, revoke_token
from registry.events.repository import EventRepository
from tests.conftest import LiveServer, Tokens

FOLLOWERS, PUSHERS, EVENTS_EACH = 10, 4, 15


def test_followers_see_every_event_once_in_order(live_server: LiveServer,
                                                 tokens: Tokens) -> None:
    app = live_server.app
    with app.state.database.writing() as session:  # a token of each pusher to revoke
        ids = [create_token(session, f"p{p}-{i}", ["read"]).token.id
               for p in range(PUSHERS) for i in range(EVENTS_EACH)]
    total = len(ids)
    seen: list[list[int]] = [[] for _ in range(FOLLOWERS)]
    statuses: list[int] = []
    done = threading.Event()

    def follow(index: int) -> None:
        cursor = 0
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            while len(seen[index]) < total and not done.is_set():
                answer = http.get(f"/events?after={cursor}&wait=5&limit=7",
                                  headers=tokens.read)
                statuses.append(answer.status_code)
                if answer.status_code != 200:
                    continue
                page = answer.json()
                seen[index].extend(e["id"] for e in page["items"])
                cursor = page["cursor"]

    def push(index: int) -> None:
        for token_id in ids[index::PUSHERS]:
            with app.state.database.writing() as session:
                revoke_token(session, token_id)
            time.sleep(0.01)

    followers = [threading.Thread(target=follow, args=(i,)) for i in range(FOLLOWERS)]
    for thread in followers:
        thread.start()
    pushers = [threading.Thread(target=push, args=(i,)) for i in range(PUSHERS)]
    for thread in pushers:
        thread.start()
    for thread in pushers:
        thread.join()
    for thread in followers:
        thread.join(timeout=60)
    done.set()
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    with app.state.database.reading() as session:
        committed = [e.id for e in EventRepository(session).after(
            0, types=(), base=None, name=None, limit=10 * total)]
    assert len(committed) == total
    for ids_seen in seen:
        assert ids_seen == committed  # each once, in commit order
