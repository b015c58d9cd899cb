"""Each change a consumer cares about writes its event, once, from the real API action."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.jobs import queue
from tests.conftest import Tokens
from tests.registry.api import push_adapter, push_dataset, register_model
from tests.registry.conftest import TinyModels
from tests.registry.events.conftest import Feed
from tests.registry.jobs.drive import run_all, worker


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def _changed_lora(tiny_models: TinyModels, tmp_path: Path) -> Path:
    changed = tmp_path / "changed"
    shutil.copytree(tiny_models.lora, changed)
    config = json.loads((changed / "adapter_config.json").read_text())
    config["lora_alpha"] = 16
    (changed / "adapter_config.json").write_text(json.dumps(config))
    return changed


def test_models_adapters_and_aliases(client: TestClient, tokens: Tokens, feed: Feed,
                                     tiny_models: TinyModels, tmp_path: Path) -> None:
    model = register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    first = push_adapter(client, tokens.push, "bot", "llama-tiny", tiny_models.lora).json()
    # The same content again is the same version: no new event.
    assert push_adapter(client, tokens.push, "bot", "llama-tiny",
                        tiny_models.lora).status_code == 200
    second = push_adapter(client, tokens.push, "bot", "llama-tiny",
                          _changed_lora(tiny_models, tmp_path)).json()
    events = feed()
    assert _types(events) == ["model.registered", "adapter.registered", "alias.set",
                              "adapter.registered", "alias.set"]
    assert events[0]["data"] == {
        "id": model["id"], "name": "llama-tiny", "kind": "base", "base": None,
        "manifest_digest": model["manifest_digest"], "path": "/models/llama-tiny"}
    assert events[1]["data"] == {
        "id": first["id"], "name": "bot", "version": 1, "kind": "lora", "base": "llama-tiny",
        "content_digest": first["content_digest"], "path": "/adapters/bot@1"}
    assert events[2]["data"] == {
        "name": "bot", "alias": "latest", "base": "llama-tiny", "adapter_id": first["id"],
        "version": 1, "previous_version": None, "path": "/adapters/bot:latest"}
    assert events[4]["data"]["version"] == 2
    assert events[4]["data"]["previous_version"] == 1
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    by_base = client.get("/events", params={"base": "llama-tiny"}, headers=tokens.read)
    by_id = client.get("/events", params={"base": str(model["id"])}, headers=tokens.read)
    assert by_base.json() == by_id.json()  # a base by name or by id
    assert _types(by_base.json()["items"]) == _types(events)[1:]  # not the base itself

    cursor = events[-1]["id"]
    assert client.put("/adapters/bot@1/aliases/prod", headers=tokens.push).status_code == 200
    # Pointing an alias where it already points changes nothing, and says nothing.
    assert client.put("/adapters/bot@1/aliases/prod", headers=tokens.push).status_code == 200
    assert client.put("/adapters/bot@2/aliases/prod", headers=tokens.push).status_code == 200
    assert client.delete("/adapters/bot/aliases/prod", headers=tokens.push).status_code == 204
    moves = feed(after=cursor)
    assert [(e["type"], e["data"]["alias"], e["data"]["version"],
             e["data"]["previous_version"]) for e in moves] == [
        ("alias.set", "prod", 1, None), ("alias.set", "prod", 2, 1),
        ("alias.removed", "prod", None, 2)]

    # Deleting the version `latest` names: the version goes, and latest moves back.
    cursor = moves[-1]["id"]
    assert client.delete(f"/adapters/{second['id']}", headers=tokens.admin).status_code == 204
    gone = feed(after=cursor)
    assert _types(gone) == ["adapter.deleted", "alias.set"]
    assert gone[0]["data"]["version"] == 2
    assert (gone[1]["data"]["alias"], gone[1]["data"]["version"],
            gone[1]["data"]["previous_version"]) == ("latest", 1, 2)

    cursor = gone[-1]["id"]
    assert client.delete("/adapters/bot@1", headers=tokens.admin).status_code == 204
    assert client.delete("/models/llama-tiny", headers=tokens.admin).status_code == 204
    last = feed(after=cursor)
    assert _types(last) == ["adapter.deleted", "alias.removed", "model.deleted"]
    assert last[1]["data"]["previous_version"] == 1
    assert last[2]["data"]["name"] == "llama-tiny"


def test_drafts_are_never_announced(client: TestClient, tokens: Tokens, feed: Feed,
                                    tmp_path: Path) -> None:
    text = tmp_path / "calib.txt"
    text.write_text("some calibration text\n")
    push_dataset(client, tokens.push, "draft-only", text, finalize=False)
    assert client.delete("/datasets/draft-only", headers=tokens.push).status_code == 204
    assert feed() == []


def test_datasets_and_tokens(client: TestClient, tokens: Tokens, feed: Feed,
                             tmp_path: Path) -> None:
    text = tmp_path / "calib.txt"
    text.write_text("some calibration text\n")
    dataset = push_dataset(client, tokens.push, "calib", text)
    assert client.delete("/datasets/calib", headers=tokens.admin).status_code == 204
    made = client.post("/tokens", json={"name": "ci", "scopes": ["read"]},
                       headers=tokens.admin).json()
    assert client.delete(f"/tokens/{made['id']}", headers=tokens.admin).status_code == 200
    # Revoking it again changes nothing.
    client.delete(f"/tokens/{made['id']}", headers=tokens.admin)
    events = feed()
    assert _types(events) == ["dataset.registered", "dataset.deleted", "token.revoked"]
    assert events[0]["data"] == {"id": dataset["id"], "name": "calib",
                                 "content_digest": dataset["content_digest"],
                                 "path": "/datasets/calib"}
    assert events[2]["data"] == {"id": made["id"], "name": "ci"}
    assert "secret" not in json.dumps(events)


def test_a_job_from_queued_to_succeeded(app: FastAPI, client: TestClient, tokens: Tokens,
                                        feed: Feed, finetune: str) -> None:
    """A job's success registers its adapter and moves its aliases in one transaction."""
    start = feed()[-1]["id"]
    job = client.post(f"/models/{finetune}/compress?method=bitdelta", json={"alias": "prod"},
                      headers=tokens.compress).json()
    assert run_all(app) == 1
    events = feed(after=start)
    assert _types(events) == ["job.queued", "job.running", "adapter.registered",
                              "alias.set", "alias.set", "job.succeeded"]
    queued = events[0]["data"]
    assert queued == {"id": job["id"], "method": "bitdelta", "model": finetune,
                      "base": "tiny-base", "name": "tiny-ft-bitdelta", "attempt": 0,
                      "path": f"/jobs/{job['id']}"}
    assert events[1]["data"]["attempt"] == 1
    assert [e["data"]["alias"] for e in events[3:5]] == ["latest", "prod"]
    adapter = events[2]["data"]
    assert events[5]["data"]["adapter"] == {"id": adapter["id"], "name": "tiny-ft-bitdelta",
                                            "version": 1}


def test_a_job_cancelled_retried_or_failed(app: FastAPI, client: TestClient,
                                           tokens: Tokens, feed: Feed, finetune: str) -> None:
    start = feed()[-1]["id"]
    cancelled = client.post(f"/models/{finetune}/compress?method=bitdelta",
                            headers=tokens.compress).json()
    assert client.post(f"/jobs/{cancelled['id']}/cancel",
                       headers=tokens.compress).status_code == 200
    settings, name = app.state.settings, worker(app).name
    ends = [("StorageUnavailable", True), ("NonFiniteTensor", False)]
    for error, transient in ends:  # the first is due again only after a backoff
        queued = client.post(f"/models/{finetune}/compress?method=bitdelta",
                             headers=tokens.compress)
        assert queued.status_code == 202, queued.text
        with app.state.database.writing() as session:
            claimed = queue.claim(session, name, set(), settings)
        assert claimed is not None
        with app.state.database.writing() as session:
            queue.fail(session, claimed.lease, settings, error, "detail", transient=transient)
    events = feed(after=start)
    assert _types(events) == ["job.queued", "job.cancelled",
                              "job.queued", "job.running", "job.queued",
                              "job.queued", "job.running", "job.failed"]
    assert events[1]["data"]["id"] == cancelled["id"]
    assert events[4]["data"]["attempt"] == 1  # queued again after its first attempt
    assert events[7]["data"]["error"] == "NonFiniteTensor"
    assert events[7]["data"]["method"] == "bitdelta"
