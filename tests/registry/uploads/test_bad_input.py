"""Hostile and broken input: each gets a clear 4xx, and nothing is stored or half-stored."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from registry.app import create_app
from registry.settings import Settings
from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX
from registry.storage.local import LocalBlobStore
from tests.conftest import LiveServer, Tokens
from tests.malformed import (
    MALFORMED_CASES,
    NONFINITE_MESSAGE,
    PICKLE_CASES,
    MalformedCase,
    inf_safetensors,
    nan_safetensors,
    pickle_like_valid_safetensors,
    valid_safetensors,
)
from tests.registry.uploads.helpers import PATH_TRICKS, raw


def assert_nothing_stored(client: TestClient, store: LocalBlobStore, tokens: Tokens,
                          model: str = "m") -> None:
    assert list(store.list_objects(BLOB_PREFIX)) == []
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert client.get(f"/models/{model}", headers=tokens.read).json()["files"] == []


@pytest.fixture
def model(client: TestClient, tokens: Tokens) -> str:
    assert client.post("/models", json={"name": "m", "kind": "base"},
                       headers=tokens.push).status_code == 201
    return "m"


@pytest.mark.parametrize("case", MALFORMED_CASES, ids=lambda c: c.id)
def test_malformed_safetensors_refused(client: TestClient, store: LocalBlobStore,
                                       tokens: Tokens, model: str, case: MalformedCase) -> None:
    response = client.put(f"/models/{model}/files/model.safetensors", content=case.data,
                          headers=tokens.push)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == case.error.__name__
    assert case.stream_message in response.json()["detail"]
    assert_nothing_stored(client, store, tokens)


@pytest.mark.parametrize("case", PICKLE_CASES, ids=lambda c: c.id)
def test_pickle_renamed_safetensors_refused(client: TestClient, store: LocalBlobStore,
                                            tokens: Tokens, model: str,
                                            case: MalformedCase) -> None:
    response = client.put(f"/models/{model}/files/{case.filename}", content=case.data,
                          headers=tokens.push)
    assert response.status_code == 415
    assert response.json()["error"] == "PickleRefused"
    assert "never loaded" in response.json()["detail"]
    assert_nothing_stored(client, store, tokens)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.pth", "last.ckpt"])
def test_pickle_names_refused(client: TestClient, store: LocalBlobStore, tokens: Tokens,
                              model: str, name: str) -> None:
    response = client.put(f"/models/{model}/files/{name}", content=b"whatever",
                          headers=tokens.push)
    assert response.status_code == 415
    assert response.json()["error"] == "PickleRefused"
    assert_nothing_stored(client, store, tokens)


@pytest.mark.parametrize("data", [nan_safetensors(), inf_safetensors(),
                                  inf_safetensors(negative=True)], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_refused(client: TestClient, store: LocalBlobStore, tokens: Tokens,
                                    model: str, data: bytes) -> None:
    response = client.put(f"/models/{model}/files/model.safetensors", content=data,
                          headers=tokens.push)
    assert response.status_code == 422
    assert response.json()["error"] == "NonFiniteTensor"
    assert NONFINITE_MESSAGE in response.json()["detail"]
    assert_nothing_stored(client, store, tokens)


def test_other_bad_files(client: TestClient, store: LocalBlobStore, tokens: Tokens,
                         model: str) -> None:
    cases = {
        "config.json": (b"{not json", 422, "InvalidJSON"),
        "notes.txt": (b"\xff\xfe\x00binary", 422, "InvalidContent"),
        "weights.npz": (b"PK\x03\x04", 415, "UnsupportedFile"),
        "run.sh": (b"#!/bin/sh", 415, "UnsupportedFile"),
    }
    for name, (body, status, error) in cases.items():
        response = client.put(f"/models/{model}/files/{name}", content=body, headers=tokens.push)
        assert (response.status_code, response.json()["error"]) == (status, error), name
    assert_nothing_stored(client, store, tokens)


def test_checksum_mismatch_refused(client: TestClient, store: LocalBlobStore, tokens: Tokens,
                                   model: str) -> None:
    response = client.put(f"/models/{model}/files/model.safetensors",
                          content=valid_safetensors(),
                          headers={**tokens.push, "X-Content-SHA256": "0" * 64})
    assert response.status_code == 422
    assert response.json()["error"] == "ChecksumMismatch"
    assert_nothing_stored(client, store, tokens)


@pytest.fixture
def small_client(settings: Settings, store: LocalBlobStore,
                 engine: Engine) -> Iterator[TestClient]:
    limited = settings.model_copy(update={"MAX_UPLOAD_BYTES": 1000, "MAX_REQUEST_BYTES": 300})
    with TestClient(create_app(limited, store=store)) as client:
        yield client


def test_body_over_limit_with_content_length(small_client: TestClient, store: LocalBlobStore,
                                             tokens: Tokens) -> None:
    small_client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
    response = small_client.put("/models/m/files/model.safetensors", content=b"x" * 5000,
                                headers=tokens.push)
    assert response.status_code == 413
    assert "5000 bytes, over the 1000-byte limit" in response.json()["detail"]
    assert_nothing_stored(small_client, store, tokens)


def test_chunked_body_over_limit(small_client: TestClient, store: LocalBlobStore,
                                 tokens: Tokens) -> None:
    small_client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
    valid = valid_safetensors()
    padded = valid + b"\0" * 2000  # valid prefix, then more than the limit

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        for i in range(0, len(padded), 100):
            yield padded[i:i + 100]

    response = small_client.put("/models/m/files/model.safetensors", content=chunks(),
                                headers=tokens.push)
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"
    assert_nothing_stored(small_client, store, tokens)


def test_oversized_json_request_body(small_client: TestClient, tokens: Tokens) -> None:
    body = b'{"name": "' + b"a" * 1000 + b'", "kind": "base"}'
    declared = small_client.post("/models", content=body,
                                 headers={**tokens.push, "Content-Type": "application/json"})
    assert declared.status_code == 413
    chunked = small_client.post("/models", content=iter([body[:200], body[200:]]),
                                headers={**tokens.push, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert chunked.json()["error"] == "PayloadTooLarge"


def test_limit_over_the_cap_is_422(client: TestClient, tokens: Tokens) -> None:
    for path in ("/adapters", "/models"):
        response = client.get(path, params={"limit": 101}, headers=tokens.read)
        assert response.status_code == 422
        assert "limit must be between 1 and 100, got 101" in response.json()["detail"]
    assert client.get("/adapters", params={"limit": 100}, headers=tokens.read).status_code == 200
    garbage = client.get("/adapters", params={"page_token": "!!"}, headers=tokens.read)
    assert garbage.json()["error"] == "InvalidPageToken"


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "/etc/passwd", "a\x00b", "..",
                                  "%2e%2e", "", "x" * 129, "42"])
def test_bad_names_in_bodies(client: TestClient, tokens: Tokens, name: str) -> None:
    model = client.post("/models", json={"name": name, "kind": "base"}, headers=tokens.push)
    assert (model.status_code, model.json()["error"]) == (422, "InvalidName")
    adapter = client.post("/adapters", json={"name": name, "base": "m", "kind": "lora"},
                          headers=tokens.push)
    assert adapter.status_code == 422


@pytest.mark.parametrize("trick", PATH_TRICKS)
def test_path_tricks_in_file_names(live_server: LiveServer, client: TestClient,
                                   store: LocalBlobStore, tokens: Tokens, model: str,
                                   trick: str, tmp_path: Path) -> None:
    for owner in ("/models/m", "/adapters/1"):
        answer = raw(live_server, "PUT", f"{owner}/files/{trick}", tokens.push, b"{}")
        assert answer == (422, "InvalidFilename"), (owner, trick, answer)
    assert_nothing_stored(client, store, tokens)
    assert not list(tmp_path.rglob("config.json"))
    assert not list(tmp_path.rglob("passwd"))
    # The same token, owner and body with a plain name are accepted: the refusal above
    # was the name's, not the scope's or the owner's.
    assert raw(live_server, "PUT", "/models/m/files/config.json", tokens.push, b"{}")[0] == 201


# An encoded slash becomes a real one before routing, so no route matches at all.
REF_TRICKS = {"..%2fx": (404, "NotFound"), "%2e%2e": (422, "InvalidName"),
              "a%5cb": (422, "InvalidName"), "a%00b": (422, "InvalidName"),
              "%252e%252e": (422, "InvalidName")}


@pytest.mark.parametrize("trick", REF_TRICKS)
def test_path_tricks_in_refs(live_server: LiveServer, tokens: Tokens, trick: str) -> None:
    expected = REF_TRICKS[trick]
    for method, target, token in (("GET", f"/models/{trick}", tokens.read),
                                  ("GET", f"/adapters/{trick}", tokens.read),
                                  ("PUT", f"/adapters/x/aliases/{trick}", tokens.push)):
        answer = raw(live_server, method, target, token)
        assert answer == expected, (target, answer)


def test_upload_cut_off_midway_leaves_nothing(live_server: LiveServer, client: TestClient,
                                              store: LocalBlobStore, tokens: Tokens,
                                              model: str) -> None:
    """The client declares 10 MB, sends 3 MB of a valid stream, and hangs up."""
    host, port = live_server.url.removeprefix("http://").split(":")
    header = (f"PUT /models/{model}/files/model.safetensors HTTP/1.1\r\n"
              f"Host: {host}\r\nAuthorization: {tokens.push['Authorization']}\r\n"
              "Content-Length: 10000000\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(header + b"\0" * 3_000_000)
    deadline = time.monotonic() + 10
    while list(store.list_objects(STAGING_PREFIX)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_nothing_stored(client, store, tokens)
    # and the server is fine afterwards
    ok = client.put(f"/models/{model}/files/model.safetensors", content=valid_safetensors(),
                    headers=tokens.push)
    assert ok.status_code == 201


def test_unknown_routes_answer_json(app: FastAPI, client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


def test_valid_file_that_starts_like_a_pickle_is_accepted(client: TestClient, tokens: Tokens,
                                                          model: str) -> None:
    response = client.put(f"/models/{model}/files/model.safetensors",
                          content=pickle_like_valid_safetensors(), headers=tokens.push)
    assert response.status_code == 201, response.text
