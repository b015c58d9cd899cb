"""Garbage collection counts data set files as references to their blobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from registry.gc.collect import collect_garbage
from registry.gc.stale_drafts import remove_stale_drafts
from registry.infra.engines import make_session_factory
from registry.storage.base import BLOB_PREFIX
from registry.storage.local import LocalBlobStore
from tests.conftest import Tokens
from tests.registry.datasets.helpers import KINDS, count_rows, push_dataset

LATER = timedelta(hours=2)  # "now" for a collection that finds every blob past its grace
HOUR = 3600


def _stored(store: LocalBlobStore) -> set[str]:
    return {o.key[len(BLOB_PREFIX):] for o in store.list_objects(BLOB_PREFIX)}


def test_a_finalized_datasets_blobs_survive_gc(client: TestClient, tokens: Tokens,
                                               engine: Engine, store: LocalBlobStore) -> None:
    client.post("/datasets", json={"name": "calib"}, headers=tokens.push)
    replaced = client.put("/datasets/calib/files/corpus.txt", content=b"first draft",
                          headers=tokens.push).json()["sha256"]
    for filename, data in KINDS.items():  # corpus.txt replaces the first upload
        client.put(f"/datasets/calib/files/{filename}", content=data, headers=tokens.push)
    final = client.post("/datasets/calib/finalize", headers=tokens.push).json()
    kept = {f["sha256"] for f in final["files"]}
    assert _stored(store) == kept | {replaced}

    report, rows = collect_garbage(make_session_factory(engine), store, grace_seconds=HOUR,
                                   now=datetime.now(UTC) + LATER)
    # Only the replaced upload goes: without the data set's files counted as references,
    # all four would.
    assert (report.blobs_deleted, rows) == (1, 1)
    assert _stored(store) == kept
    assert count_rows(engine) == (len(kept), len(kept))
    for filename, data in KINDS.items():
        got = client.get(f"/datasets/calib/files/{filename}", headers=tokens.read)
        assert got.content == data


def test_a_stale_dataset_draft_goes_with_the_blobs_only_it_held(
        client: TestClient, tokens: Tokens, engine: Engine, store: LocalBlobStore) -> None:
    push_dataset(client, tokens.push, "final", {"a.txt": b"shared text"})
    client.post("/datasets", json={"name": "abandoned"}, headers=tokens.push)
    client.put("/datasets/abandoned/files/a.txt", content=b"shared text", headers=tokens.push)
    only_draft = client.put("/datasets/abandoned/files/b.txt", content=b"draft only",
                            headers=tokens.push).json()["sha256"]

    removed = remove_stale_drafts(make_session_factory(engine), store, HOUR,
                                  now=datetime.now(UTC) + LATER)
    assert removed == 1
    assert client.get("/datasets/abandoned", headers=tokens.read).status_code == 404
    assert only_draft not in _stored(store)
    final = client.get("/datasets/final", headers=tokens.read).json()
    assert _stored(store) == {final["files"][0]["sha256"]}
    assert count_rows(engine) == (1, 1)
