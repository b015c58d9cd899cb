"""A name or file name ending in a newline (`%0A`) is refused as a name, everywhere.

Starlette's route patterns end in `$`, which matches before a final newline: without
registry/infra/control_chars.py, `PUT /datasets/x/files/x.txt%0A` was stored as `x.txt` (201)."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from registry.storage.local import LocalBlobStore
from tests.conftest import Tokens
from tests.registry.datasets.helpers import assert_nothing_stored

TEXT = b"some text"

# (method, path, body): each names a file or an owner with a trailing newline.
FILE_PATHS = [
    ("PUT", "/datasets/x/files/x.txt%0A", TEXT),
    ("PUT", "/models/m/files/config.json%0A", b"{}"),
    ("PUT", "/adapters/1/files/adapter_config.json%0A", b"{}"),
    ("GET", "/datasets/x/files/x.txt%0A", b""),
]
NAME_PATHS = [
    ("GET", "/datasets/x%0A", b""),
    ("POST", "/datasets/x%0A/finalize", b""),
    ("PUT", "/datasets/x%0A/files/x.txt", TEXT),
    ("GET", "/models/m%0A", b""),
    ("DELETE", "/models/m%0A", b""),
    ("GET", "/adapters/a%0A", b""),
    ("PUT", "/adapters/a@1/aliases/prod%0A", b""),
    ("DELETE", "/tokens/1%0A", b""),
]


def _start(client: TestClient, tokens: Tokens) -> None:
    """A pending data set `x` and a pending model `m` the paths could reach."""
    for route, body in (("/datasets", {"name": "x"}), ("/models", {"name": "m", "kind": "base"})):
        assert client.post(route, json=body, headers=tokens.push).status_code == 201


@pytest.mark.parametrize(("method", "path", "body"), FILE_PATHS)
def test_a_file_name_ending_in_a_newline_is_refused(
        client: TestClient, tokens: Tokens, engine: Engine, store: LocalBlobStore,
        method: str, path: str, body: bytes) -> None:
    _start(client, tokens)
    response = client.request(method, path, content=body, headers=tokens.admin)
    assert (response.status_code, response.json()["error"]) == (422, "InvalidFilename")
    assert "x.txt\\n" in response.json()["detail"] or "json\\n" in response.json()["detail"]
    assert_nothing_stored(engine, store)


@pytest.mark.parametrize(("method", "path", "body"), NAME_PATHS)
def test_a_name_ending_in_a_newline_is_refused(
        client: TestClient, tokens: Tokens, engine: Engine, store: LocalBlobStore,
        method: str, path: str, body: bytes) -> None:
    _start(client, tokens)
    response = client.request(method, path, content=body, headers=tokens.admin)
    assert (response.status_code, response.json()["error"]) == (422, "InvalidName")
    assert_nothing_stored(engine, store)


@pytest.mark.parametrize(("route", "body"), [
    ("/datasets", {"name": "x\n"}),
    ("/models", {"name": "m\n", "kind": "base"}),
    ("/tokens", {"name": "ci\n", "scopes": ["read"]}),
])
def test_a_name_in_a_body_ending_in_a_newline_is_refused(
        client: TestClient, tokens: Tokens, route: str, body: dict[str, object]) -> None:
    response = client.post(route, json=body, headers=tokens.admin)
    assert (response.status_code, response.json()["error"]) == (422, "InvalidName")
    listed = client.get(route, headers=tokens.admin).json()
    items = listed["items"] if isinstance(listed, dict) else listed  # /tokens: a list
    assert all(item["name"] != body["name"] for item in items)


def test_the_same_requests_without_the_newline_are_accepted(
        client: TestClient, tokens: Tokens) -> None:
    """The refusals above are the newline's, not the route's or the token's."""
    _start(client, tokens)
    put = client.put("/datasets/x/files/x.txt", content=TEXT, headers=tokens.admin)
    assert put.status_code == 201, put.text
    assert put.json()["sha256"] == hashlib.sha256(TEXT).hexdigest()
    assert client.get("/datasets/x", headers=tokens.read).status_code == 200
