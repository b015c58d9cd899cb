"""Two pushes that start a brand-new name at the same moment, against a real server with
real threads: one starts the draft, the other resumes it (same token) or is told another
push holds it (another token). Never a 500 from the name's unique constraint."""

from __future__ import annotations

import hashlib
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


def _race(server: LiveServer, route: str, name: str, headers: list[dict[str, str]],
          files: list[dict[str, str]] | None = None) -> list[httpx.Response]:
    """Each of `headers` starts a push of `name` at once (declaring `files[i]`, if given)."""
    barrier = Barrier(len(headers))
    declared = files or [{} for _ in headers]

    def start(auth: dict[str, str], files: dict[str, str]) -> httpx.Response:
        body = {**STARTS[route](name), **({"files": files} if files else {})}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            barrier.wait()
            return http.post(f"/{route}", json=body, headers=auth)

    with ThreadPoolExecutor(max_workers=len(headers)) as pool:
        return list(pool.map(start, headers, declared))


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


FILE_OF = {"models": "config.json", "datasets": "corpus.txt"}


def _declared(route: str, count: int) -> list[dict[str, str]]:
    """`count` different declarations of one file (another sha256 each)."""
    return [{FILE_OF[route]: hashlib.sha256(f"content {i}".encode()).hexdigest()}
            for i in range(count)]


@pytest.mark.slow
@pytest.mark.parametrize("route", sorted(STARTS))
def test_many_racers_declaring_other_files_never_get_a_500(
        live_server: LiveServer, tokens: Tokens, route: str) -> None:
    """Issue 22: with 3+ racers, the single retry's delete and insert collided again.

    Each racer sees what the one before it committed: one token's pushes of other files
    each replace the draft (201), another token's get 409 DraftInProgress.
    """
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        for round_ in range(20):
            name = f"declared-{round_}"
            racers = [tokens.push, tokens.push, tokens.push, tokens.admin]
            responses = _race(live_server, route, name, racers, _declared(route, 4))
            by_token = {"push": responses[:3], "admin": responses[3:]}
            codes = sorted(r.status_code for r in responses)
            assert 500 not in codes, [r.text for r in responses]
            created = [r for r in responses if r.status_code == 201]
            assert created, codes
            for r in responses:
                if r.status_code == 409:
                    assert r.json()["error"] == "DraftInProgress", r.text
                elif r.status_code == 503:  # SQLite's single writer: told to retry
                    assert "Retry-After" in r.headers
                else:
                    assert r.status_code == 201, r.text  # other files: a new draft
            # One token or the other holds the name, never both.
            assert not ({r.status_code for r in by_token["push"]} & {201}
                        and by_token["admin"][0].status_code == 201), codes
            # One draft is left, the last one started, holding no file.
            shown = http.get(f"/{route}/{name}", headers=tokens.read).json()
            assert shown["status"] == "pending"
            assert shown["id"] in {r.json()["id"] for r in created}
            assert shown["files"] == []
            listed = http.get(f"/{route}", params={"status": "pending"} if route == "datasets"
                              else {}, headers=tokens.read).json()["items"]
            assert [d["name"] for d in listed].count(name) == 1
