"""Compression jobs end to end: a request, a worker, a verified and registered adapter."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.jobs.worker import Worker
from tests.conftest import Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels


@pytest.fixture
def finetune(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> str:
    register_model(client, tokens.push, "tiny-base", tiny_models.base)
    register_model(client, tokens.push, "tiny-ft", tiny_models.finetune, kind="finetune",
                   base="tiny-base")
    return "tiny-ft"


def worker(app: FastAPI) -> Worker:
    return Worker(app.state.database, app.state.store, app.state.settings, name="test-worker",
                  capabilities=set())


def run_all(app: FastAPI) -> int:
    w, ran = worker(app), 0
    while w.run_once():
        ran += 1
    return ran


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
    assert adapter["name"] == "tiny-ft-bitdelta" and adapter["version"] == 1
    listed = client.get("/adapters?base=tiny-base", headers=tokens.read).json()["items"]
    assert [a["id"] for a in listed] == [adapter["id"]]
    assert listed[0]["source_model"] == finetune
    assert listed[0]["quality"]["verified_with"] == "torch on cpu"
    assert listed[0]["compression_ratio"] > 1
    assert set(listed[0]["aliases"]) == {"latest", "prod"}

