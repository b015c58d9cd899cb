from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels


def test_register_base_and_finetune(client: TestClient, tokens: Tokens,
                                    tiny_models: TinyModels) -> None:
    base = register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    assert base["status"] == "ready"
    assert base["tensor_count"] == 21
    assert base["parameter_count"] == 57840
    assert base["dtypes"] == {"F32": 21}
    assert {f["filename"] for f in base["files"]} == {
        "config.json", "generation_config.json", "model.safetensors"}

    ft = register_model(client, tokens.push, "llama-tiny-chat", tiny_models.finetune,
                        kind="finetune", base="llama-tiny")
    assert ft["base"] == "llama-tiny"
    assert ft["manifest_digest"] == base["manifest_digest"]

    listed = client.get("/models", params={"base": "llama-tiny"}, headers=tokens.read).json()
    assert [m["name"] for m in listed["items"]] == ["llama-tiny-chat"]
    bases = client.get("/models", params={"kind": "base"}, headers=tokens.read).json()
    assert [m["name"] for m in bases["items"]] == ["llama-tiny"]
    by_id = client.get(f"/models/{base['id']}", headers=tokens.read).json()
    assert by_id["name"] == "llama-tiny"


def test_create_returns_pending(client: TestClient, tokens: Tokens) -> None:
    response = client.post("/models", json={"name": "llama2-7b", "kind": "base"},
                           headers=tokens.push)
    assert response.status_code == 201
    assert response.json()["status"] == "pending"
    # The same push again resumes the draft (tests/registry/models/test_drafts.py).
    again = client.post("/models", json={"name": "llama2-7b", "kind": "base"},
                        headers=tokens.push)
    assert again.status_code == 200
    assert again.json()["id"] == response.json()["id"]


def test_finetune_with_other_shapes_is_refused_with_each_mismatch(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "small", tiny_models.base)
    client.post("/models", json={"name": "wrong", "kind": "finetune", "base": "small"},
                headers=tokens.push)
    for path in tiny_models.other_base.iterdir():
        client.put(f"/models/wrong/files/{path.name}", content=path.read_bytes(),
                   headers=tokens.push)
    response = client.post("/models/wrong/finalize", headers=tokens.push)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "IncompatibleBase"
    # 2 layers × (gate, up, down) have other shapes
    assert len(body["mismatches"]) == 6
    assert "model.layers.0.mlp.down_proj.weight" in body["detail"]
    assert client.get("/models/wrong", headers=tokens.read).json()["status"] == "pending"


def test_finalize_needs_weights_and_config(client: TestClient, tokens: Tokens) -> None:
    client.post("/models", json={"name": "empty", "kind": "base"}, headers=tokens.push)
    response = client.post("/models/empty/finalize", headers=tokens.push)
    assert response.status_code == 422
    assert response.json()["error"] == "MissingFiles"
    assert "config.json" in response.json()["detail"]


def test_finalized_model_files_are_immutable(client: TestClient, tokens: Tokens,
                                             tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "frozen", tiny_models.base)
    response = client.put("/models/frozen/files/config.json", content=b"{}",
                          headers=tokens.push)
    assert response.status_code == 409
    assert response.json()["error"] == "NotPending"


def test_download_model_file(client: TestClient, tokens: Tokens,
                             tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "dl", tiny_models.base)
    response = client.get("/models/dl/files/model.safetensors", headers=tokens.read)
    assert response.status_code == 200
    assert response.content == (tiny_models.base / "model.safetensors").read_bytes()


def test_delete_model_refused_while_depended_on(client: TestClient, tokens: Tokens,
                                                tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "root", tiny_models.base)
    register_model(client, tokens.push, "child", tiny_models.finetune, kind="finetune",
                   base="root")
    refused = client.delete("/models/root", headers=tokens.admin)
    assert refused.status_code == 409
    assert refused.json()["error"] == "HasDependents"
    assert client.delete("/models/child", headers=tokens.push).status_code == 403
    assert client.delete("/models/child", headers=tokens.admin).status_code == 204
    assert client.delete("/models/root", headers=tokens.admin).status_code == 204
    assert client.get("/models/root", headers=tokens.read).status_code == 404
