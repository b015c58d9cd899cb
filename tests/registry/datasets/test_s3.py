"""Data sets with their blobs in an S3 server over HTTP (moto), as in a deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from registry.app import create_app
from registry.datasets.fetch import fetch_dataset_files
from registry.infra.database import Database
from registry.settings import Settings
from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX
from registry.storage.factory import make_blob_store
from tests.conftest import Tokens
from tests.registry.datasets.helpers import KINDS, count_rows, push_dataset, token_ids
from tests.s3server import S3Server

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_settings(settings: Settings, s3_server: S3Server, s3_bucket: str) -> Settings:
    return s3_server.settings(DATABASE_URL=settings.DATABASE_URL,
                              STORAGE_URL=f"s3://{s3_bucket}/deltahub")


@pytest.fixture
def s3_client(s3_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(s3_settings)) as client:
        yield client


def test_push_refuse_download_and_fetch_through_s3(s3_client: TestClient,
                                                    s3_settings: Settings, tokens: Tokens,
                                                    engine: Engine, tmp_path: Path) -> None:
    store = make_blob_store(s3_settings)
    s3_client.post("/datasets", json={"name": "bad"}, headers=tokens.push)
    refused = s3_client.put("/datasets/bad/files/ids.safetensors",
                            content=token_ids(dtype=torch.float16),
                            headers=tokens.push)
    assert (refused.status_code, refused.json()["error"]) == (422, "InvalidDataset")
    assert list(store.list_objects(BLOB_PREFIX)) == []
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert count_rows(engine) == (0, 0)

    final = push_dataset(s3_client, tokens.push, "calib", KINDS)
    assert final.status_code == 200, final.text
    assert len(list(store.list_objects(BLOB_PREFIX))) == len(KINDS)
    assert list(store.list_objects(STAGING_PREFIX)) == []
    got = s3_client.get("/datasets/calib/files/docs.jsonl", headers=tokens.read)
    assert got.content == KINDS["docs.jsonl"]

    database = Database.from_settings(s3_settings)
    try:
        paths = fetch_dataset_files(database, store, "calib", tmp_path / "data")
    finally:
        database.dispose()
    assert {p.name: p.read_bytes() for p in paths} == KINDS
