"""A file named .safetensors that is no safetensors file is refused as what it is (415 or
422), never as a header too large (413): only a real-looking header over the cap is that."""

from __future__ import annotations

import struct

import pytest
from fastapi.testclient import TestClient

from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX
from registry.storage.local import LocalBlobStore
from tests.conftest import Tokens

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CAP = 8 * 2**20  # DELTAHUB_MAX_HEADER_BYTES's default


@pytest.mark.parametrize(("data", "status", "error", "says"), [
    # A zip archive's magic that reads as a 67,324,752-byte header: was 413.
    (b"PK\x03\x04\0\0\0\0" + b"x" * 100, 415, "PickleRefused", "is a zip archive"),
    (struct.pack("<Q", CAP + 1) + b"\x00garbage", 422, "InvalidSafetensors",
     "not a safetensors file"),
    (struct.pack("<Q", CAP + 1) + b'{"a":', 413, "PayloadTooLarge",
     f"over the {CAP}-byte limit for headers"),
], ids=["zip", "garbage", "real-looking"])
def test_an_absurd_header_length_is_not_safetensors(client: TestClient, tokens: Tokens,
                                                     store: LocalBlobStore, data: bytes,
                                                     status: int, error: str,
                                                     says: str) -> None:
    assert client.post("/models", json={"name": "m", "kind": "base"},
                       headers=tokens.push).status_code == 201
    put = client.put("/models/m/files/model.safetensors", content=data, headers=tokens.push)
    assert put.status_code == status, put.text
    assert put.json()["error"] == error
    assert says in put.json()["detail"]
    assert list(store.list_objects(BLOB_PREFIX)) == []
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert client.get("/models/m", headers=tokens.read).json()["files"] == []
