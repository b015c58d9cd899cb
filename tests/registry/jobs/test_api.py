"""Compression jobs end to end: a request, a worker, a verified and registered adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from sqlalchemy import update

from compress.bitdelta import merge_bitdelta
from registry.jobs import queue
from registry.jobs.attempt import Control
from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX
from registry.storage.local import LocalBlobStore
from registry.tables import Job, utcnow
from tests.conftest import Tokens
from tests.models import TINY_LLAMA
from tests.registry.conftest import TinyModels
from tests.registry.jobs.drive import run_all, worker


def test_bitdelta_job_registers_a_verified_adapter(app: FastAPI, client: TestClient,
                                                   tokens: Tokens, finetune: str) -> None:
    started = client.post(f"/models/{finetune}/compress?method=bitdelta",
                          json={"alias": "prod"}, headers=tokens.compress)
    assert started.status_code == 202, started.text
    job: dict[str, Any] = started.json()
    assert started.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert run_all(app) == 1
    done = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
    assert done["status"] == "succeeded", done
    assert done["progress"]["fraction"] == 1.0
    adapter = done["adapter"]
    assert adapter["name"] == "tiny-ft-bitdelta"
    assert adapter["version"] == 1
    listed = client.get("/adapters?base=tiny-base", headers=tokens.read).json()["items"]
    assert [a["id"] for a in listed] == [adapter["id"]]
    assert listed[0]["source_model"] == finetune
    assert listed[0]["quality"]["verified_with"] == "torch on cpu"
    assert listed[0]["compression_ratio"] > 1
    assert set(listed[0]["aliases"]) == {"latest", "prod"}



def _pull(client: TestClient, tokens: Tokens, adapter_id: int, dest: Path) -> Path:
    dest.mkdir(parents=True)
    adapter = client.get(f"/adapters/{adapter_id}", headers=tokens.read).json()
    for f in adapter["files"]:
        got = client.get(f"/adapters/{adapter_id}/files/{f['filename']}", headers=tokens.read)
        assert got.status_code == 200
        (dest / f["filename"]).write_bytes(got.content)
    return dest


def _logits(model_dir: Path) -> torch.Tensor:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.arange(0, 40).reshape(2, 20) % TINY_LLAMA["vocab_size"]
    with torch.no_grad():
        return model(ids).logits


def test_a_pulled_bitdelta_merges_into_a_model_closer_to_the_finetune(
        app: FastAPI, client: TestClient, tokens: Tokens, finetune: str,
        tiny_models: TinyModels, tmp_path: Path) -> None:
    job = client.post(f"/models/{finetune}/compress?method=bitdelta",
                      headers=tokens.compress).json()
    run_all(app)
    adapter_id = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()["adapter"]["id"]
    delta = _pull(client, tokens, adapter_id, tmp_path / "delta")
    merged = tmp_path / "merged"
    merge_bitdelta(tiny_models.base, delta, merged)
    target = _logits(tiny_models.finetune)
    merged_gap = (_logits(merged) - target).norm()
    base_gap = (_logits(tiny_models.base) - target).norm()
    assert merged_gap < 0.5 * base_gap


def test_a_lora_job_registers_an_adapter_peft_loads(app: FastAPI, client: TestClient,
                                                    tokens: Tokens, finetune: str,
                                                    tiny_models: TinyModels,
                                                    tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    started = client.post(f"/models/{finetune}/compress?method=lora",
                          json={"rank": 4, "name": "tiny-lora"}, headers=tokens.compress)
    assert started.status_code == 202, started.text
    run_all(app)
    done = client.get(f"/jobs/{started.json()['id']}", headers=tokens.read).json()
    assert done["status"] == "succeeded", done
    assert done["params"]["targets_only"] is False  # the default carries norms, embeddings
    adapter = client.get(f"/adapters/{done['adapter']['id']}", headers=tokens.read).json()
    assert adapter["kind"] == "lora"
    assert adapter["source_model"] == finetune
    figures = adapter["quality"]
    assert 0 < figures["weight_rel_error_max"] < figures["delta_rel_error_max"] < 1
    pulled = _pull(client, tokens, adapter["id"], tmp_path / "lora")
    config = json.loads((pulled / "adapter_config.json").read_text())
    assert {"lm_head", "model.embed_tokens", "model.norm"} <= set(config["modules_to_save"])
    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_models.base),
                                      pulled)
    merged = model.merge_and_unload().eval()
    ids = torch.arange(0, 40).reshape(2, 20) % TINY_LLAMA["vocab_size"]
    with torch.no_grad():
        got = merged(ids).logits
    target = _logits(tiny_models.finetune)
    assert (got - target).norm() < (_logits(tiny_models.base) - target).norm()


BAD_REQUESTS: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
    ("tiny-base", "bitdelta", None, 422, "NotAFinetune"),
    ("nope", "bitdelta", None, 404, "ModelNotFound"),
    ("tiny-ft", "zip", None, 422, "ValidationError"),
    ("tiny-ft", "lora", None, 422, "InvalidJobParameters"),
    ("tiny-ft", "lora", {"rank": 4, "target_error": 0.1}, 422, "InvalidJobParameters"),
    ("tiny-ft", "lora", {"rank": 0}, 422, "ValidationError"),
    ("tiny-ft", "lora", {"target_error": 1.5}, 422, "ValidationError"),
    ("tiny-ft", "lora", {"rank": 4, "max_rank": 8}, 422, "InvalidJobParameters"),
    ("tiny-ft", "bitdelta", {"rank": 4}, 422, "InvalidJobParameters"),
    ("tiny-ft", "lora", {"rank": 4, "scale_mode": "row"}, 422, "InvalidJobParameters"),
    ("tiny-ft", "bitdelta", {"targets_only": True}, 422, "InvalidJobParameters"),
    ("tiny-ft", "lora", {"rank": 4, "targets_only": True, "save_modules": True}, 422,
     "InvalidJobParameters"),
    ("tiny-ft", "lora", {"rank": 4, "targets_only": [True]}, 422, "ValidationError"),
    ("tiny-ft", "bitdelta", {"targets": ["no_such_proj"]}, 422, "UnknownTargets"),
    ("tiny-ft", "bitdelta", {"targets": ["(a+)+$"]}, 422, "ValidationError"),
    ("tiny-ft", "bitdelta", {"name": "bad name"}, 422, "ValidationError"),
    ("tiny-ft", "bitdelta", {"verify": "tpu"}, 422, "ValidationError"),
    ("tiny-ft", "bitdelta", {"surprise": 1}, 422, "ValidationError"),
]


@pytest.mark.parametrize(("model", "method", "body", "status", "error"), BAD_REQUESTS)
def test_bad_requests_enqueue_nothing(client: TestClient, tokens: Tokens, finetune: str,
                                      model: str, method: str, body: dict[str, Any] | None,
                                      status: int, error: str) -> None:
    response = client.post(f"/models/{model}/compress?method={method}", json=body,
                           headers=tokens.compress)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert client.get("/jobs", headers=tokens.read).json()["items"] == []


def test_compress_needs_the_compress_scope(client: TestClient, tokens: Tokens,
                                           finetune: str) -> None:
    for headers in (tokens.read, tokens.push):
        response = client.post(f"/models/{finetune}/compress?method=bitdelta",
                               headers=headers)
        assert response.status_code == 403
        assert "compress" in response.json()["detail"]
    assert client.get("/jobs", headers=tokens.read).json()["items"] == []


def test_a_pending_finetune_cannot_be_compressed(client: TestClient, tokens: Tokens,
                                                 finetune: str) -> None:
    client.post("/models", json={"name": "draft-ft", "kind": "finetune", "base": "tiny-base"},
                headers=tokens.push)
    response = client.post("/models/draft-ft/compress?method=bitdelta",
                           headers=tokens.compress)
    assert response.status_code == 409
    assert response.json()["error"] == "NotReady"


def test_an_idempotency_key_returns_the_same_job(client: TestClient, tokens: Tokens,
                                                 finetune: str) -> None:
    headers = {**tokens.compress, "Idempotency-Key": "ci-run-42"}
    first = client.post(f"/models/{finetune}/compress?method=bitdelta", headers=headers)
    again = client.post(f"/models/{finetune}/compress?method=bitdelta", headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    other = client.post(f"/models/{finetune}/compress?method=lora", json={"rank": 2},
                        headers=headers)
    assert other.status_code == 422
    assert other.json()["error"] == "IdempotencyKeyReused"
    assert len(client.get("/jobs", headers=tokens.read).json()["items"]) == 1


def test_cancelling_a_queued_job_is_immediate(app: FastAPI, client: TestClient,
                                              tokens: Tokens, finetune: str) -> None:
    job = client.post(f"/models/{finetune}/compress?method=bitdelta",
                      headers=tokens.compress).json()
    cancelled = client.post(f"/jobs/{job['id']}/cancel", headers=tokens.compress)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert run_all(app) == 0
    again = client.post(f"/jobs/{job['id']}/cancel", headers=tokens.compress)
    assert again.status_code == 409
    assert again.json()["error"] == "JobFinished"


def test_cancelling_a_running_job_stops_it_and_registers_nothing(
        app: FastAPI, client: TestClient, tokens: Tokens, finetune: str,
        store: LocalBlobStore) -> None:
    job = client.post(f"/models/{finetune}/compress?method=bitdelta",
                      headers=tokens.compress).json()
    w = worker(app)
    with app.state.database.writing() as session:
        claimed = queue.claim(session, w.name, set(), app.state.settings)
    assert claimed is not None
    running = client.post(f"/jobs/{job['id']}/cancel", headers=tokens.compress).json()
    assert running["status"] == "running"
    assert running["cancel_requested"]
    w._attempt(claimed, Control.new())  # stops at its first progress point
    done = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
    assert done["status"] == "cancelled", done
    assert client.get("/adapters", headers=tokens.read).json()["items"] == []
    assert list(store.list_objects(STAGING_PREFIX)) == []


def test_a_nan_in_the_stored_finetune_fails_the_job_once(app: FastAPI, client: TestClient,
                                                         tokens: Tokens, finetune: str,
                                                         store: LocalBlobStore) -> None:
    """The registry refuses NaN on upload; a blob that rotted in storage is caught too."""
    model = client.get(f"/models/{finetune}", headers=tokens.read).json()
    weights = next(f for f in model["files"] if f["filename"].endswith(".safetensors"))
    path = store.root / BLOB_PREFIX / weights["sha256"]
    tensors = load_file(path)
    name = sorted(k for k in tensors if k.endswith("q_proj.weight"))[0]
    tensors[name][0, 0] = float("nan")
    save_file(tensors, path, metadata={"format": "pt"})
    job = client.post(f"/models/{finetune}/compress?method=bitdelta",
                      headers=tokens.compress).json()
    assert run_all(app) == 1  # failed once: a bad input is not retried
    done = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
    assert done["status"] == "failed"
    assert done["attempt"] == 1
    assert done["error"]["name"] == "NonFiniteTensor"
    assert name in done["error"]["detail"]
    assert client.get("/adapters", headers=tokens.read).json()["items"] == []


def test_storage_down_mid_job_retries_with_backoff_and_succeeds(
        app: FastAPI, client: TestClient, tokens: Tokens, finetune: str,
        store: LocalBlobStore) -> None:
    job = client.post(f"/models/{finetune}/compress?method=bitdelta",
                      headers=tokens.compress).json()
    staging = store.root / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.write_text("not a directory")  # reads work, every write fails
    assert run_all(app) == 1
    retrying = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
    assert retrying["status"] == "queued", retrying
    assert retrying["error"]["name"] == "StorageUnavailable"
    assert retrying["next_run_at"] > retrying["updated_at"]  # backoff, not at once
    staging.unlink()
    staging.mkdir()  # storage is back
    _due_now(app, job["id"])
    assert run_all(app) == 1
    done = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2, done
    assert done["error"] is None


def _due_now(app: FastAPI, job_id: int) -> None:
    with app.state.database.writing() as session:
        session.execute(update(Job).where(Job.id == job_id).values(next_run_at=utcnow()))


def test_identical_output_returns_the_existing_version(app: FastAPI, client: TestClient,
                                                       tokens: Tokens, finetune: str) -> None:
    first = client.post(f"/models/{finetune}/compress?method=bitdelta",
                        headers=tokens.compress).json()
    second = client.post(f"/models/{finetune}/compress?method=bitdelta",
                         headers=tokens.compress).json()
    assert run_all(app) == 2
    a = client.get(f"/jobs/{first['id']}", headers=tokens.read).json()["adapter"]
    b = client.get(f"/jobs/{second['id']}", headers=tokens.read).json()["adapter"]
    assert a == b  # deterministic codec, same bytes: one version
    assert len(client.get("/adapters", headers=tokens.read).json()["items"]) == 1


def test_jobs_are_listed_with_filters_and_pages(app: FastAPI, client: TestClient,
                                                tokens: Tokens, finetune: str) -> None:
    for method, body in (("bitdelta", None), ("lora", {"rank": 2}), ("bitdelta", None)):
        assert client.post(f"/models/{finetune}/compress?method={method}", json=body,
                           headers=tokens.compress).status_code == 202
    page = client.get("/jobs?limit=2", headers=tokens.read).json()
    assert len(page["items"]) == 2
    assert page["next_page_token"]
    rest = client.get(f"/jobs?limit=2&page_token={page['next_page_token']}",
                      headers=tokens.read).json()
    assert len(rest["items"]) == 1
    assert rest["next_page_token"] is None
    lora = client.get("/jobs?method=lora", headers=tokens.read).json()["items"]
    assert [j["method"] for j in lora] == ["lora"]
    assert client.get("/jobs?status=succeeded", headers=tokens.read).json()["items"] == []
    assert len(client.get(f"/jobs?model={finetune}", headers=tokens.read).json()["items"]) == 3
    assert client.get("/jobs/99999999999", headers=tokens.read).status_code == 422
    assert client.get("/jobs/424242", headers=tokens.read).status_code == 404


def test_lora_jobs_queued_before_the_new_default_run_as_asked() -> None:
    """Params stored before targets_only existed hold save_modules; an upgrade mid-queue
    must not change what such a job makes."""
    from registry.jobs.params import LoraParams

    def targets_only(stored: dict[str, object]) -> bool:
        return LoraParams.model_validate({"targets": ["q_proj"], "verify": "off", "rank": 4,
                                          **stored}).targets_only

    assert targets_only({"save_modules": False}) is True
    assert targets_only({"save_modules": True}) is False
    assert targets_only({"targets_only": True}) is True
    assert targets_only({"targets_only": False}) is False
