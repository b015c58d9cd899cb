"""Jobs that distill BitDelta's scales and measure the gain kept, on registered data sets.

On the tiny real fine-tune of tests/finetune.py (pretrained on prose, fine-tuned on
Python), registered with its tokenizer.json: the worker fetches the data sets, distills,
evaluates, and the adapter's quality carries the losses and the gain kept, which
listings sort by.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from registry.jobs.params import BitDeltaParams, DistillStage, EvaluateStage, PinnedDataset
from registry.jobs.runner import _stage_spans
from registry.jobs.schemas import EVALUATE_MAX_TOKENS
from registry.tables import CompressMethod, Job
from tests.conftest import Tokens
from tests.finetune import FinetunePair
from tests.registry.api import push_dataset, register_finetune_pair, register_model
from tests.registry.conftest import TinyModels
from tests.registry.jobs.drive import run_all

BASE, FINETUNE = "pair-base", "pair-ft"
# Enough steps, at a rate suited to this model's large scales, for distillation to show.
DISTILL = {"dataset": "py-train", "steps": 150, "lr": 1e-3, "batch_size": 8, "seq_len": 64}
EVALUATE = {"datasets": ["py-heldout", "prose-heldout"], "seq_len": 64, "max_batches": 8}


@pytest.fixture
def registered(client: TestClient, tokens: Tokens, finetune_pair: FinetunePair) -> None:
    register_finetune_pair(client, tokens.push, finetune_pair, BASE, FINETUNE)


def _compress(client: TestClient, tokens: Tokens, method: str, **body: Any) -> dict[str, Any]:
    started = client.post(f"/models/{FINETUNE}/compress?method={method}", json=body,
                          headers=tokens.compress)
    assert started.status_code == 202, started.text
    job: dict[str, Any] = started.json()
    return job


def _finished(client: TestClient, tokens: Tokens, job_id: int) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=tokens.read).json()
    assert job["status"] == "succeeded", job
    adapter: dict[str, Any] = client.get(f"/adapters/{job['adapter']['id']}",
                                         headers=tokens.read).json()
    return adapter


@pytest.mark.slow
def test_distilled_and_evaluated_jobs_rank_by_gain_kept(app: FastAPI, client: TestClient,
                                                        tokens: Tokens,
                                                        registered: None) -> None:
    plain = _compress(client, tokens, "bitdelta", name="plain", evaluate=EVALUATE)
    distilled = _compress(client, tokens, "bitdelta", name="distilled", distill=DISTILL,
                          evaluate=EVALUATE)
    assert distilled["params"]["distill"]["dataset"]["name"] == "py-train"
    assert len(distilled["params"]["distill"]["dataset"]["digest"]) == 64
    assert run_all(app) == 2
    plain_q = _finished(client, tokens, plain["id"])["quality"]
    distilled_q = _finished(client, tokens, distilled["id"])["quality"]

    evaluation = distilled_q["evaluation"]
    assert [d["name"] for d in evaluation["datasets"]] == ["python_heldout.txt",
                                                           "prose_heldout.jsonl"]
    python = evaluation["datasets"][0]
    assert python["finetune"]["loss"] < python["base"]["loss"]  # a real fine-tune
    assert distilled_q["gain_kept"] == python["gain_kept"]
    assert distilled_q["distilled"] is True
    curve = distilled_q["distillation"]
    assert distilled_q["distill_loss_final"] < distilled_q["distill_loss_initial"]
    assert curve is not None
    # Undistilled BitDelta keeps most of the gain; distillation keeps clearly more.
    assert 0.5 < plain_q["gain_kept"] < distilled_q["gain_kept"] - 0.02
    assert "distillation" in plain_q
    assert plain_q["distillation"] is None
    tensors, layers = distilled_q["tensors"], distilled_q["verify"]["layers"]
    assert len(tensors) == len(layers) == 14  # seven projections in each of two layers
    assert all(t["kind"] == "bitdelta" and 0 < t["weight_rel_error"] < 1 for t in tensors)
    assert {row["module"] for row in layers} == {t["name"].removesuffix(".weight")
                                                 for t in tensors}
    listed = client.get("/adapters", params={"base": BASE}, headers=tokens.read).json()
    assert all("tensors" not in a["quality"] for a in listed["items"])  # detail stays out

    ranked = client.get("/adapters", params={"base": BASE, "sort": "gain_kept"},
                        headers=tokens.read).json()["items"]
    assert [a["name"] for a in ranked] == ["distilled", "plain"]
    assert ranked[0]["quality"]["gain_kept"] == distilled_q["gain_kept"]


def test_a_lora_job_is_evaluated_too(app: FastAPI, client: TestClient, tokens: Tokens,
                                     registered: None) -> None:
    job = _compress(client, tokens, "lora", rank=4,
                    evaluate={"datasets": ["py-heldout"], "seq_len": 64, "max_batches": 2})
    assert run_all(app) == 1
    quality = _finished(client, tokens, job["id"])["quality"]
    assert quality["gain_kept"] == quality["evaluation"]["datasets"][0]["gain_kept"]
    assert isinstance(quality["gain_kept"], float)
    assert quality["gain_kept_on"] == "py-heldout"  # what `ls adapters` shows beside it
    modules = quality["modules"]  # per module, for the adapter page's pictures
    assert len(modules) == 14
    assert all(m["rank"] == 4 and 0 < m["error"] < 1 for m in modules)
    assert all(1 <= len(m["singular_values"]) <= 64 for m in modules)


def test_a_job_scores_its_data_sets_whole_within_a_stated_budget(
        app: FastAPI, client: TestClient, tokens: Tokens, registered: None) -> None:
    """Issue 27: no silent 4 × 50 rows. Without max_batches every row is scored up to the
    token budget, which the job's params and the evaluation state, with what each set used."""
    job = _compress(client, tokens, "lora", rank=4,
                    evaluate={"datasets": ["py-heldout"], "seq_len": 64})
    assert (job["params"]["evaluate"]["max_batches"],
            job["params"]["evaluate"]["max_tokens"]) == (None, EVALUATE_MAX_TOKENS)
    assert run_all(app) == 1
    quality = _finished(client, tokens, job["id"])["quality"]
    evaluation = quality["evaluation"]
    assert (evaluation["max_tokens"], evaluation["max_batches"]) == (EVALUATE_MAX_TOKENS, None)
    [used] = evaluation["datasets"]
    assert used["truncated"] is False
    assert used["tokens"] == used["rows"] * (used["seq_len"] - 1)
    # Both weight errors, each under its one name (issue 27, item 2).
    assert 0 < quality["weight_rel_error_max"] < quality["delta_rel_error_max"] < 1
    assert all(0 < m["weight_rel_error"] < m["error"] for m in quality["modules"])


BAD = [
    ("lora", {"rank": 4, "distill": {"dataset": "py-train"}}, 422, "InvalidJobParameters"),
    ("bitdelta", {"distill": {"dataset": "nope"}}, 404, None),
    ("bitdelta", {"evaluate": {"datasets": ["py-heldout", "py-heldout"]}}, 422,
     "InvalidJobParameters"),
    ("bitdelta", {"evaluate": {"datasets": []}}, 422, None),
    ("bitdelta", {"distill": {"dataset": "py-train", "steps": 0}}, 422, None),
    ("bitdelta", {"distill": {"dataset": "py-train", "lr": -1}}, 422, None),
    ("bitdelta", {"distill": {"dataset": "../x"}}, 422, None),
    ("bitdelta", {"evaluate": {"datasets": ["py-heldout"], "max_tokens": 0}}, 422, None),
]


@pytest.mark.parametrize(("method", "body", "status", "error"), BAD)
def test_bad_data_set_options_queue_nothing(app: FastAPI, client: TestClient, tokens: Tokens,
                                            registered: None, method: str,
                                            body: dict[str, Any], status: int,
                                            error: str | None) -> None:
    response = client.post(f"/models/{FINETUNE}/compress?method={method}", json=body,
                           headers=tokens.compress)
    assert response.status_code == status, response.text
    if error is not None:
        assert response.json()["error"] == error
    with app.state.database.reading() as session:
        assert session.scalars(select(Job)).all() == []


def test_text_data_on_models_without_a_tokenizer_is_refused_when_asked(
        app: FastAPI, client: TestClient, tokens: Tokens, tiny_models: TinyModels,
        finetune_pair: FinetunePair) -> None:
    register_model(client, tokens.push, "tiny-base", tiny_models.base)
    register_model(client, tokens.push, "tiny-ft", tiny_models.finetune, kind="finetune",
                   base="tiny-base")
    push_dataset(client, tokens.push, "text", finetune_pair.python_text)
    response = client.post("/models/tiny-ft/compress?method=bitdelta",
                           json={"evaluate": {"datasets": ["text"]}}, headers=tokens.compress)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "MissingTokenizer"
    assert "tokenizer.json" in response.json()["detail"]


def test_a_data_set_replaced_after_queueing_fails_the_job(
        app: FastAPI, client: TestClient, tokens: Tokens, registered: None,
        finetune_pair: FinetunePair) -> None:
    job = _compress(client, tokens, "bitdelta",
                    evaluate={"datasets": ["py-heldout"], "seq_len": 64, "max_batches": 1})
    deleted = client.delete("/datasets/py-heldout", headers=tokens.admin)
    assert deleted.status_code == 204, deleted.text
    push_dataset(client, tokens.push, "py-heldout", finetune_pair.prose_jsonl)
    run_all(app)
    failed = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
    assert failed["status"] == "failed", failed
    assert failed["error"]["name"] == "DatasetChanged"
    assert "queue the job again" in failed["error"]["detail"]
    assert client.get("/adapters", headers=tokens.read).json()["items"] == []


def test_progress_spans_cover_the_stages_that_run() -> None:
    pinned = PinnedDataset(name="d", digest="0" * 64)
    every = SimpleNamespace(method=CompressMethod.BITDELTA, params=BitDeltaParams(
        targets=["q_proj"], verify="auto",
        distill=DistillStage(dataset=pinned, steps=1, lr=0.1, batch_size=1, seq_len=2, seed=0),
        evaluate=EvaluateStage(datasets=[pinned], batch_size=1, seq_len=2, max_batches=1)))
    spans = _stage_spans(every)  # type: ignore[arg-type]
    starts = [spans[s][0] for s in ("compressing", "distilling", "verifying", "evaluating")]
    assert starts == sorted(starts)
    assert starts[0] == pytest.approx(0.1)
    assert sum(spans["evaluating"]) == pytest.approx(0.95)
    alone = SimpleNamespace(method=CompressMethod.BITDELTA,
                            params=BitDeltaParams(targets=["q_proj"], verify="off"))
    spans = _stage_spans(alone)  # type: ignore[arg-type]
    assert spans["compressing"] == pytest.approx((0.1, 0.85))
    assert spans["distilling"][1] == spans["verifying"][1] == 0.0
