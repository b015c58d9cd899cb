"""The whole push and pull path with blobs in an S3-compatible server over HTTP, on each
of the suite's two (moto and s3rver)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from sqlalchemy import Engine

from registry.app import create_app
from registry.client import DeltahubClient
from registry.client.partial import part_path
from registry.settings import Settings
from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX
from registry.storage.factory import make_blob_store
from registry.storage.s3 import S3BlobStore
from tests.conftest import Tokens
from tests.malformed import nan_safetensors
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels
from tests.registry.downloads import check_conditional_and_ranged_gets, push_one_of_each
from tests.s3server import S3Server

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_settings(settings: Settings, s3_backend: S3Server) -> Settings:
    return s3_backend.settings(DATABASE_URL=settings.DATABASE_URL,
                               STORAGE_URL=f"s3://{s3_backend.create_bucket()}/deltahub")


@pytest.fixture
def s3_client(s3_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(s3_settings)) as client:
        yield client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_push_and_pull_through_s3(s3_client: TestClient, s3_settings: Settings,
                                  tokens: Tokens, tiny_models: TinyModels) -> None:
    register_model(s3_client, tokens.push, "llama-tiny", tiny_models.base)
    pushed = push_adapter(s3_client, tokens.push, "bot", "llama-tiny", tiny_models.lora)
    assert pushed.status_code == 201
    weights = s3_client.get("/adapters/bot@1/files/adapter_model.safetensors",
                            headers=tokens.read)
    assert weights.content == (tiny_models.lora / "adapter_model.safetensors").read_bytes()

    store = make_blob_store(s3_settings)
    keys = {o.key for o in store.list_objects(BLOB_PREFIX)}
    assert len(keys) == 6  # base: 3 files, adapter: 3 files
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert s3_client.get("/readyz").json()["checks"]["storage"] == "ok"

    s3_client.post("/models", json={"name": "bad", "kind": "base"}, headers=tokens.push)
    refused = s3_client.put("/models/bad/files/model.safetensors", content=nan_safetensors(),
                            headers=tokens.push)
    assert refused.status_code == 422
    assert {o.key for o in store.list_objects(BLOB_PREFIX)} == keys
    assert list(store.list_objects(STAGING_PREFIX)) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_push_and_pull_of_a_file_over_the_multipart_threshold(
        s3_client: TestClient, s3_settings: Settings, s3_backend: S3Server,
        tokens: Tokens) -> None:
    # 20 MiB: past boto3's 8 MiB multipart threshold, where its managed copy used to
    # turn to a multipart copy that s3rver refuses at commit.
    weights = save({"w": torch.arange(5 * 1024 * 1024, dtype=torch.float32)})
    assert len(weights) > 20 * 1024 * 1024
    s3_client.post("/models", json={"name": "big", "kind": "base"}, headers=tokens.push)
    pushed = s3_client.put("/models/big/files/model.safetensors", content=weights,
                           headers=tokens.push)
    assert pushed.status_code == 201, pushed.text
    pulled = s3_client.get("/models/big/files/model.safetensors", headers=tokens.read)
    assert pulled.status_code == 200
    assert pulled.content == weights

    store = make_blob_store(s3_settings)
    assert isinstance(store, S3BlobStore)
    assert [o.size for o in store.list_objects(BLOB_PREFIX)] == [len(weights)]
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert s3_backend.unfinished_uploads(store.bucket) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unreachable_storage_is_503_and_stores_nothing(
        settings: Settings, engine: Engine, tokens: Tokens) -> None:
    from tests.ports import free_port

    dead = settings.model_copy(update={
        "STORAGE_URL": "s3://deltahub-test/x", "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "S3_ACCESS_KEY_ID": "k", "S3_SECRET_ACCESS_KEY": "s", "S3_MAX_ATTEMPTS": 1,
        "S3_CONNECT_TIMEOUT_SECONDS": 0.5})
    with TestClient(create_app(dead)) as client:
        client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
        response = client.put("/models/m/files/config.json", content=b"{}", headers=tokens.push)
        assert response.status_code == 503
        assert response.json()["error"] == "StorageUnavailable"
        assert client.get("/models/m", headers=tokens.read).json()["files"] == []
        assert client.get("/readyz").status_code == 503


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_downloads_from_s3_are_conditional_and_ranged(s3_client: TestClient, tokens: Tokens,
                                                      tiny_models: TinyModels,
                                                      tmp_path: Path) -> None:
    # A range is a ranged GetObject: s3rver, which sends more than `bytes=0-0` asks for,
    # included (registry/storage/s3/reads.py).
    files = push_one_of_each(s3_client, tokens.push, tiny_models, tmp_path)
    for url, data in files.items():
        check_conditional_and_ranged_gets(s3_client, tokens.read, url, data)
    first = s3_client.get(next(iter(files)), headers={**tokens.read, "Range": "bytes=0-0"})
    assert (first.status_code, first.content) == (206, next(iter(files.values()))[:1])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_pull_from_s3_continues_a_part_with_a_ranged_read(
        s3_client: TestClient, tokens: Tokens, tiny_models: TinyModels,
        tmp_path: Path) -> None:
    files = push_one_of_each(s3_client, tokens.push, tiny_models, tmp_path / "pushed")
    url, data = next(iter(files.items()))
    owner, _, filename = url.partition("/files/")
    sha = hashlib.sha256(data).hexdigest()
    dest = tmp_path / filename
    part_path(dest, sha).write_bytes(data[:100])  # what an interrupted pull left
    s3_client.headers.update(tokens.read)
    statuses: list[int] = []
    s3_client.event_hooks["response"].append(lambda r: statuses.append(r.status_code))
    assert DeltahubClient(http=s3_client).download(owner, filename, dest, sha) is True
    assert dest.read_bytes() == data
    assert statuses == [206]
