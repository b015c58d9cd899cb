"""`Push`: the resumable, race-tolerant push, against a real server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from registry.client import DeltahubClient, Push, sha256_of
from registry.tables import Adapter, Status
from tests.conftest import LiveServer, Tokens
from tests.registry.conftest import TinyModels

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _push(server: LiveServer, token: str, directory: Path, said: list[str] | None = None
          ) -> tuple[dict[str, object], bool]:
    paths = sorted(directory.iterdir())
    client = DeltahubClient(server.url, token)
    try:
        push = Push(client, paths, {p.name: sha256_of(p) for p in paths},
                    say=(said.append if said is not None else lambda _: None))
        return push.adapter("bot", "tiny-base", "lora")
    finally:
        client.close()


def test_one_token_pushing_the_same_adapter_from_many_jobs_gets_one_version(
        live_server: LiveServer, tokens: Tokens, tiny_models: TinyModels,
        engine: Engine) -> None:
    token = tokens.push["Authorization"].split()[1]
    client = DeltahubClient(live_server.url, token)
    paths = sorted(tiny_models.base.iterdir())
    Push(client, paths, {p.name: sha256_of(p) for p in paths}).model("tiny-base")
    client.close()

    results: list[tuple[dict[str, object], bool]] = []
    errors: list[BaseException] = []

    def job() -> None:
        try:
            results.append(_push(live_server, token, tiny_models.lora))
        except BaseException as exc:  # reported below, with the others' results
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(results) == 6
    assert {(a["name"], a["version"]) for a, _ in results} == {("bot", 1)}
    assert sum(created for _, created in results) == 1
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(Adapter.status, func.count()).group_by(
            Adapter.status)).all())
    assert statuses.get(Status.READY) == 1
    # Drafts the racing jobs started for the same files either finalized into that
    # version or were dropped when it was found; none is left to clean up.
    assert statuses.get(Status.PENDING, 0) == 0


def test_a_second_run_sends_nothing_and_finds_the_version(
        live_server: LiveServer, tokens: Tokens, tiny_models: TinyModels) -> None:
    token = tokens.admin["Authorization"].split()[1]
    client = DeltahubClient(live_server.url, token)
    paths = sorted(tiny_models.base.iterdir())
    Push(client, paths, {p.name: sha256_of(p) for p in paths}).model("tiny-base")
    client.close()
    first, created = _push(live_server, token, tiny_models.lora)
    assert created
    said: list[str] = []
    again, created = _push(live_server, token, tiny_models.lora, said)
    assert (again["id"], created) == (first["id"], False)
    assert said == []  # a fresh draft, nothing to resume
