from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from registry.gc.collect import collect_garbage
from registry.infra.engines import make_session_factory, unit_of_work
from registry.storage.base import BLOB_PREFIX
from registry.storage.local import LocalBlobStore
from registry.tables import Blob
from tests.conftest import Tokens
from tests.malformed import valid_safetensors


def _blob_rows(engine: Engine) -> int:
    with unit_of_work(make_session_factory(engine)) as session:
        return int(session.scalar(select(func.count()).select_from(Blob)) or 0)


def test_gc_removes_only_unreferenced_old_blobs(client: TestClient, tokens: Tokens,
                                                store: LocalBlobStore, engine: Engine) -> None:
    client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
    old = client.put("/models/m/files/config.json", content=b"{}", headers=tokens.push).json()
    # Replacing the file leaves the first blob unreferenced.
    client.put("/models/m/files/config.json", content=b'{"a": 1}', headers=tokens.push)
    client.put("/models/m/files/model.safetensors", content=valid_safetensors(),
               headers=tokens.push)
    factory = make_session_factory(engine)
    assert len(list(store.list_objects(BLOB_PREFIX))) == 3

    young, rows = collect_garbage(factory, store, grace_seconds=3600)
    assert (young.blobs_deleted, rows) == (0, 0)  # inside the grace period

    later = datetime.now(UTC) + timedelta(hours=2)
    report, rows = collect_garbage(factory, store, grace_seconds=3600, now=later)
    assert (report.blobs_deleted, rows) == (1, 1)
    assert not store.exists(old["sha256"])
    assert _blob_rows(engine) == 2
    for f in client.get("/models/m", headers=tokens.read).json()["files"]:
        assert store.exists(f["sha256"])
