"""Whole-file checks of data set uploads are bounded: at most
MAX_CONCURRENT_CONTENT_CHECKS at once; an upload that cannot get a slot within
CONTENT_CHECK_WAIT_SECONDS answers 503 `ContentChecksBusy` with Retry-After and stores
nothing (issue 22: three 128 MiB uploads at once took the server to 4 GB)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from compress.modeling.data import DataKind
from registry.settings import Settings
from registry.storage.local import LocalBlobStore
from registry.uploads import pipeline
from registry.uploads.checks import CheckSlots
from tests.conftest import LiveServer, Tokens
from tests.registry.datasets.helpers import TEXT, assert_nothing_stored, count_rows


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"MAX_CONCURRENT_CONTENT_CHECKS": 1,
                                       "CONTENT_CHECK_WAIT_SECONDS": 0.2})


def test_an_upload_finding_every_slot_taken_is_told_to_retry(
        client: TestClient, tokens: Tokens, settings: Settings, engine: Engine,
        store: LocalBlobStore) -> None:
    assert client.post("/datasets", json={"name": "calib"}, headers=tokens.push).status_code == 201
    with CheckSlots.of(settings).slot("another upload"):  # the one slot is taken
        busy = client.put("/datasets/calib/files/corpus.txt", content=TEXT,
                          headers=tokens.push)
        assert (busy.status_code, busy.json()["error"]) == (503, "ContentChecksBusy")
        assert busy.headers["Retry-After"] == str(settings.RETRY_AFTER_SECONDS)
        assert "MAX_CONCURRENT_CONTENT_CHECKS" in busy.json()["detail"]
        assert_nothing_stored(engine, store)
    again = client.put("/datasets/calib/files/corpus.txt", content=TEXT, headers=tokens.push)
    assert again.status_code == 201, again.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_concurrent_uploads_are_checked_one_at_a_time(
        monkeypatch: pytest.MonkeyPatch, live_server: LiveServer, tokens: Tokens,
        engine: Engine, settings: Settings) -> None:
    """Four uploads at once with one slot and a long wait: each is checked in turn."""
    monkeypatch.setattr(settings, "CONTENT_CHECK_WAIT_SECONDS", 30.0)
    running, most = 0, 0
    lock = threading.Lock()
    check = pipeline.check_data_file

    def counted(path: Path, max_bytes: int) -> DataKind:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            threading.Event().wait(0.2)  # long enough for the others to arrive
            return check(path, max_bytes)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(pipeline, "check_data_file", counted)
    barrier = threading.Barrier(4)

    def upload(i: int) -> int:
        with httpx.Client(base_url=live_server.url, headers=tokens.push, timeout=60) as http:
            barrier.wait()
            return http.put(f"/datasets/calib/files/part-{i}.txt", content=TEXT).status_code

    with httpx.Client(base_url=live_server.url, headers=tokens.push) as http:
        assert http.post("/datasets", json={"name": "calib"}).status_code == 201
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(upload, range(4)))
    assert codes == [201] * 4
    assert most == 1
    assert count_rows(engine)[1] == 4
