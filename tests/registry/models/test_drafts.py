"""Model drafts heal: a re-run push resumes or replaces its own draft; push may delete one."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from registry.tables import Model
from tests.conftest import Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels


def _files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def _start(client: TestClient, headers: dict[str, str], name: str,
           **body: Any) -> tuple[int, dict[str, Any]]:
    response = client.post("/models", json={"name": name, "kind": "base", **body},
                           headers=headers)
    return response.status_code, response.json()


def test_a_rerun_push_resumes_its_draft_with_the_files_already_uploaded(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    files = _files(tiny_models.base)
    status, first = _start(client, tokens.push, "llama-tiny", files=files)
    assert status == 201
    config = (tiny_models.base / "config.json").read_bytes()
    assert client.put("/models/llama-tiny/files/config.json", content=config,
                      headers=tokens.push).status_code == 201
    # The push dies here; its re-run starts over with the same files.
    status, resumed = _start(client, tokens.push, "llama-tiny", files=files)
    assert status == 200
    assert resumed["id"] == first["id"]
    assert resumed["status"] == "pending"
    assert resumed["files"] == [{"filename": "config.json", "sha256": files["config.json"],
                                 "size": len(config)}]
    for name in files.keys() - {f["filename"] for f in resumed["files"]}:
        put = client.put(f"/models/llama-tiny/files/{name}",
                         content=(tiny_models.base / name).read_bytes(), headers=tokens.push)
        assert put.status_code == 201
    final = client.post("/models/llama-tiny/finalize", json={"files": files},
                        headers=tokens.push)
    assert final.status_code == 200, final.text
    assert final.json()["status"] == "ready"
    again = client.post("/models", json={"name": "llama-tiny", "kind": "base"},
                        headers=tokens.push)
    assert (again.status_code, again.json()["error"]) == (409, "NameTaken")


def test_a_rerun_for_another_kind_base_or_files_replaces_the_draft(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "root", tiny_models.base)
    _, first = _start(client, tokens.push, "m")
    client.put("/models/m/files/config.json", content=b"{}", headers=tokens.push)
    assert first["kind"] == "base"
    status, replaced = _start(client, tokens.push, "m", kind="finetune", base="root")
    assert status == 201  # (SQLite may hand the new draft the old one's id)
    assert (replaced["kind"], replaced["base"], replaced["files"]) == ("finetune", "root", [])
    # Declared files that differ from the draft's declaration: the weights changed.
    declared = {"config.json": "a" * 64}
    client.put("/models/m/files/config.json", content=b"{}", headers=tokens.push)
    status, declared_draft = _start(client, tokens.push, "m", kind="finetune", base="root",
                                    files=declared)
    assert status == 200  # the draft declared nothing: any files match
    assert [f["filename"] for f in declared_draft["files"]] == ["config.json"]
    status, other = _start(client, tokens.push, "m", kind="finetune", base="root",
                           files={"config.json": "b" * 64})
    assert (status, other["files"]) == (201, [])
    assert other["id"] == declared_draft["id"]  # started over in place


def test_a_base_pushed_again_with_its_missing_file_keeps_the_finetune_drafts_on_it(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    """A base pushed without config.json cannot be finalized, and its fine-tune's push
    stops at "base not finalized". Pushing the base again with every file starts its
    draft over in place: the fine-tune's draft still points at it, and both finalize."""
    every = _files(tiny_models.base)
    weights_only = {n: h for n, h in every.items() if n != "config.json"}
    status, first = _start(client, tokens.push, "b", files=weights_only)
    assert status == 201
    for name in weights_only:
        client.put(f"/models/b/files/{name}", content=(tiny_models.base / name).read_bytes(),
                   headers=tokens.push)
    missing = client.post("/models/b/finalize", json={"files": weights_only},
                          headers=tokens.push)
    assert (missing.status_code, missing.json()["error"]) == (422, "MissingFiles")
    status, tuned = _start(client, tokens.push, "f", kind="finetune", base="b")
    assert status == 201
    status, again = _start(client, tokens.push, "b", files=every)
    assert (status, again["id"], again["files"]) == (201, first["id"], [])
    for name in every:
        put = client.put(f"/models/b/files/{name}",
                         content=(tiny_models.base / name).read_bytes(), headers=tokens.push)
        assert put.status_code == 201
    final = client.post("/models/b/finalize", json={"files": every}, headers=tokens.push)
    assert final.status_code == 200, final.text
    tuned_again = client.get("/models/f", headers=tokens.admin).json()
    assert (tuned_again["id"], tuned_again["base"]) == (tuned["id"], "b")


def test_another_tokens_draft_is_not_resumed_but_push_may_delete_it(
        client: TestClient, tokens: Tokens) -> None:
    _start(client, tokens.push, "shared")
    client.put("/models/shared/files/config.json", content=b"{}", headers=tokens.push)
    status, refused = _start(client, tokens.admin, "shared")
    assert (status, refused["error"]) == (409, "DraftInProgress")
    assert "DELETE /models/shared" in refused["detail"]
    assert client.get("/models/shared", headers=tokens.read).json()["files"] != []
    # Any token with push may delete a pending draft, not only its creator.
    other_push = client.post("/tokens", json={"name": "ci-2", "scopes": ["push"]},
                             headers=tokens.admin).json()["token"]
    deleted = client.delete("/models/shared", headers={"Authorization": f"Bearer {other_push}"})
    assert deleted.status_code == 204
    status, _ = _start(client, tokens.admin, "shared")
    assert status == 201


def test_a_draft_without_a_recorded_creator_is_resumed_by_any_push_token(
        client: TestClient, tokens: Tokens, engine: Engine) -> None:
    _, first = _start(client, tokens.push, "legacy")
    with engine.begin() as conn:  # as drafts made before creators were recorded
        conn.execute(update(Model).values(created_by_token_id=None))
    status, resumed = _start(client, tokens.admin, "legacy")
    assert (status, resumed["id"]) == (200, first["id"])


def test_deleting_a_finalized_model_needs_admin(client: TestClient, tokens: Tokens,
                                                tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "final", tiny_models.base)
    refused = client.delete("/models/final", headers=tokens.push)
    assert refused.status_code == 403
    assert refused.json()["error"] == "Forbidden"
    assert "admin" in refused.json()["detail"]
    assert client.delete("/models/final", headers=tokens.read).status_code == 403
    assert client.delete("/models/final", headers=tokens.admin).status_code == 204


def test_finalize_refuses_a_draft_whose_files_are_not_the_expected_ones(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    files = _files(tiny_models.base)
    _start(client, tokens.push, "guarded")
    for name in files:
        client.put(f"/models/guarded/files/{name}",
                   content=(tiny_models.base / name).read_bytes(), headers=tokens.push)
    client.put("/models/guarded/files/notes.txt", content=b"left from an earlier try",
               headers=tokens.push)
    changed = {**files, "config.json": "0" * 64, "tokenizer.json": "1" * 64}
    refused = client.post("/models/guarded/finalize", json={"files": changed},
                          headers=tokens.push)
    assert refused.status_code == 409
    body = refused.json()
    assert body["error"] == "DraftChanged"
    assert body["mismatches"] == [
        "tokenizer.json: not uploaded", "notes.txt: uploaded but not expected",
        f"config.json: holds {files['config.json']}, expected {'0' * 64}"]
    assert client.get("/models/guarded", headers=tokens.read).json()["status"] == "pending"
    bad_name = client.post("/models/guarded/finalize", json={"files": {"../x": "0" * 64}},
                           headers=tokens.push)
    assert (bad_name.status_code, bad_name.json()["error"]) == (422, "InvalidFilename")
    expected = {**files, "notes.txt": hashlib.sha256(b"left from an earlier try").hexdigest()}
    final = client.post("/models/guarded/finalize", json={"files": expected},
                        headers=tokens.push)
    assert final.status_code == 200, final.text


def test_declared_files_are_checked_before_a_draft_is_made(client: TestClient,
                                                           tokens: Tokens) -> None:
    pickle = client.post("/models", json={"name": "p", "kind": "base",
                                          "files": {"pytorch_model.bin": "0" * 64}},
                         headers=tokens.push)
    assert (pickle.status_code, pickle.json()["error"]) == (422, "PickleRefused")
    bad_sha = client.post("/models", json={"name": "p", "kind": "base",
                                           "files": {"config.json": "xyz"}},
                          headers=tokens.push)
    assert bad_sha.status_code == 422
    assert client.get("/models/p", headers=tokens.read).status_code == 404


def test_unknown_models_suggest_close_names(client: TestClient, tokens: Tokens) -> None:
    for name in ("tiny-llama", "tiny-mistral", "big-llama"):
        _start(client, tokens.push, name)
    missing = client.get("/models/tiny-lama", headers=tokens.read)
    assert missing.status_code == 404
    body = missing.json()
    assert body["error"] == "ModelNotFound"
    assert body["did_you_mean"][0] == "tiny-llama"
    assert "did you mean 'tiny-llama'" in body["detail"]
    unknown_base = client.post("/models", json={"name": "ft", "kind": "finetune",
                                                "base": "Tiny-Llama"}, headers=tokens.push)
    assert unknown_base.status_code == 404
    assert unknown_base.json()["error"] == "UnknownBase"
    assert unknown_base.json()["did_you_mean"][0] == "tiny-llama"
    nothing_close = client.get("/models/qwen", headers=tokens.read).json()
    assert "did_you_mean" not in nothing_close
    assert "did you mean" not in nothing_close["detail"]
    listing = client.get("/models", params={"base": "tiny-llamma"}, headers=tokens.read)
    assert listing.status_code == 404
    assert listing.json()["did_you_mean"][0] == "tiny-llama"
