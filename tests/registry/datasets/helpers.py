"""Data files of each kind a data set takes, and a driver that pushes them over HTTP."""

from __future__ import annotations

import json
from typing import Any

import torch
from fastapi.testclient import TestClient
from httpx import Response
from safetensors.torch import save
from sqlalchemy import Engine, func, select

from registry.infra.engines import make_session_factory, unit_of_work
from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX, BlobStore
from registry.tables import Blob, DatasetFile

TEXT = "The quick brown fox jumps over the lazy dog.\nÉté, naïve café — ünïcödé.\n".encode()
JSONL = b"".join(json.dumps({"text": f"document {i}: some words", "id": i}).encode() + b"\n"
                 for i in range(5))


def token_ids(rows: int = 4, seq: int = 8, dtype: torch.dtype = torch.int64,
              **extra: torch.Tensor) -> bytes:
    """A pre-tokenized data file: `input_ids` [rows, seq] (plus `extra` tensors)."""
    ids = torch.arange(rows * seq, dtype=torch.int64).reshape(rows, seq).to(dtype)
    return save({"input_ids": ids, **extra})


# One file of each kind, as a happy-path push sends them.
KINDS: dict[str, bytes] = {"corpus.txt": TEXT, "docs.jsonl": JSONL, "ids.safetensors":
                           token_ids()}


def push_dataset(client: TestClient, headers: dict[str, str], name: str,
                 files: dict[str, bytes], **body: Any) -> Response:
    """Create (declaring nothing), upload every file, finalize; the finalize response."""
    created = client.post("/datasets", json={"name": name, **body}, headers=headers)
    assert created.status_code == 201, created.text
    for filename, data in files.items():
        put = client.put(f"/datasets/{name}/files/{filename}", content=data, headers=headers)
        assert put.status_code == 201, put.text
    return client.post(f"/datasets/{name}/finalize", headers=headers)


def count_rows(engine: Engine) -> tuple[int, int]:
    """(blob rows, dataset file rows)."""
    with unit_of_work(make_session_factory(engine)) as session:
        blobs = session.scalar(select(func.count()).select_from(Blob))
        files = session.scalar(select(func.count()).select_from(DatasetFile))
        return int(blobs or 0), int(files or 0)


def assert_nothing_stored(engine: Engine, store: BlobStore) -> None:
    """No blob row, no file row, no blob object and no staging leftover."""
    assert count_rows(engine) == (0, 0)
    assert list(store.list_objects(BLOB_PREFIX)) == []
    assert list(store.list_objects(STAGING_PREFIX)) == []
