"""Data sets over HTTP: push, read, list, delete; content-addressed and immutable."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from registry.storage.local import LocalBlobStore
from registry.uploads.drafts import files_digest
from tests.conftest import Tokens
from tests.registry.datasets.helpers import KINDS, count_rows, push_dataset


@pytest.mark.parametrize("filename", sorted(KINDS))
def test_each_kind_is_pushed_finalized_and_downloaded(client: TestClient, tokens: Tokens,
                                                      store: LocalBlobStore,
                                                      filename: str) -> None:
    data = KINDS[filename]
    final = push_dataset(client, tokens.push, "calib", {filename: data},
                         description="for scale distillation")
    assert final.status_code == 200, final.text
    body = final.json()
    sha256 = hashlib.sha256(data).hexdigest()
    assert body["status"] == "ready"
    assert body["files"] == [{"filename": filename, "sha256": sha256, "size": len(data)}]
    assert body["content_digest"] == files_digest({filename: sha256})
    assert body["total_bytes"] == len(data)
    assert body["description"] == "for scale distillation"
    assert body["needs_tokenizer"] is (not filename.endswith(".safetensors"))
    assert body["finalized_at"] is not None
    assert store.exists(sha256)
    got = client.get(f"/datasets/calib/files/{filename}", headers=tokens.read)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["x-content-sha256"] == sha256
    assert client.get("/datasets/calib", headers=tokens.read).json() == body


def test_a_dataset_of_every_kind_at_once(client: TestClient, tokens: Tokens) -> None:
    final = push_dataset(client, tokens.push, "mixed", KINDS)
    assert final.status_code == 200, final.text
    assert [f["filename"] for f in final.json()["files"]] == sorted(KINDS)
    assert final.json()["total_bytes"] == sum(len(d) for d in KINDS.values())


def test_a_file_larger_than_a_json_body_streams_like_model_files(
        client: TestClient, tokens: Tokens, store: LocalBlobStore) -> None:
    """Request bodies are capped at MAX_REQUEST_BYTES (1 MiB) except file uploads."""
    data = b"def f(x):\n    return x + 1\n" * 100_000  # 2.7 MB
    final = push_dataset(client, tokens.push, "big", {"code.txt": data})
    assert final.status_code == 200, final.text
    assert final.json()["total_bytes"] == len(data)
    assert store.exists(hashlib.sha256(data).hexdigest())


def test_pushing_the_same_files_again_changes_nothing(client: TestClient, tokens: Tokens,
                                                      engine: Engine) -> None:
    first = push_dataset(client, tokens.push, "calib", KINDS).json()
    declared = {f["filename"]: f["sha256"] for f in first["files"]}
    rows = count_rows(engine)
    # A re-push declares its files: it gets the finalized data set back, uploads
    # nothing, and its guarded finalize returns the same data set.
    again = client.post("/datasets", json={"name": "calib", "files": declared},
                        headers=tokens.push)
    assert again.status_code == 200
    assert again.json() == first
    final = client.post("/datasets/calib/finalize", json={"files": declared},
                        headers=tokens.push)
    assert (final.status_code, final.json()) == (200, first)
    assert count_rows(engine) == rows


def test_a_finalized_dataset_is_immutable(client: TestClient, tokens: Tokens) -> None:
    first = push_dataset(client, tokens.push, "calib", {"corpus.txt": b"some text"}).json()
    replace = client.put("/datasets/calib/files/corpus.txt", content=b"other text",
                         headers=tokens.push)
    assert replace.status_code == 409
    assert replace.json()["error"] == "NotPending"
    assert "immutable" in replace.json()["detail"]
    add = client.put("/datasets/calib/files/more.txt", content=b"more", headers=tokens.push)
    assert (add.status_code, add.json()["error"]) == (409, "NotPending")
    other = hashlib.sha256(b"other text").hexdigest()
    repush = client.post("/datasets", json={"name": "calib", "files": {"corpus.txt": other}},
                         headers=tokens.push)
    assert (repush.status_code, repush.json()["error"]) == (409, "NameTaken")
    assert "another name" in repush.json()["detail"]
    undeclared = client.post("/datasets", json={"name": "calib"}, headers=tokens.push)
    assert (undeclared.status_code, undeclared.json()["error"]) == (409, "NameTaken")
    changed = client.post("/datasets/calib/finalize", json={"files": {"corpus.txt": other}},
                          headers=tokens.push)
    assert (changed.status_code, changed.json()["error"]) == (409, "DraftChanged")
    assert client.get("/datasets/calib", headers=tokens.read).json() == first


def test_a_draft_resumes_for_its_token_and_is_refused_to_others(client: TestClient,
                                                                tokens: Tokens) -> None:
    sha256 = hashlib.sha256(b"text").hexdigest()
    body = {"name": "d", "files": {"a.txt": sha256}}
    assert client.post("/datasets", json=body, headers=tokens.push).status_code == 201
    client.put("/datasets/d/files/a.txt", content=b"text", headers=tokens.push)
    resumed = client.post("/datasets", json=body, headers=tokens.push)
    assert resumed.status_code == 200
    assert [f["filename"] for f in resumed.json()["files"]] == ["a.txt"]
    taken = client.post("/datasets", json=body, headers=tokens.admin)
    assert (taken.status_code, taken.json()["error"]) == (409, "DraftInProgress")


def test_finalize_needs_a_file(client: TestClient, tokens: Tokens) -> None:
    client.post("/datasets", json={"name": "empty"}, headers=tokens.push)
    response = client.post("/datasets/empty/finalize", headers=tokens.push)
    assert (response.status_code, response.json()["error"]) == (422, "MissingFiles")
    assert client.get("/datasets/empty", headers=tokens.read).json()["status"] == "pending"


def test_scopes(client: TestClient, tokens: Tokens) -> None:
    assert client.post("/datasets", json={"name": "d"}).status_code == 401
    refused = client.post("/datasets", json={"name": "d"}, headers=tokens.read)
    assert (refused.status_code, refused.json()["error"]) == (403, "Forbidden")
    assert client.get("/datasets", headers=tokens.read).json()["items"] == []  # not created
    push_dataset(client, tokens.push, "d", {"a.txt": b"text"})
    assert client.get("/datasets").status_code == 401
    assert client.get("/datasets/d/files/a.txt").status_code == 401
    for request in (("PUT", "/datasets/d/files/b.txt"), ("POST", "/datasets/d/finalize"),
                    ("DELETE", "/datasets/d")):
        assert client.request(*request, headers=tokens.read).status_code == 403, request
    # A finalized data set is deleted by admin only; a draft by push.
    assert client.delete("/datasets/d", headers=tokens.push).status_code == 403
    assert client.delete("/datasets/d", headers=tokens.admin).status_code == 204
    assert client.get("/datasets/d", headers=tokens.read).status_code == 404
    client.post("/datasets", json={"name": "draft"}, headers=tokens.push)
    assert client.delete("/datasets/draft", headers=tokens.push).status_code == 204


def test_listing_is_keyset_paged_newest_first(client: TestClient, tokens: Tokens) -> None:
    for i in range(5):
        push_dataset(client, tokens.push, f"set-{i}", {"a.txt": f"text {i}".encode()})
    client.post("/datasets", json={"name": "draft"}, headers=tokens.push)
    names: list[str] = []
    params: dict[str, str | int] = {"limit": 2, "status": "ready"}
    while True:
        page = client.get("/datasets", params=params, headers=tokens.read).json()
        assert len(page["items"]) <= 2
        names += [d["name"] for d in page["items"]]
        if not page["next_page_token"]:
            break
        params["page_token"] = page["next_page_token"]
    assert names == [f"set-{i}" for i in reversed(range(5))]
    everything = client.get("/datasets", headers=tokens.read).json()["items"]
    assert [d["name"] for d in everything][:2] == ["draft", "set-4"]
    other_filter = client.get("/datasets", params={"page_token": params["page_token"]},
                              headers=tokens.read)
    assert (other_filter.status_code, other_filter.json()["error"]) == (422,
                                                                        "InvalidPageToken")


def test_unknown_names_suggest_close_ones(client: TestClient, tokens: Tokens) -> None:
    push_dataset(client, tokens.push, "wikitext-calib", {"a.txt": b"text"})
    missing = client.get("/datasets/wikitext-calb", headers=tokens.read)
    assert (missing.status_code, missing.json()["error"]) == (404, "DatasetNotFound")
    assert missing.json()["did_you_mean"] == ["wikitext-calib"]
    no_file = client.get("/datasets/wikitext-calib/files/b.txt", headers=tokens.read)
    assert (no_file.status_code, no_file.json()["error"]) == (404, "FileNotFound")
