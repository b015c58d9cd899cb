"""What probes and clients see when the blob store fails.

`/readyz` must say "not ready" when the store cannot take a write, not only when it is
unreachable; and no body, readiness or 503, may show the server's paths or its S3
endpoint. The stores are the real ones: a local directory whose file system refuses
writes (tests run as root, so a mode bit would not stop them: a regular file stands
where a directory belongs), and moto's S3 server over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from registry.app import create_app
from registry.settings import Settings
from registry.storage.local import LocalBlobStore
from tests.conftest import Tokens
from tests.malformed import valid_safetensors
from tests.ports import free_port
from tests.s3server import S3Server

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def replace_with_file(directory: Path) -> None:
    """Make every write under `directory` fail with ENOTDIR, for root as for anyone."""
    shutil.rmtree(directory)
    directory.write_bytes(b"a file where the store keeps a directory")


def restore_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def storage_check(client: TestClient) -> tuple[int, str]:
    response = client.get("/readyz")
    assert response.json()["checks"]["database"] == "ok"  # only storage is at fault
    detail: str = response.json()["checks"]["storage"]
    return response.status_code, detail


def assert_no_server_detail(body: Any, *secrets: str) -> None:
    text = json.dumps(body)
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into {text}"


@pytest.fixture
def model(client: TestClient, tokens: Tokens) -> str:
    created = client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
    assert created.status_code == 201, created.text
    return "m"


# --- local directory ------------------------------------------------------------------


def test_ready_while_the_local_store_takes_writes(client: TestClient,
                                                  store: LocalBlobStore) -> None:
    assert storage_check(client) == (200, "ok")
    assert list(store.root.joinpath("staging").iterdir()) == []  # the probe was removed


def test_not_ready_while_local_staging_refuses_writes(client: TestClient,
                                                     store: LocalBlobStore,
                                                     tmp_path: Path) -> None:
    replace_with_file(store.root / "staging")
    status, detail = storage_check(client)
    assert status == 503
    assert "cannot write to staging/: not a directory" in detail
    assert "a file stands where the store keeps a directory" in detail  # what to do
    assert_no_server_detail(detail, str(tmp_path))

    restore_directory(store.root / "staging")
    assert storage_check(client) == (200, "ok")  # and ready again once fixed


def test_not_ready_while_local_blobs_refuse_writes(client: TestClient, store: LocalBlobStore,
                                                  tmp_path: Path) -> None:
    replace_with_file(store.root / "blobs" / "sha256")
    status, detail = storage_check(client)
    assert status == 503
    assert "cannot write to blobs/sha256/" in detail
    assert_no_server_detail(detail, str(tmp_path))


def test_upload_503_names_no_server_path(client: TestClient, store: LocalBlobStore,
                                         tokens: Tokens, model: str, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    replace_with_file(store.root / "staging")
    response = client.put(f"/models/{model}/files/model.safetensors",
                          content=valid_safetensors(), headers=tokens.push)
    assert response.status_code == 503
    assert response.json()["error"] == "StorageUnavailable"
    assert "cannot create staging/" in response.json()["detail"]
    assert_no_server_detail(response.json(), str(tmp_path))
    # The operator still learns where: the log has the full path.
    assert str(store.root / "staging") in caplog.text


def test_download_503_names_no_server_path(client: TestClient, store: LocalBlobStore,
                                           tokens: Tokens, model: str,
                                           tmp_path: Path) -> None:
    uploaded = client.put(f"/models/{model}/files/model.safetensors",
                          content=valid_safetensors(), headers=tokens.push)
    assert uploaded.status_code == 201, uploaded.text
    blobs = store.root / "blobs" / "sha256"
    shutil.rmtree(blobs)
    blobs.write_bytes(b"not a directory")
    response = client.get(f"/models/{model}/files/model.safetensors", headers=tokens.read)
    assert response.status_code == 503, response.text
    assert "blobs/sha256/" in response.json()["detail"]
    assert_no_server_detail(response.json(), str(tmp_path))


# --- S3 (moto over HTTP) --------------------------------------------------------------


@pytest.fixture
def s3_settings(settings: Settings, s3_server: S3Server, s3_bucket: str) -> Settings:
    return s3_server.settings(DATABASE_URL=settings.DATABASE_URL,
                              STORAGE_URL=f"s3://{s3_bucket}/deltahub")


@contextlib.contextmanager
def app_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.state.database.dispose()


@pytest.fixture
def s3_client(s3_settings: Settings) -> Iterator[TestClient]:
    with app_client(s3_settings) as client:
        yield client


def _deny_puts(server: S3Server, bucket: str) -> None:
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    server.client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


@pytest.mark.s3
def test_not_ready_when_the_bucket_is_gone(s3_client: TestClient, s3_server: S3Server,
                                           s3_bucket: str) -> None:
    assert storage_check(s3_client) == (200, "ok")
    assert s3_server.client.list_objects_v2(Bucket=s3_bucket).get("Contents", []) == []
    s3_server.client.delete_bucket(Bucket=s3_bucket)
    status, detail = storage_check(s3_client)
    assert status == 503
    assert "the bucket does not exist" in detail
    assert "DELTAHUB_STORAGE_URL" in detail
    assert_no_server_detail(detail, s3_server.endpoint_url, s3_bucket)


@pytest.mark.s3
def test_not_ready_when_a_bucket_policy_denies_writes(s3_client: TestClient,
                                                      s3_server: S3Server, s3_bucket: str,
                                                      tokens: Tokens) -> None:
    _deny_puts(s3_server, s3_bucket)
    status, detail = storage_check(s3_client)  # the bucket answers, but takes no write
    assert status == 503
    assert "cannot write to staging/" in detail
    assert "bucket policy" in detail
    assert_no_server_detail(detail, s3_server.endpoint_url, s3_bucket)

    created = s3_client.post("/models", json={"name": "m", "kind": "base"},
                             headers=tokens.push)
    assert created.status_code == 201
    upload = s3_client.put("/models/m/files/model.safetensors", content=valid_safetensors(),
                           headers=tokens.push)
    assert upload.status_code == 503
    assert_no_server_detail(upload.json(), s3_server.endpoint_url, s3_bucket)


@pytest.mark.s3
def test_not_ready_when_s3_is_unreachable(settings: Settings, s3_server: S3Server) -> None:
    # Nothing listens on a port just released, so connections are refused at once.
    endpoint = f"http://127.0.0.1:{free_port()}"
    down = s3_server.settings(DATABASE_URL=settings.DATABASE_URL, STORAGE_URL="s3://b-1/x",
                              S3_ENDPOINT_URL=endpoint, S3_MAX_ATTEMPTS=1,
                              S3_CONNECT_TIMEOUT_SECONDS=0.5, S3_READ_TIMEOUT_SECONDS=0.5)
    with app_client(down) as client:
        status, detail = storage_check(client)
    assert status == 503
    assert "cannot connect to the endpoint" in detail
    assert "DELTAHUB_S3_ENDPOINT_URL" in detail  # which setting to look at, not its value
    assert_no_server_detail(detail, endpoint, endpoint.removeprefix("http://"))
