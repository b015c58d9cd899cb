"""Real registry changes, made through the API, reach each subscription once, in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import push_adapter, push_dataset, register_model
from tests.registry.conftest import TinyModels
from tests.registry.jobs.drive import run_all
from tests.registry.webhooks.conftest import Receiver, drain, feed, subscribe


def test_every_type_once_per_subscription(client: TestClient, app: FastAPI, tokens: Tokens,
                                          tiny_models: TinyModels, tmp_path: Path,
                                          make_receiver: Callable[[], Receiver]) -> None:
    everything, aliases, jobs = make_receiver(), make_receiver(), make_receiver()
    subscribe(client, tokens, everything)
    subscribe(client, tokens, aliases, events=["alias.set", "alias.removed"],
              filters={"name": "bot"})
    subscribe(client, tokens, jobs, events=["job.queued", "job.running", "job.succeeded",
                                            "job.failed", "job.cancelled"])
    register_model(client, tokens.push, "tiny-base", tiny_models.base)
    register_model(client, tokens.push, "tiny-ft", tiny_models.finetune, kind="finetune",
                   base="tiny-base")
    push_adapter(client, tokens.push, "bot", "tiny-base", tiny_models.lora)
    assert client.put("/adapters/bot@1/aliases/prod", headers=tokens.push).status_code == 200
    assert client.delete("/adapters/bot/aliases/prod", headers=tokens.push).status_code == 204
    job = client.post("/models/tiny-ft/compress?method=bitdelta", json={},
                      headers=tokens.compress).json()
    assert run_all(app) == 1
    doomed = client.post("/models/tiny-ft/compress?method=bitdelta",
                         json={"name": "other"}, headers=tokens.compress).json()
    assert client.post(f"/jobs/{doomed['id']}/cancel", headers=tokens.compress).status_code
    text = tmp_path / "calib.txt"
    text.write_text("some calibration text\n")
    push_dataset(client, tokens.push, "calib", text)
    assert client.delete("/datasets/calib", headers=tokens.admin).status_code == 204
    made = client.post("/tokens", json={"name": "ci", "scopes": ["read"]},
                       headers=tokens.admin).json()
    assert client.delete(f"/tokens/{made['id']}", headers=tokens.admin).status_code == 200
    assert client.delete("/adapters/bot@1", headers=tokens.admin).status_code == 204

    events = feed(client, tokens)
    types = {e["type"] for e in events}
    assert types >= {"model.registered", "adapter.registered", "alias.set", "alias.removed",
                     "job.queued", "job.running", "job.succeeded", "job.cancelled",
                     "dataset.registered", "dataset.deleted", "token.revoked",
                     "adapter.deleted"}
    want_aliases = [e for e in events if e["type"].startswith("alias.")
                    and e["data"]["name"] == "bot"]
    want_jobs = [e for e in events if e["type"].startswith("job.")]
    drain(app, lambda: (len(everything.received), len(aliases.received),
                        len(jobs.received)) == (len(events), len(want_aliases),
                                                len(want_jobs)), timeout_s=30)
    drain(app, lambda: True)
    assert [r.payload for r in everything.received] == events
    assert [r.payload for r in aliases.received] == want_aliases
    assert [r.payload for r in jobs.received] == want_jobs
    assert [e["data"]["id"] for e in want_jobs if e["type"] == "job.succeeded"] == [job["id"]]
