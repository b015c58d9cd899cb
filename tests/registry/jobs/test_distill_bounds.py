"""A distillation whose teacher logits the scratch disk cannot hold fails its job once, for
good, and leaves no scratch files (issue 22: ENOSPC was retried as StorageUnavailable,
refilling the disk each time)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.jobs.worker import Worker
from registry.storage.base import STAGING_PREFIX
from registry.storage.local import LocalBlobStore
from registry.tables import Job
from tests.conftest import Tokens
from tests.finetune import VOCAB_SIZE, FinetunePair
from tests.registry.api import register_finetune_pair

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

BATCH_SIZE, SEQ_LEN = 8, 64


def test_teacher_logits_beyond_the_free_disk_fail_the_job_for_good(
        app: FastAPI, client: TestClient, tokens: Tokens, finetune_pair: FinetunePair,
        store: LocalBlobStore) -> None:
    register_finetune_pair(client, tokens.push, finetune_pair, "pair-base", "pair-ft")
    distill = {"dataset": "py-train", "steps": 4, "batch_size": BATCH_SIZE, "seq_len": SEQ_LEN}
    job = client.post("/models/pair-ft/compress?method=bitdelta", headers=tokens.compress,
                      json={"name": "too-big", "distill": distill}).json()
    work_dir = Path(app.state.settings.WORK_DIR)
    work_dir.mkdir(parents=True, exist_ok=True)
    # Ten times the free space in float16 logits. Raised in the database after queueing:
    # what a job may ask for at enqueue is the service's rule; this is the worker's own
    # check, which must hold whatever got queued.
    batch_bytes = BATCH_SIZE * SEQ_LEN * VOCAB_SIZE * 2
    steps = 10 * shutil.disk_usage(work_dir).free // batch_bytes
    with app.state.database.writing() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.params = {**row.params, "distill": {**row.params["distill"], "steps": steps}}
    worker = Worker(app.state.database, app.state.store, app.state.settings,
                    name="test-worker", capabilities=set())
    assert worker.run_once()
    worker.scratch.release()
    done = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
    assert done["status"] == "failed", done  # not "queued" for another attempt
    assert done["attempt"] == 1
    assert done["error"]["name"] == "ScratchDiskFull"
    detail = done["error"]["detail"]
    assert f"needs {steps * batch_bytes:,} bytes" in detail
    assert "DELTAHUB_WORK_DIR" in detail
    assert str(work_dir) in detail
    assert client.get("/adapters", headers=tokens.read).json()["items"] == []
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert [p for p in work_dir.rglob("*") if p.is_file()] == []
