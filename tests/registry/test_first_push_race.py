"""Two pushes that start a brand-new name at the same moment, against a real server with
real threads: one starts the draft, the other resumes it (same token) or is told another
push holds it (another token). Never a 500 from the name's unique constraint."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import httpx
import pytest

from tests.conftest import LiveServer, Tokens

PUSHES = 8
Start = Callable[[str], dict[str, object]]

STARTS: dict[str, Start] = {
    "models": lambda name: {"name": name, "kind": "base"},
    "datasets": lambda name: {"name": name, "description": "race"},
}


def _race(server: LiveServer, route: str, name: str, headers: list[dict[str, str]]
          ) -> list[httpx.Response]:
    barrier = Barrier(len(headers))

    def start(auth: dict[str, str]) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            barrier.wait()
            return http.post(f"/{route}", json=STARTS[route](name), headers=auth)

    with ThreadPoolExecutor(max_workers=len(headers)) as pool:
        return list(pool.map(start, headers))


@pytest.mark.parametrize("route", sorted(STARTS))
def test_one_token_racing_itself_gets_one_draft(live_server: LiveServer, tokens: Tokens,
                                                route: str) -> None:
    for round_ in range(3):  # a few rounds: the window is small
        responses = _race(live_server, route, f"race-{round_}", [tokens.push] * PUSHES)
        codes = sorted(r.status_code for r in responses)
        assert 500 not in codes, [r.text for r in responses]
        answered = [r for r in responses if r.status_code in (200, 201)]
        assert codes.count(201) == 1, codes  # the one that started it
        # The rest resumed that draft, or (SQLite's single writer) were told to retry.
        assert {r.json()["id"] for r in answered} == {
            next(r.json()["id"] for r in responses if r.status_code == 201)}
        for r in responses:
            if r.status_code not in (200, 201):
                assert r.status_code == 503, r.text
                assert "Retry-After" in r.headers


@pytest.mark.parametrize("route", sorted(STARTS))
def test_other_tokens_are_told_the_name_is_taken_by_a_pending_push(
        live_server: LiveServer, tokens: Tokens, route: str) -> None:
    others = [tokens.push, tokens.admin] * (PUSHES // 2)
    responses = _race(live_server, route, "contested", others)
    codes = sorted(r.status_code for r in responses)
    assert 500 not in codes, [r.text for r in responses]
    assert codes.count(201) == 1, codes
    starter = next(r for r in responses if r.status_code == 201)
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"] == "DraftInProgress", r.text
        else:  # the starter's token racing itself resumes; SQLite may say retry
            assert r.status_code in (200, 201, 503), r.text
            if r.status_code == 200:
                assert r.json()["id"] == starter.json()["id"]
