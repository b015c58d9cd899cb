"""What users see of a job and its adapter names no path of the worker's scratch space
(issue 27, item 8): the evaluation report used to carry the compressed copy's path
under WORK_DIR."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.finetune import FinetunePair
from tests.registry.api import register_finetune_pair
from tests.registry.jobs.drive import run_all

EVALUATE = {"datasets": ["py-heldout"], "seq_len": 32, "max_batches": 1}
DISTILL = {"dataset": "py-train", "steps": 2, "batch_size": 2, "seq_len": 32}


def test_job_and_adapter_documents_name_no_scratch_path(
        app: FastAPI, client: TestClient, tokens: Tokens,
        finetune_pair: FinetunePair) -> None:
    register_finetune_pair(client, tokens.push, finetune_pair, "pair-base", "pair-ft")
    started = client.post("/models/pair-ft/compress?method=bitdelta", headers=tokens.compress,
                          json={"evaluate": EVALUATE, "distill": DISTILL, "verify": "off"})
    assert started.status_code == 202, started.text
    assert run_all(app) == 1
    job = client.get(f"/jobs/{started.json()['id']}", headers=tokens.read).json()
    assert job["status"] == "succeeded", job
    adapter = client.get(f"/adapters/{job['adapter']['id']}", headers=tokens.read).json()
    assert adapter["quality"]["evaluation"]["compressed_kind"] == "bitdelta"
    scratch = Path(app.state.settings.WORK_DIR)
    seen = json.dumps([job, adapter])
    for root in {str(scratch), str(scratch.resolve())}:
        assert root not in seen
    assert "job-" not in json.dumps(adapter["quality"]["evaluation"])
