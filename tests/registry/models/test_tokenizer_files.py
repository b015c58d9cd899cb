"""A finalized model gains the tokenizer files it lacks, checked, and nothing else."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels

TOKENIZER_CONFIG = b'{"model_max_length": 64}'


def test_a_finalized_model_gains_a_tokenizer_file_once(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    before = register_model(client, tokens.push, "m", tiny_models.base)
    url = "/models/m/files/tokenizer_config.json"
    added = client.put(url, content=TOKENIZER_CONFIG, headers=tokens.push)
    assert added.status_code == 201, added.text
    after = client.get("/models/m", headers=tokens.read).json()
    assert "tokenizer_config.json" in {f["filename"] for f in after["files"]}
    assert (after["status"], after["manifest_digest"]) == ("ready", before["manifest_digest"])
    same = client.put(url, content=TOKENIZER_CONFIG, headers={
        **tokens.push, "X-Content-SHA256": hashlib.sha256(TOKENIZER_CONFIG).hexdigest()})
    assert same.status_code == 200, same.text
    other = client.put(url, content=b"{}", headers=tokens.push)
    assert (other.status_code, other.json()["error"]) == (409, "NotPending")
    assert "tokenizer" in other.json()["detail"]
    weights = client.put("/models/m/files/config.json", content=b"{}", headers=tokens.push)
    assert (weights.status_code, weights.json()["error"]) == (409, "NotPending")


def test_a_tokenizer_file_is_checked_as_json(client: TestClient, tokens: Tokens,
                                             tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "m", tiny_models.base)
    bad = client.put("/models/m/files/tokenizer.json", content=b"{not json",
                     headers=tokens.push)
    assert bad.status_code == 422, bad.text
    files = client.get("/models/m", headers=tokens.read).json()["files"]
    assert "tokenizer.json" not in {f["filename"] for f in files}


def test_a_repush_declaring_its_files_finds_the_model(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    model = register_model(client, tokens.push, "m", tiny_models.base)
    files = {f["filename"]: f["sha256"] for f in model["files"]}
    again = client.post("/models", json={"name": "m", "kind": "base", "files": files},
                        headers=tokens.push)
    assert (again.status_code, again.json()["id"]) == (200, model["id"])
    undeclared = client.post("/models", json={"name": "m", "kind": "base"},
                             headers=tokens.push)
    assert (undeclared.status_code, undeclared.json()["error"]) == (409, "NameTaken")
    more = {**files, "extra.json": "a" * 64}
    other = client.post("/models", json={"name": "m", "kind": "base", "files": more},
                        headers=tokens.push)
    assert (other.status_code, other.json()["error"]) == (409, "NameTaken")
