"""A running job's cancellation takes effect within one model run at every stage that runs
models: the fine-tune's logits, the probes and steps of distillation, and evaluation
(issue 22: a cancelled distillation ran on for 71 s).

The worker's heartbeat sets `Control.cancel` when it sees the request; here the test sets
it from a forward hook at a chosen model run, and counts the runs after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.jobs import queue
from registry.jobs.attempt import Control
from registry.jobs.worker import Worker
from registry.storage.base import STAGING_PREFIX
from registry.storage.local import LocalBlobStore
from tests.conftest import Tokens
from tests.finetune import FinetunePair
from tests.registry.api import register_finetune_pair

pytestmark = [pytest.mark.slow,  # about 10 s a stage: the pair is registered each time
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

STEPS, PROBES, EVAL_BATCHES = 3, 3, 2  # PROBES: min(PROBE_BATCHES, STEPS)
DISTILL = {"dataset": "py-train", "steps": STEPS, "lr": 1e-3, "batch_size": 2, "seq_len": 16}
EVALUATE = {"datasets": ["py-heldout"], "batch_size": 2, "seq_len": 16,
            "max_batches": EVAL_BATCHES}
# The model run (1-based, in the order the job runs them) during which the cancellation
# arrives, by what the job is doing then.
CANCEL_AT = {
    "fine-tune logits": 2,
    "initial probe": STEPS + 1,
    "distillation step": STEPS + PROBES + 2,
    "final probe": 2 * STEPS + PROBES + 1,
    "evaluating the result": 2 * STEPS + 2 * PROBES + 2 * EVAL_BATCHES + 1,
}


@pytest.fixture
def registered(client: TestClient, tokens: Tokens, finetune_pair: FinetunePair) -> None:
    register_finetune_pair(client, tokens.push, finetune_pair, "pair-base", "pair-ft")


@pytest.fixture
def model_runs() -> Iterator[list[bool]]:
    """One entry per whole causal LM run: whether cancellation had been asked for by then."""
    runs: list[bool] = []
    yield runs
    assert runs, "no model ran"


@pytest.mark.parametrize("stage", list(CANCEL_AT))
def test_a_cancelled_job_stops_within_the_model_run_it_is_in(
        app: FastAPI, client: TestClient, tokens: Tokens, registered: None,
        store: LocalBlobStore, model_runs: list[bool], stage: str) -> None:
    job = client.post("/models/pair-ft/compress?method=bitdelta", headers=tokens.compress,
                      json={"name": "cancelled", "distill": DISTILL, "evaluate": EVALUATE})
    assert job.status_code == 202, job.text
    worker = Worker(app.state.database, app.state.store, app.state.settings,
                    name="test-worker", capabilities=set())
    with app.state.database.writing() as session:
        claimed = queue.claim(session, worker.name, set(), app.state.settings)
    assert claimed is not None
    control = Control.new()

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        if type(module).__name__.endswith("ForCausalLM"):
            model_runs.append(control.cancel.is_set())
            if len(model_runs) == CANCEL_AT[stage]:
                control.cancel.set()  # what the heartbeat does on a cancel request

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        worker._attempt(claimed, control)
    finally:
        handle.remove()
    assert len(model_runs) == CANCEL_AT[stage]
    assert not any(model_runs)  # no model ran after the request
    done = client.get(f"/jobs/{job.json()['id']}", headers=tokens.read).json()
    assert done["status"] == "cancelled", done
    assert client.get("/adapters", headers=tokens.read).json()["items"] == []
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert list(Path(app.state.settings.WORK_DIR).glob("*/job-*")) == []
    worker.scratch.release()
