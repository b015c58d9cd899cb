from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels


@pytest.fixture
def base(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> str:
    register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    return "llama-tiny"


def test_peft_adapter_round_trips_byte_identical(client: TestClient, tokens: Tokens,
                                                 tiny_models: TinyModels, base: str) -> None:
    pushed = push_adapter(client, tokens.push, "support-bot", base, tiny_models.lora)
    assert pushed.status_code == 201, pushed.text
    adapter = pushed.json()
    assert (adapter["version"], adapter["status"], adapter["kind"]) == (1, "ready", "lora")
    assert adapter["aliases"] == ["latest"]
    assert adapter["params"]["r"] == 4
    assert adapter["params"]["ranks"] == [2, 4]
    assert adapter["params"]["module_count"] == 6

    for path in tiny_models.lora.iterdir():
        pulled = client.get(f"/adapters/support-bot@1/files/{path.name}", headers=tokens.read)
        assert pulled.status_code == 200
        assert pulled.content == path.read_bytes(), path.name

    listed = client.get("/adapters", params={"base": base}, headers=tokens.read).json()
    assert [(a["name"], a["version"]) for a in listed["items"]] == [("support-bot", 1)]

    again = push_adapter(client, tokens.push, "support-bot", base, tiny_models.lora)
    assert again.status_code == 200
    assert again.json()["id"] == adapter["id"]
    listed = client.get("/adapters", params={"name": "support-bot"}, headers=tokens.read).json()
    assert len(listed["items"]) == 1


def test_new_content_gets_next_version_and_latest_moves(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, base: str,
        tmp_path: Path) -> None:
    push_adapter(client, tokens.push, "bot", base, tiny_models.lora)
    changed = tmp_path / "changed"
    shutil.copytree(tiny_models.lora, changed)
    config = json.loads((changed / "adapter_config.json").read_text())
    config["lora_alpha"] = 16
    (changed / "adapter_config.json").write_text(json.dumps(config))
    second = push_adapter(client, tokens.push, "bot", base, changed)
    assert second.status_code == 201
    assert second.json()["version"] == 2

    latest = client.get("/adapters/bot:latest", headers=tokens.read).json()
    assert latest["version"] == 2
    assert client.get("/adapters/bot", headers=tokens.read).json()["version"] == 2

    moved = client.put("/adapters/bot@1/aliases/prod", headers=tokens.push)
    assert moved.status_code == 200
    assert moved.json()["aliases"] == ["prod"]
    assert client.get("/adapters/bot:prod", headers=tokens.read).json()["version"] == 1
    client.put("/adapters/bot@2/aliases/prod", headers=tokens.push)
    assert client.get("/adapters/bot:prod", headers=tokens.read).json()["version"] == 2
    by_alias = client.get("/adapters", params={"alias": "prod"}, headers=tokens.read).json()
    assert [a["version"] for a in by_alias["items"]] == [2]

    assert client.delete("/adapters/bot@2", headers=tokens.admin).status_code == 204
    assert client.get("/adapters/bot:latest", headers=tokens.read).json()["version"] == 1
    assert client.get("/adapters/bot:prod", headers=tokens.read).status_code == 404


def test_listing_pages_with_keyset_cursor(client: TestClient, tokens: Tokens,
                                          tiny_models: TinyModels, base: str,
                                          tmp_path: Path) -> None:
    for i in range(5):
        variant = tmp_path / f"v{i}"
        shutil.copytree(tiny_models.lora, variant)
        (variant / "README.md").write_text(f"variant {i}\n")
        assert push_adapter(client, tokens.push, f"bot-{i}", base, variant).status_code == 201
    seen: list[str] = []
    token = None
    while True:
        params = {"base": base, "limit": 2} | ({"page_token": token} if token else {})
        page = client.get("/adapters", params=params, headers=tokens.read).json()
        seen += [a["name"] for a in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == [f"bot-{i}" for i in reversed(range(5))]

    first = client.get("/adapters", params={"limit": 2}, headers=tokens.read).json()
    replayed = client.get("/adapters", params={"kind": "bitdelta",
                                               "page_token": first["next_page_token"]},
                          headers=tokens.read)
    assert replayed.status_code == 422
    assert replayed.json()["error"] == "InvalidPageToken"


def test_lora_that_does_not_fit_the_base_is_refused(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "other", tiny_models.other_base)
    response = push_adapter(client, tokens.push, "misfit", "other", tiny_models.lora)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "IncompatibleModels"
    assert len(body["mismatches"]) == 2  # down_proj lora_A of both layers: in 120 vs 64
    assert "model.layers.0.mlp.down_proj.lora_A.weight is [4, 120], expected [4, 64]" in (
        body["detail"])
    assert client.get("/adapters", params={"name": "misfit"},
                      headers=tokens.read).json()["items"] == []


def test_adapter_needs_ready_known_base(client: TestClient, tokens: Tokens) -> None:
    unknown = client.post("/adapters", json={"name": "x", "base": "nope", "kind": "lora"},
                          headers=tokens.push)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "UnknownBase"
    client.post("/models", json={"name": "unfinished", "kind": "base"}, headers=tokens.push)
    pending = client.post("/adapters", json={"name": "x", "base": "unfinished", "kind": "lora"},
                          headers=tokens.push)
    assert pending.status_code == 409


def test_finalize_without_weights_is_refused(client: TestClient, tokens: Tokens,
                                             base: str, tiny_models: TinyModels) -> None:
    draft = client.post("/adapters", json={"name": "half", "base": base, "kind": "lora"},
                        headers=tokens.push).json()
    client.put(f"/adapters/{draft['id']}/files/adapter_config.json",
               content=(tiny_models.lora / "adapter_config.json").read_bytes(),
               headers=tokens.push)
    response = client.post(f"/adapters/{draft['id']}/finalize", headers=tokens.push)
    assert response.status_code == 422
    assert response.json()["error"] == "MissingFiles"
    assert "adapter_model.safetensors" in response.json()["detail"]


def test_unknown_adapter_file_and_ref(client: TestClient, tokens: Tokens, base: str,
                                      tiny_models: TinyModels) -> None:
    push_adapter(client, tokens.push, "bot", base, tiny_models.lora)
    missing = client.get("/adapters/bot@1/files/nope.json", headers=tokens.read)
    assert missing.status_code == 404
    assert missing.json()["error"] == "FileNotFound"
    assert client.get("/adapters/bot@7", headers=tokens.read).status_code == 404
    assert client.get("/adapters/999", headers=tokens.read).json()["error"] == "AdapterNotFound"
