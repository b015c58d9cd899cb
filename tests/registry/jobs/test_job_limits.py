"""Bounds on what a job may ask of a worker, and on how many jobs one token may have
waiting (issue 22): refused when queued, with nothing queued, never found out on the
worker's full disk."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from registry.jobs.footprint import FinetuneShape, estimate
from registry.jobs.params import DistillStage, PinnedDataset
from registry.tables import Job
from tests.conftest import Tokens
from tests.finetune import FinetunePair
from tests.registry.api import register_finetune_pair

FINETUNE = "pair-ft"


@pytest.fixture
def registered(client: TestClient, tokens: Tokens, finetune_pair: FinetunePair) -> int:
    """The real tiny pair and its data sets; the fine-tune's max_position_embeddings."""
    register_finetune_pair(client, tokens.push, finetune_pair, "pair-base", FINETUNE)
    config = json.loads((finetune_pair.finetune / "config.json").read_text())
    positions: int = config["max_position_embeddings"]
    return positions


def _jobs(app: FastAPI) -> int:
    with app.state.database.reading() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def _refused(client: TestClient, tokens: Tokens, body: dict[str, Any], status: int,
             error: str) -> str:
    response = client.post(f"/models/{FINETUNE}/compress?method=bitdelta", json=body,
                           headers=tokens.compress)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    detail: str = response.json()["detail"]
    return detail


@pytest.mark.parametrize("stage", ["distill", "evaluate"])
def test_rows_longer_than_the_models_positions_are_refused(
        app: FastAPI, client: TestClient, tokens: Tokens, registered: int, stage: str) -> None:
    body = ({"distill": {"dataset": "py-train", "seq_len": 8192}} if stage == "distill" else
            {"evaluate": {"datasets": ["py-heldout"], "seq_len": registered + 1}})
    detail = _refused(client, tokens, body, 422, "SequenceTooLong")
    asked = body[stage]["seq_len"]
    assert f"{stage}.seq_len is {asked}" in detail
    assert f"max_position_embeddings of {registered}" in detail
    assert _jobs(app) == 0


def test_distillation_steps_are_bounded(app: FastAPI, client: TestClient, tokens: Tokens,
                                        registered: int) -> None:
    detail = _refused(client, tokens, {"distill": {"dataset": "py-train", "steps": 100_000,
                                                   "seq_len": 64}},
                      422, "JobTooLarge")
    assert "DELTAHUB_JOB_MAX_DISTILL_STEPS" in detail
    assert _jobs(app) == 0


def test_teacher_logits_that_would_fill_the_disk_are_refused(
        app: FastAPI, client: TestClient, tokens: Tokens, registered: int) -> None:
    # 10,000 steps of 256 rows of 64 tokens over a 256-token vocabulary: 84 GB of logits.
    body = {"distill": {"dataset": "py-train", "steps": 10_000, "batch_size": 256,
                        "seq_len": 64}}
    detail = _refused(client, tokens, body, 422, "JobTooLarge")
    assert "scratch disk" in detail
    assert "DELTAHUB_JOB_MAX_SCRATCH_BYTES" in detail
    assert _jobs(app) == 0


def test_a_job_over_the_memory_limit_is_refused(app: FastAPI, client: TestClient,
                                                tokens: Tokens, registered: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"evaluate": {"datasets": ["py-heldout"], "seq_len": 64}}
    monkeypatch.setattr(app.state.settings, "JOB_MAX_MEMORY_BYTES", 10**6)
    detail = _refused(client, tokens, body, 422, "JobTooLarge")
    assert "of memory" in detail
    assert "DELTAHUB_JOB_MAX_MEMORY_BYTES" in detail
    assert _jobs(app) == 0
    monkeypatch.undo()  # the default leaves room for the same job
    accepted = client.post(f"/models/{FINETUNE}/compress?method=bitdelta", json=body,
                           headers=tokens.compress)
    assert accepted.status_code == 202, accepted.text


def test_teacher_logits_are_sized_as_the_codec_writes_them() -> None:
    """float16 logits of every step's batch: the probe's 256 x 512 tokens over a 96-token
    vocabulary wrote 24 MiB a step."""
    shape = FinetuneShape(parameters=10**6, target_parameters=8 * 10**5, target_rows=1000,
                          other_bytes=10**5, vocab_size=96, max_positions=64)

    def scratch(steps: int) -> int:
        distill = DistillStage(dataset=PinnedDataset(name="d", digest="0" * 64), steps=steps,
                               lr=1e-4, batch_size=256, seq_len=512, seed=0)
        return estimate(shape, distill, None, data_bytes=0).scratch_bytes

    assert scratch(2) - scratch(1) == 256 * 512 * 96 * 2 == 24 * 2**20


def test_a_token_may_have_only_so_many_jobs_waiting(app: FastAPI, client: TestClient,
                                                    tokens: Tokens, finetune: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.state.settings, "MAX_QUEUED_JOBS_PER_TOKEN", 2)
    url = f"/models/{finetune}/compress?method=bitdelta"
    first = client.post(url, headers={**tokens.compress, "Idempotency-Key": "one"})
    assert client.post(url, headers=tokens.compress).status_code == 202
    full = client.post(url, headers=tokens.compress)
    assert full.status_code == 429, full.text
    assert full.json()["error"] == "TooManyQueuedJobs"
    assert "DELTAHUB_MAX_QUEUED_JOBS_PER_TOKEN" in full.json()["detail"]
    assert full.headers["retry-after"] == str(app.state.settings.QUEUE_FULL_RETRY_AFTER_SECONDS)
    assert _jobs(app) == 2
    # A retry of a queued job is not a new job; another token has its own quota.
    retry = client.post(url, headers={**tokens.compress, "Idempotency-Key": "one"})
    assert (retry.status_code, retry.json()["id"]) == (200, first.json()["id"])
    assert client.post(url, headers=tokens.admin).status_code == 202
    # A cancelled job leaves room for the next.
    client.post(f"/jobs/{first.json()['id']}/cancel", headers=tokens.compress)
    assert client.post(url, headers=tokens.compress).status_code == 202
    assert _jobs(app) == 4
