"""File downloads of every owner answer `If-None-Match` with 304 and `Range` (with
`If-Range`) with 206 or 416, from the local blob store, on SQLite and PostgreSQL (the S3
store: tests/registry/storage/test_s3_api.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from registry.storage.local import LocalBlobStore
from tests.conftest import Tokens
from tests.registry.conftest import TinyModels
from tests.registry.downloads import check_conditional_and_ranged_gets, push_one_of_each


def test_downloads_are_conditional_and_ranged(client: TestClient, tokens: Tokens,
                                              tiny_models: TinyModels, tmp_path: Path) -> None:
    files = push_one_of_each(client, tokens.push, tiny_models, tmp_path)
    for url, data in files.items():
        check_conditional_and_ranged_gets(client, tokens.read, url, data)


def test_a_range_reads_only_its_bytes_from_the_store(client: TestClient, tokens: Tokens,
                                                     tiny_models: TinyModels, tmp_path: Path,
                                                     store: LocalBlobStore) -> None:
    files = push_one_of_each(client, tokens.push, tiny_models, tmp_path)
    url, data = next(iter(files.items()))
    asked: list[tuple[int, int | None]] = []
    read = store.read

    def recording_read(sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        asked.append((start, end))
        return read(sha256, start, end)

    store.read = recording_read  # type: ignore[method-assign]
    part = client.get(url, headers={**tokens.read, "Range": "bytes=100-199"})
    assert part.content == data[100:200]
    unchanged = client.get(url, headers={**tokens.read,
                                         "If-None-Match": part.headers["etag"]})
    assert unchanged.status_code == 304
    assert asked == [(100, 200)]  # the 304 opened nothing


def test_a_missing_file_is_still_a_404_whatever_the_headers(client: TestClient,
                                                            tokens: Tokens,
                                                            tiny_models: TinyModels,
                                                            tmp_path: Path) -> None:
    push_one_of_each(client, tokens.push, tiny_models, tmp_path)
    missing = client.get("/adapters/bot@1/files/nope.safetensors",
                         headers={**tokens.read, "If-None-Match": "*", "Range": "bytes=0-1"})
    assert missing.status_code == 404


def test_a_blob_gone_from_the_store_is_a_json_503_not_a_broken_stream(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, tmp_path: Path,
        store: LocalBlobStore) -> None:
    # The blob is opened when the response is sent, past the endpoint: its failure must
    # still reach the error handlers before any byte goes out.
    files = push_one_of_each(client, tokens.push, tiny_models, tmp_path)
    url, data = next(iter(files.items()))
    store.delete(hashlib.sha256(data).hexdigest())
    for headers in ({}, {"Range": "bytes=0-9"}):
        gone = client.get(url, headers={**tokens.read, **headers})
        assert gone.status_code == 503
        assert gone.json()["error"] == "StorageUnavailable"
