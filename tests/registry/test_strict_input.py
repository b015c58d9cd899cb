"""Ids, versions, names and page tokens are parsed strictly: a 4xx naming the problem,
never a 500, and nothing stored. Plus the smaller rules of issue 8 (last admin token,
a token revoked mid-upload, 405 with Allow, a JSON body even for a bug)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from registry.infra.engines import make_session_factory, unit_of_work
from registry.storage.base import STAGING_PREFIX
from registry.storage.local import LocalBlobStore
from registry.tables import Token
from tests.conftest import LiveServer, Tokens
from tests.malformed import valid_safetensors

HUGE_IDS = ["2147483648", "99999999999", "9" * 40]
UNICODE_DIGITS = ["²", "١٢", "１２", "𝟙"]  # str.isdigit() is True for each


@pytest.fixture
def model(client: TestClient, tokens: Tokens) -> str:
    response = client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
    assert response.status_code == 201
    return "m"


@pytest.mark.parametrize("ref", HUGE_IDS)
def test_ids_past_the_column_range_are_not_found(client: TestClient, tokens: Tokens,
                                                 model: str, ref: str) -> None:
    for path in (f"/models/{ref}", f"/adapters/{ref}", f"/adapters/m@{ref}",
                 f"/models/{ref}/files/config.json"):
        response = client.get(path, headers=tokens.read)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] in ("ModelNotFound", "AdapterNotFound")
    put = client.put(f"/models/{ref}/files/config.json", content=b"{}", headers=tokens.push)
    assert put.status_code == 404, put.text
    finalize = client.post(f"/adapters/{ref}/finalize", headers=tokens.push)
    assert finalize.status_code == 404, finalize.text


@pytest.mark.parametrize("ref", UNICODE_DIGITS)
def test_non_ascii_digits_are_names_and_invalid(client: TestClient, tokens: Tokens,
                                                ref: str) -> None:
    for path in (f"/models/{ref}", f"/adapters/{ref}", f"/adapters/m@{ref}"):
        response = client.get(path, headers=tokens.read)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "InvalidName"


@pytest.mark.parametrize("token_id", [*HUGE_IDS, *UNICODE_DIGITS, "0", "-1", "1.5"])
def test_token_ids_are_checked(client: TestClient, tokens: Tokens, token_id: str) -> None:
    response = client.delete(f"/tokens/{token_id}", headers=tokens.admin)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"
    assert "token_id" in response.json()["detail"]


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize("payload", [
    {"id": 2**40, "f": "x"}, {"id": True, "f": "x"}, {"id": -3, "f": "x"}, {"id": 0, "f": "x"},
    {"id": 5, "f": 7}, [1, 2], "id", 12, {"id": "5", "f": "x"},
])
def test_forged_page_tokens_are_refused(client: TestClient, tokens: Tokens,
                                        payload: object) -> None:
    for path in ("/models", "/adapters"):
        response = client.get(path, params={"page_token": _token(payload)},
                              headers=tokens.read)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "InvalidPageToken"


def test_page_tokens_that_are_not_base64_json_are_refused(client: TestClient,
                                                          tokens: Tokens) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 100 + b"]" * 100).decode()
    for token in ("!!!", "é", "A" * 5000, nested, base64.urlsafe_b64encode(b"\xff").decode()):
        response = client.get("/adapters", params={"page_token": token}, headers=tokens.read)
        assert response.status_code == 422, (token[:20], response.text)
        assert response.json()["error"] == "InvalidPageToken"


@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "\nabc", "ab\x00c", "abc ", "ä"])
def test_names_are_matched_in_full(client: TestClient, tokens: Tokens, name: str) -> None:
    response = client.post("/models", json={"name": name, "kind": "base"}, headers=tokens.push)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "InvalidName"
    assert client.get("/models", headers=tokens.read).json()["items"] == []
    alias = client.put(f"/adapters/1/aliases/{quote(name)}", headers=tokens.push)
    assert alias.status_code in (404, 422), alias.text  # never a 500


def test_the_last_admin_token_cannot_be_revoked(client: TestClient, tokens: Tokens) -> None:
    listed = client.get("/tokens", headers=tokens.admin).json()
    admin_id = next(t["id"] for t in listed if t["scopes"] == ["admin"])
    refused = client.delete(f"/tokens/{admin_id}", headers=tokens.admin)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "LastAdminToken"
    assert client.get("/tokens", headers=tokens.admin).status_code == 200  # still works

    second = client.post("/tokens", json={"name": "admin-2", "scopes": ["admin"]},
                         headers=tokens.admin)
    assert second.status_code == 201
    assert client.delete(f"/tokens/{admin_id}", headers=tokens.admin).status_code == 200
    assert client.get("/tokens", headers=tokens.admin).status_code == 401
    headers = {"Authorization": f"Bearer {second.json()['token']}"}
    last = client.delete(f"/tokens/{second.json()['id']}", headers=headers)
    assert last.status_code == 409
    assert last.json()["error"] == "LastAdminToken"


def test_a_token_revoked_mid_upload_records_nothing(live_server: LiveServer, engine: Engine,
                                                    store: LocalBlobStore, tokens: Tokens,
                                                    client: TestClient, model: str) -> None:
    body = valid_safetensors()
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall((f"PUT /models/{model}/files/model.safetensors HTTP/1.1\r\n"
                      f"Host: {host}\r\nAuthorization: {tokens.push['Authorization']}\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode())
        sock.sendall(body[:100])
        time.sleep(0.3)  # the server has authenticated and is streaming
        with unit_of_work(make_session_factory(engine)) as session:
            session.execute(update(Token).where(Token.name == "test-push")
                            .values(revoked_at=Token.created_at))
        sock.sendall(body[100:])
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 401"), response[:200]
    assert b"revoked while the request ran" in response
    assert client.get(f"/models/{model}", headers=tokens.read).json()["files"] == []
    assert list(store.list_objects(STAGING_PREFIX)) == []


def _read_response(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_405_names_every_allowed_method(client: TestClient, tokens: Tokens) -> None:
    response = client.put("/adapters/x", headers=tokens.admin)
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"
    assert set(response.headers["allow"].split(", ")) >= {"GET", "DELETE"}
    response = client.patch("/models", headers=tokens.admin)
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}


def test_a_bug_still_answers_json(app: FastAPI) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("/secret/server/path exploded")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"] == "InternalError"
    assert "/secret" not in response.text


def test_concurrent_reads_through_the_test_client(client: TestClient, tokens: Tokens,
                                                  model: str) -> None:
    """More concurrent requests than database turns all get answers (no pool stall)."""
    statuses: list[int] = []

    def get() -> None:
        statuses.append(client.get("/models", headers=tokens.read).status_code)

    threads = [threading.Thread(target=get) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [200] * 60


def test_empty_filters_are_invalid_not_ignored(client: TestClient, tokens: Tokens) -> None:
    for path in ("/models", "/adapters"):
        response = client.get(path, params={"base": ""}, headers=tokens.read)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "InvalidName"


def test_401_says_how_to_authenticate(client: TestClient) -> None:
    response = client.get("/models")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("body", [
    '{"verify": "off", "rank": ' + "9" * 5000 + "}",  # int() of it raises ValueError
    '{"verify": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError
])
def test_a_json_body_too_deep_or_too_long_a_number_says_what_to_send(
        client: TestClient, tokens: Tokens, model: str, body: str) -> None:
    response = client.post("/models/m/compress?method=lora", content=body,
                           headers={**tokens.compress, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "BadRequest"
    assert "nests thousands of levels" in response.json()["detail"]
    assert client.get("/jobs", headers=tokens.read).json()["items"] == []
