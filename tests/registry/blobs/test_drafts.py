"""Abandoned drafts are removed with the blobs only they held; live ones are not."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, func, select, update

from registry.gc.stale_drafts import remove_stale_drafts
from registry.infra.engines import make_session_factory, unit_of_work
from registry.settings import Settings
from registry.storage.base import BLOB_PREFIX
from registry.storage.local import LocalBlobStore
from registry.tables import Adapter, Blob, Model, Status
from tests.conftest import LiveServer, Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels

LATER = timedelta(hours=2)  # "now" for a collection that finds every draft an hour stale
HOUR = 3600


def _stored(store: LocalBlobStore) -> set[str]:
    return {o.key[len(BLOB_PREFIX):] for o in store.list_objects(BLOB_PREFIX)}


def _count(engine: Engine, what: Any, *where: Any) -> int:
    with unit_of_work(make_session_factory(engine)) as session:
        return int(session.scalar(select(func.count()).select_from(what).where(*where)) or 0)


def _put(client: TestClient, tokens: Tokens, path: str, content: bytes) -> str:
    response = client.put(path, content=content, headers=tokens.push)
    assert response.status_code == 201, response.text
    sha256: str = response.json()["sha256"]
    return sha256


def test_stale_drafts_go_with_the_blobs_only_they_held(
        client: TestClient, tokens: Tokens, engine: Engine, store: LocalBlobStore,
        tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "base", tiny_models.base)
    shared = (tiny_models.base / "config.json").read_bytes()  # also the final model's
    client.post("/models", json={"name": "half", "kind": "base"}, headers=tokens.push)
    only_draft = _put(client, tokens, "/models/half/files/notes.txt", b"draft only")
    kept_by_model = _put(client, tokens, "/models/half/files/config.json", shared)
    draft = client.post("/adapters", json={"name": "bot", "base": "base", "kind": "lora"},
                        headers=tokens.push).json()
    only_adapter = _put(client, tokens, f"/adapters/{draft['id']}/files/README.md", b"# bot")
    recommitted = _put(client, tokens, f"/adapters/{draft['id']}/files/report.json", b"{}")
    # A concurrent upload of the same bytes has just committed this blob (its age is new)
    # and not yet recorded its row: the blob must stay.
    young = (store.root / BLOB_PREFIX / recommitted).stat().st_mtime + 3 * HOUR
    os.utime(store.root / BLOB_PREFIX / recommitted, (young, young))

    factory = make_session_factory(engine)
    assert remove_stale_drafts(factory, store, HOUR) == 0  # nothing is an hour old yet
    later = datetime.now(UTC) + LATER
    assert remove_stale_drafts(factory, store, HOUR, now=later) == 2

    assert _count(engine, Model, Model.status == Status.PENDING) == 0
    assert _count(engine, Adapter) == 0
    stored = _stored(store)
    assert not {only_draft, only_adapter} & stored
    assert {kept_by_model, recommitted} <= stored
    assert _count(engine, Blob, Blob.sha256.in_([only_draft, only_adapter])) == 0
    assert _count(engine, Blob, Blob.sha256.in_([kept_by_model, recommitted])) == 2
    assert client.get("/models/base/files/config.json", headers=tokens.read).content == shared


def test_a_touched_draft_stays_and_a_base_draft_stays_under_a_live_finetune_draft(
        client: TestClient, tokens: Tokens, engine: Engine, store: LocalBlobStore) -> None:
    for name in ("idle", "touched", "root"):
        client.post("/models", json={"name": name, "kind": "base"}, headers=tokens.push)
    _backdate(engine, Model, LATER)
    client.post("/models", json={"name": "ft", "kind": "finetune", "base": "root"},
                headers=tokens.push)
    _put(client, tokens, "/models/touched/files/config.json", b"{}")
    assert remove_stale_drafts(make_session_factory(engine), store, HOUR) == 1
    assert client.get("/models/idle", headers=tokens.read).status_code == 404
    for name in ("touched", "root", "ft"):
        assert client.get(f"/models/{name}", headers=tokens.read).status_code == 200, name


def test_resuming_a_draft_touches_it(client: TestClient, tokens: Tokens, engine: Engine,
                                     store: LocalBlobStore) -> None:
    client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
    _backdate(engine, Model, LATER)
    assert client.post("/models", json={"name": "m", "kind": "base"},
                       headers=tokens.push).status_code == 200
    assert remove_stale_drafts(make_session_factory(engine), store, HOUR) == 0


def _backdate(engine: Engine, table: type[Model] | type[Adapter], by: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(update(table).values(touched_at=datetime.now(UTC) - by))


@pytest.fixture
def paused_upload(live_server: LiveServer, tokens: Tokens) -> Iterator[
        tuple[threading.Event, list[httpx.Response]]]:
    """An upload to model `m` that sends its first bytes, then waits for the event."""
    go, answers = threading.Event(), list[httpx.Response]()

    def body() -> Iterator[bytes]:
        yield b'{"hidden_size": '
        go.wait(30)
        yield b"64}"

    def upload() -> None:
        answers.append(httpx.put(f"{live_server.url}/models/m/files/config.json",
                                 content=body(), headers=tokens.push, timeout=60))

    thread = threading.Thread(target=upload)
    thread.start()
    yield go, answers
    go.set()
    thread.join(60)


def test_a_draft_being_uploaded_to_is_not_removed(
        client: TestClient, tokens: Tokens, engine: Engine, store: LocalBlobStore,
        request: pytest.FixtureRequest) -> None:
    client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
    _backdate(engine, Model, LATER)
    go, answers = request.getfixturevalue("paused_upload")
    deadline = time.monotonic() + 20
    while _count(engine, Model, Model.touched_at > datetime.now(UTC) - LATER / 2) == 0:
        assert time.monotonic() < deadline, "the upload never touched its draft"
        time.sleep(0.05)
    assert remove_stale_drafts(make_session_factory(engine), store, HOUR) == 0
    go.set()
    deadline = time.monotonic() + 20
    while not answers:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert answers[0].status_code == 201, answers[0].text
    files = client.get("/models/m", headers=tokens.read).json()["files"]
    assert [f["filename"] for f in files] == ["config.json"]


def test_the_draft_ttl_setting_is_checked() -> None:
    assert Settings(_env_file=None).DRAFT_TTL_SECONDS == 24 * 3600
    with pytest.raises(ValidationError, match="DELTAHUB_UPLOAD_IDLE_TIMEOUT_SECONDS"):
        Settings(_env_file=None, DRAFT_TTL_SECONDS=30)
    with pytest.raises(ValidationError, match="DRAFT_TTL_SECONDS"):
        Settings(_env_file=None, DRAFT_TTL_SECONDS=0)
    with pytest.raises(ValueError, match="older_than_seconds"):
        remove_stale_drafts(None, None, 0)  # type: ignore[arg-type]
