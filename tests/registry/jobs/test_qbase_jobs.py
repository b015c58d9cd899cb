"""A compression job against a 4-bit base: the delta is taken against its dequantized
weights, and the adapter registered on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.models import make_bnb4bit
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels
from tests.registry.jobs.drive import run_all

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("method", ["bitdelta", "lora"])
def test_job_against_a_4bit_base_registers_the_adapter_on_it(
        app: FastAPI, client: TestClient, tokens: Tokens, tiny_models: TinyModels,
        finetune: str, tmp_path: Path, method: str) -> None:
    register_model(client, tokens.push, "tiny-base-4bit",
                   make_bnb4bit(tiny_models.base, tmp_path / "q4"), quantized_from="tiny-base")
    body: dict[str, object] = {"base": "tiny-base-4bit"}
    if method == "lora":
        body["rank"] = 4
    started = client.post(f"/models/{finetune}/compress?method={method}", json=body,
                          headers=tokens.compress)
    assert started.status_code == 202, started.text
    assert started.json()["base"] == "tiny-base-4bit"
    assert run_all(app) == 1
    done = client.get(f"/jobs/{started.json()['id']}", headers=tokens.read).json()
    assert done["status"] == "succeeded", done
    adapter = client.get(f"/adapters/{done['adapter']['id']}", headers=tokens.read).json()
    assert adapter["base"] == "tiny-base-4bit"
    assert adapter["source_model"] == finetune
    listed = client.get("/adapters", params={"base": "tiny-base", "compatible": 1},
                        headers=tokens.read).json()["items"]
    assert [(a["name"], a["compatible_via"]) for a in listed] == [
        (adapter["name"], "4-bit variant")]


def test_job_base_must_be_in_the_finetunes_family(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, finetune: str) -> None:
    register_model(client, tokens.push, "unrelated", tiny_models.base)
    answer = client.post(f"/models/{finetune}/compress?method=bitdelta",
                         json={"base": "unrelated"}, headers=tokens.compress)
    assert answer.status_code == 422
    assert "4-bit base quantized from it" in answer.json()["detail"]
