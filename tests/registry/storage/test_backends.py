"""One contract for every blob store: the local directory and S3, on two independent
servers over HTTP (moto, and s3rver, which implements only S3's core)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from registry.settings import Settings
from registry.storage.base import (
    BLOB_PREFIX,
    PART_BYTES,
    READ_CHUNK_BYTES,
    STAGING_PREFIX,
    BlobNotFound,
    BlobStore,
    StorageError,
    blob_key,
    check_key,
)
from registry.storage.factory import make_blob_store
from registry.storage.local import LocalBlobStore
from registry.storage.s3 import S3BlobStore
from registry.storage.s3.client import make_s3_client
from registry.storage.sweep import sweep_storage
from tests.ports import free_port
from tests.s3server import S3_SERVER_FIXTURES, S3Server, server_of

BIG = 11 * 1024 * 1024  # over PART_BYTES: a multipart upload with a short last part
HOUR = 3600


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(store: BlobStore, data: bytes, write_bytes: int = 3 * 1024 * 1024 + 7) -> str:
    """Upload in odd-sized writes (so parts never line up with writes) and commit."""
    with store.start_upload() as writer:
        for i in range(0, len(data), write_bytes):
            writer.write(data[i : i + write_bytes])
        staged = writer.finish()
    assert staged.size == len(data)
    store.commit(staged, sha(data))
    return sha(data)


def keys(store: BlobStore, prefix: str) -> list[str]:
    return sorted(obj.key for obj in store.list_objects(prefix))


def pending_uploads(store: BlobStore) -> list[str]:
    """Unfinished multipart uploads (S3); a local store has none beyond staging files."""
    if isinstance(store, S3BlobStore):
        return server_of(store).unfinished_uploads(store.bucket)
    return []


def assert_no_staging(store: BlobStore) -> None:
    assert keys(store, STAGING_PREFIX) == []
    assert pending_uploads(store) == []


@pytest.fixture(params=["local", *(pytest.param(kind, marks=pytest.mark.s3)
                                    for kind in S3_SERVER_FIXTURES)])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "store")
    server: S3Server = request.getfixturevalue(S3_SERVER_FIXTURES[request.param])
    # A prefix, as most deployments share a bucket; test_s3_prefixes covers none.
    return S3BlobStore(server.client, server.create_bucket(), "deltahub/blobs")


def lists_uploads(store: BlobStore) -> bool:
    """Whether gc can find unfinished multipart uploads: s3rver cannot list them."""
    return not isinstance(store, S3BlobStore) or server_of(store).lists_uploads


# --- the contract, on both backends ---------------------------------------------------


def test_upload_commit_read_back(blob_store: BlobStore, tmp_path: Path) -> None:
    data = payload(BIG)
    with blob_store.start_upload() as writer:
        for i in range(0, BIG, 1024 * 1024 + 7):
            writer.write(data[i : i + 1024 * 1024 + 7])
        staged = writer.finish()
    assert staged.key.startswith(STAGING_PREFIX)
    assert staged.size == BIG
    assert keys(blob_store, STAGING_PREFIX) == [staged.key]
    assert not blob_store.exists(sha(data))  # staged objects are invisible to readers

    blob_store.commit(staged, sha(data))

    assert_no_staging(blob_store)
    assert keys(blob_store, BLOB_PREFIX) == [blob_key(sha(data))]
    assert blob_store.exists(sha(data))
    assert blob_store.size(sha(data)) == BIG
    chunks = list(blob_store.read(sha(data)))
    assert len(chunks) > 1  # streamed, not read whole
    assert max(len(c) for c in chunks) <= READ_CHUNK_BYTES
    assert b"".join(chunks) == data
    blob_store.download(sha(data), tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data


def test_empty_object(blob_store: BlobStore, tmp_path: Path) -> None:
    digest = put(blob_store, b"")
    assert blob_store.size(digest) == 0
    assert blob_store.read_bytes(digest) == b""
    assert blob_store.read_bytes(digest, 0, 10) == b""
    assert blob_store.read_bytes(digest, 3) == b""
    blob_store.download(digest, tmp_path / "empty")
    assert (tmp_path / "empty").read_bytes() == b""


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 1),
        (10, 20),
        (999, 1000),
        (990, 5000),
        (500, None),
        (1000, None),
        (1000, 1200),
        (2000, None),
        (7, 7),
    ],
)
def test_ranged_reads(blob_store: BlobStore, start: int, end: int | None) -> None:
    data = payload(1000)
    digest = put(blob_store, data)
    assert blob_store.read_bytes(digest, start, end) == data[start:end]


def test_invalid_ranges_are_refused(blob_store: BlobStore) -> None:
    digest = put(blob_store, b"abc")
    with pytest.raises(ValueError):
        blob_store.read(digest, -1)
    with pytest.raises(ValueError):
        blob_store.read(digest, 2, 1)


def test_commit_of_existing_blob_keeps_bytes_and_refreshes_age(blob_store: BlobStore) -> None:
    data = payload(4096)
    digest = put(blob_store, data)
    if isinstance(blob_store, LocalBlobStore):
        old = time.time() - 2 * HOUR
        os.utime(blob_store.root / blob_key(digest), (old, old))
    else:
        time.sleep(1.1)  # S3 times have one-second resolution and cannot be set
    (before,) = blob_store.list_objects(BLOB_PREFIX)

    # The caller verified the hash; even bytes that do not match it never replace a blob.
    with blob_store.start_upload() as writer:
        writer.write(b"something else")
        staged = writer.finish()
    blob_store.commit(staged, digest)

    assert_no_staging(blob_store)
    (after,) = blob_store.list_objects(BLOB_PREFIX)
    assert blob_store.read_bytes(digest) == data
    assert after.modified > before.modified  # gc's grace period starts again


def test_commit_of_a_vanished_staged_object_fails(blob_store: BlobStore) -> None:
    with blob_store.start_upload() as writer:
        writer.write(b"gone")
        staged = writer.finish()
    blob_store.discard(staged)
    with pytest.raises(StorageError, match="staged object"):
        blob_store.commit(staged, sha(b"gone"))
    assert not blob_store.exists(sha(b"gone"))


def test_abort_leaves_nothing(blob_store: BlobStore) -> None:
    writer = blob_store.start_upload()
    writer.write(payload(PART_BYTES + 1))  # past one part: S3 has begun a multipart upload
    writer.abort()
    assert_no_staging(blob_store)
    writer.abort()  # safe twice
    with pytest.raises(ValueError):
        writer.write(b"more")


def upload_and_fail(store: BlobStore, data: bytes, *, finish: bool, error: Exception) -> None:
    with store.start_upload() as writer:
        writer.write(data)
        if finish:
            writer.finish()
        raise error


def test_exception_in_block_leaves_nothing(blob_store: BlobStore) -> None:
    error = RuntimeError("client went away")
    with pytest.raises(RuntimeError, match="client went away"):
        upload_and_fail(blob_store, payload(PART_BYTES + 1), finish=False, error=error)
    assert_no_staging(blob_store)


def test_exception_after_finish_removes_staged_object(blob_store: BlobStore) -> None:
    error = RuntimeError("invalid content")
    with pytest.raises(RuntimeError, match="invalid"):
        upload_and_fail(blob_store, b"not a safetensors file", finish=True, error=error)
    assert_no_staging(blob_store)


def test_leaving_block_without_finish_aborts(blob_store: BlobStore) -> None:
    with blob_store.start_upload() as writer:
        writer.write(b"half")
    assert not writer.finished
    assert_no_staging(blob_store)


def test_discard(blob_store: BlobStore) -> None:
    with blob_store.start_upload() as writer:
        writer.write(b"rejected")
        staged = writer.finish()
    blob_store.discard(staged)
    assert_no_staging(blob_store)
    assert not blob_store.exists(sha(b"rejected"))


def test_delete(blob_store: BlobStore) -> None:
    digest = put(blob_store, b"short-lived")
    blob_store.delete(digest)
    assert not blob_store.exists(digest)
    assert keys(blob_store, BLOB_PREFIX) == []
    with pytest.raises(BlobNotFound):
        blob_store.read(digest)
    blob_store.delete(digest)  # already gone: not an error


def test_missing_blob(blob_store: BlobStore, tmp_path: Path) -> None:
    digest = sha(b"never stored")
    assert not blob_store.exists(digest)
    with pytest.raises(BlobNotFound):
        blob_store.read(digest)  # from the call itself, before any chunk is pulled
    with pytest.raises(BlobNotFound):
        blob_store.read(digest, 5, 5)
    with pytest.raises(BlobNotFound):
        blob_store.size(digest)
    with pytest.raises(BlobNotFound):
        blob_store.download(digest, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_keys_are_checked(blob_store: BlobStore) -> None:
    for bad in ["../outside", "/etc/passwd", "staging/../../x", "", "a//b"]:
        with pytest.raises(ValueError):
            blob_store.delete_key(bad)
    with pytest.raises(ValueError):
        blob_store.exists("NOT-A-SHA")


def test_download_replaces_existing_file(blob_store: BlobStore, tmp_path: Path) -> None:
    data = payload(300_000)
    digest = put(blob_store, data)
    (tmp_path / "dl").mkdir()
    dest = tmp_path / "dl" / "model.safetensors"
    dest.write_bytes(b"stale")
    blob_store.download(digest, dest)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["model.safetensors"]  # no temp left


def test_list_objects_reports_size_and_utc_modified(blob_store: BlobStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)  # S3 rounds to the second
    a, b = put(blob_store, b"a" * 10), put(blob_store, b"b" * 20)
    after = datetime.now(UTC) + timedelta(seconds=2)

    listed = {obj.key: obj for obj in blob_store.list_objects(BLOB_PREFIX)}
    assert set(listed) == {blob_key(a), blob_key(b)}
    assert (listed[blob_key(a)].size, listed[blob_key(b)].size) == (10, 20)
    for obj in listed.values():
        assert obj.modified.utcoffset() == timedelta(0)
        assert before <= obj.modified <= after
    assert keys(blob_store, "blobs/sha256/" + a[:8]) == [blob_key(a)]
    assert keys(blob_store, STAGING_PREFIX) == []


def test_gc_removes_old_staging_and_unreferenced_blobs(blob_store: BlobStore) -> None:
    kept, dropped = put(blob_store, b"referenced"), put(blob_store, b"unreferenced!")
    with blob_store.start_upload() as writer:
        writer.write(b"never committed")
        leftover = writer.finish()

    young = sweep_storage(blob_store, {kept}, grace_seconds=HOUR)
    assert (young.staging_deleted, young.blobs_deleted, young.kept_young) == (0, 0, 2)
    assert young.kept_referenced == 1
    assert keys(blob_store, STAGING_PREFIX) == [leftover.key]
    assert blob_store.exists(dropped)

    later = datetime.now(UTC) + timedelta(hours=2)
    report = sweep_storage(blob_store, lambda h: h == kept, grace_seconds=HOUR, now=later)
    assert (report.staging_deleted, report.staging_bytes_freed) == (1, len(b"never committed"))
    assert (report.blobs_deleted, report.blob_bytes_freed) == (1, len(b"unreferenced!"))
    assert report.bytes_freed == len(b"never committed") + len(b"unreferenced!")
    assert report.kept_referenced == 1
    assert keys(blob_store, STAGING_PREFIX) == []
    assert blob_store.exists(kept)
    assert not blob_store.exists(dropped)


def test_gc_cleans_up_after_a_crashed_writer(blob_store: BlobStore,
                                            caplog: pytest.LogCaptureFixture) -> None:
    writer = blob_store.start_upload()
    writer.write(payload(PART_BYTES + 1))  # S3: a multipart upload that nobody finishes

    if isinstance(blob_store, LocalBlobStore):
        # moto reports a fixed 2010 start for every multipart upload, so only the local
        # store can show that an upload in flight survives a collection.
        sweep_storage(blob_store, set(), grace_seconds=HOUR)
        assert len(keys(blob_store, STAGING_PREFIX)) == 1

    later = datetime.now(UTC) + timedelta(hours=2)
    report = sweep_storage(blob_store, set(), grace_seconds=HOUR, now=later)
    if lists_uploads(blob_store):
        assert report.staging_deleted + report.uploads_aborted == 1
        assert_no_staging(blob_store)
    else:
        # The sweep cannot see the upload, says so, and does not fail for it.
        assert (report.staging_deleted, report.uploads_aborted) == (0, 0)
        assert "cannot list multipart uploads" in caplog.text
        assert len(pending_uploads(blob_store)) == 1
    writer.abort()  # the writer's own late abort still succeeds
    assert_no_staging(blob_store)


def test_gc_rejects_naive_now(blob_store: BlobStore) -> None:
    with pytest.raises(ValueError, match="timezone"):
        sweep_storage(blob_store, set(), grace_seconds=0, now=datetime(2030, 1, 1))


def test_check_passes(blob_store: BlobStore) -> None:
    blob_store.check()
    assert_no_staging(blob_store)


def refuse_writes(store: BlobStore, actions: str = "s3:PutObject") -> None:
    """Make the real backend refuse writes in a way that root cannot bypass: a local
    store gets a regular file where its staging directory belongs; an S3 bucket gets a
    policy that denies `actions`, or on s3rver (no bucket policies) the same file trick
    in the directory where it keeps the bucket."""
    if isinstance(store, LocalBlobStore):
        staging = store.root / "staging"
        staging.rmdir()
        staging.write_bytes(b"a file where the staging directory belongs")
        return
    assert isinstance(store, S3BlobStore)
    server = server_of(store)
    if server.has_bucket_policies:
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*", "Action": actions,
            "Resource": f"arn:aws:s3:::{store.bucket}/*"}]}
        store.client.put_bucket_policy(Bucket=store.bucket, Policy=json.dumps(policy))
        return
    assert actions == "s3:PutObject", "s3rver can only refuse all writes to staging/"
    assert server.data_dir is not None
    staging = server.data_dir / store.bucket / store.full_key("staging")
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(b"a file where s3rver would make the staging directory")


def where_it_lives(store: BlobStore) -> list[str]:
    """What a client must never read in an error: the local root, the bucket, the prefix
    and the endpoint."""
    if isinstance(store, LocalBlobStore):
        return [str(store.root), str(store.root.parent)]
    assert isinstance(store, S3BlobStore)
    return [store.bucket, store.prefix, store.client.meta.endpoint_url]


def test_check_fails_when_the_store_takes_no_write(blob_store: BlobStore,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    blob_store.exists(sha(b"x"))  # reads still work: only a write can tell
    refuse_writes(blob_store)
    with pytest.raises(StorageError, match="cannot write to staging/") as excinfo:
        blob_store.check()
    message = str(excinfo.value)
    for secret in where_it_lives(blob_store):
        assert secret not in message
    assert excinfo.value.__cause__ is not None  # the backend's own error stays chained
    assert where_it_lives(blob_store)[0] in caplog.text  # and the log says where


def test_storage_errors_name_store_keys_only(blob_store: BlobStore) -> None:
    refuse_writes(blob_store)
    with pytest.raises(StorageError) as excinfo:
        put(blob_store, payload(PART_BYTES + 1))  # S3: fails on the multipart upload
    message = str(excinfo.value)
    assert "staging/" in message
    for secret in where_it_lives(blob_store):
        assert secret not in message


# --- local only -----------------------------------------------------------------------


def test_local_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "store" / "staging" / "escape").symlink_to(outside)
    with pytest.raises(StorageError, match="outside"):
        store.delete_key("staging/escape/file")


def test_local_os_errors_become_storage_errors(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    refuse_writes(store)
    with pytest.raises(StorageError, match="local storage: cannot write to staging/: not a "
                       "directory; a file stands where the store keeps a directory"):
        store.check()
    with pytest.raises(StorageError, match=r"local storage: cannot create staging/[0-9a-f]{32}: "
                       r"not a directory") as excinfo:
        store.start_upload()
    assert str(tmp_path) not in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, NotADirectoryError)


def test_local_check_proves_the_blob_directory_too(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    blobs = tmp_path / "store" / "blobs" / "sha256"
    blobs.rmdir()
    blobs.write_bytes(b"a file where the blob directory belongs")
    with pytest.raises(StorageError, match="cannot write to blobs/sha256/") as excinfo:
        store.check()
    assert str(tmp_path) not in str(excinfo.value)
    assert keys(store, STAGING_PREFIX) == []  # the staging probe was still removed


def test_local_symlink_error_names_no_path(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    (tmp_path / "store" / "staging" / "escape").symlink_to(tmp_path)
    with pytest.raises(StorageError, match="outside the store") as excinfo:
        store.delete_key("staging/escape/file")
    assert str(tmp_path) not in str(excinfo.value)


def test_local_root_is_created(tmp_path: Path) -> None:
    LocalBlobStore(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "blobs" / "sha256").is_dir()
    assert (tmp_path / "a" / "b" / "staging").is_dir()


# --- S3 only --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "team/a"])
def test_s3_prefixes(s3_backend: S3Server, prefix: str) -> None:
    client, s3_bucket = s3_backend.client, s3_backend.create_bucket()
    store = S3BlobStore(client, s3_bucket, prefix)
    neighbour = S3BlobStore(client, s3_bucket, "team/b")
    digest = put(store, b"prefixed")
    put(neighbour, b"someone else's")

    raw = client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)["Contents"]
    expected = f"{prefix}/{blob_key(digest)}" if prefix else blob_key(digest)
    assert expected in [obj["Key"] for obj in raw]
    assert not any(obj["Key"].startswith("/") for obj in raw)
    assert keys(store, BLOB_PREFIX) == [blob_key(digest)]  # the neighbour is not listed
    assert store.read_bytes(digest) == b"prefixed"


def test_s3_upload_of_exact_part_multiple(s3_backend: S3Server) -> None:
    store = S3BlobStore(s3_backend.client, s3_backend.create_bucket(),
                        part_bytes=5 * 1024 * 1024)
    data = payload(10 * 1024 * 1024)  # two full parts, nothing left for a last one
    digest = put(store, data, write_bytes=5 * 1024 * 1024)
    assert (
        store.read_bytes(digest, 5 * 1024 * 1024 - 3, 5 * 1024 * 1024 + 3)
        == data[5 * 1024 * 1024 - 3 : 5 * 1024 * 1024 + 3]
    )
    assert store.size(digest) == len(data)


@pytest.mark.s3
def test_s3_part_size_below_minimum_is_refused(s3_server: S3Server) -> None:
    with pytest.raises(ValueError, match="part_bytes"):
        S3BlobStore(s3_server.client, "bucket", part_bytes=1024)


def test_s3_missing_bucket(s3_backend: S3Server) -> None:
    store = S3BlobStore(s3_backend.client, "no-such-bucket-here")
    with pytest.raises(StorageError, match="the bucket does not exist") as excinfo:
        store.check()
    assert "no-such-bucket-here" not in str(excinfo.value)


# moto only, from here: denying deletes alone takes a bucket policy, and gc's recovery
# from a failed abort takes a server that lists multipart uploads.


@pytest.mark.s3
def test_s3_check_probe_left_by_a_denied_delete_is_collected(s3_server: S3Server,
                                                            s3_bucket: str) -> None:
    store = S3BlobStore(s3_server.client, s3_bucket, "deltahub")
    refuse_writes(store, "s3:DeleteObject")
    with pytest.raises(StorageError, match="cannot delete from staging/"):
        store.check()  # the probe was written but cannot be removed ...
    assert [k.rpartition("/")[0] for k in keys(store, STAGING_PREFIX)] == ["staging"]
    store.client.delete_bucket_policy(Bucket=s3_bucket)
    later = datetime.now(UTC) + timedelta(hours=2)
    sweep_storage(store, set(), grace_seconds=HOUR, now=later)
    assert keys(store, STAGING_PREFIX) == []  # ... so it lies where gc collects it


@pytest.mark.s3
def test_s3_failed_abort_keeps_the_callers_error(s3_server: S3Server, s3_bucket: str) -> None:
    store = S3BlobStore(s3_server.client, s3_bucket)
    live_client = store.client

    def upload_while_s3_goes_down() -> None:
        with store.start_upload() as writer:
            writer.write(payload(PART_BYTES + 1))
            store.s3.client = _unreachable_client()  # the backend goes down before the abort
            raise ValueError("bad content")

    with pytest.raises(ValueError, match="bad content"):
        upload_while_s3_goes_down()
    store.s3.client = live_client
    assert len(pending_uploads(store)) == 1  # the abort could not reach S3 ...
    later = datetime.now(UTC) + timedelta(hours=2)
    assert sweep_storage(store, set(), grace_seconds=HOUR, now=later).uploads_aborted == 1
    assert_no_staging(store)  # ... and gc cleans up after it


def _unreachable_client() -> Any:
    # Nothing listens on a port just released: connections are refused at once.
    return make_s3_client(
        Settings(
            _env_file=None,
            S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
            S3_ACCESS_KEY_ID="testing",
            S3_SECRET_ACCESS_KEY="testing",
            S3_CONNECT_TIMEOUT_SECONDS=0.5,
            S3_READ_TIMEOUT_SECONDS=0.5,
            S3_MAX_ATTEMPTS=1,
        )
    )


@pytest.mark.s3
def test_s3_unreachable_endpoint_fails_fast() -> None:
    store = S3BlobStore(_unreachable_client(), "bucket")
    endpoint = store.client.meta.endpoint_url
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot connect to the endpoint; is "
                       "DELTAHUB_S3_ENDPOINT_URL right") as excinfo:
        store.check()
    assert endpoint.removeprefix("http://") not in str(excinfo.value)  # botocore's text has it
    with pytest.raises(StorageError, match="upload"):
        put(store, b"x" * 100)  # the abort on the way out fails too, and does not mask this
    with pytest.raises(StorageError) as excinfo:
        store.read(sha(b"x"))
    assert not isinstance(excinfo.value, BlobNotFound)  # down is not the same as missing
    assert time.monotonic() - started < 5


# --- factory --------------------------------------------------------------------------


def _settings(url: str, **values: Any) -> Settings:
    return Settings(_env_file=None, STORAGE_URL=url, **values)


def test_factory_file_url_absolute(tmp_path: Path) -> None:
    store = make_blob_store(_settings(f"file://{tmp_path}/blobs"))
    assert isinstance(store, LocalBlobStore)
    assert store.root == (tmp_path / "blobs").resolve()
    assert (tmp_path / "blobs" / "staging").is_dir()


def test_factory_file_url_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = make_blob_store(_settings("file:./data/blobs"))
    assert isinstance(store, LocalBlobStore)
    assert store.root == (tmp_path / "data" / "blobs").resolve()
    bare = make_blob_store(_settings("file:data/blobs"))
    assert isinstance(bare, LocalBlobStore)
    assert bare.root == store.root


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my.bucket/a/b/", "my.bucket", "a/b"),
        ("s3://b12/deltahub", "b12", "deltahub"),
    ],
)
def test_factory_s3_url(url: str, bucket: str, prefix: str) -> None:
    settings = _settings(
        url,
        S3_ENDPOINT_URL="http://127.0.0.1:9000",
        S3_READ_TIMEOUT_SECONDS=7.0,
        S3_CONNECT_TIMEOUT_SECONDS=3.0,
        S3_MAX_ATTEMPTS=4,
        S3_REGION="eu-west-1",
    )
    store = make_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == (bucket, prefix)
    config = store.client.meta.config
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert store.client.meta.region_name == "eu-west-1"
    assert (config.connect_timeout, config.read_timeout) == (3.0, 7.0)
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}
    assert config.s3 == {"addressing_style": "path"}


def test_factory_s3_without_endpoint_uses_aws_addressing() -> None:
    store = make_blob_store(_settings("s3://my-bucket/x", S3_REGION="us-east-1"))
    assert isinstance(store, S3BlobStore)
    assert not (store.client.meta.config.s3 or {}).get("addressing_style")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "scheme"),
        ("/var/blobs", "scheme"),
        ("http://host/blobs", "scheme"),
        ("file://data/blobs", "host 'data'"),
        ("file:", "no directory"),
        ("s3://", "bucket name"),
        ("s3://My_Bucket/x", "bucket name"),
        ("s3://ab", "bucket name"),
        ("s3://key:secret@bucket", "credentials"),
        ("s3://bucket/a/../b", "prefix"),
        ("s3://bucket/x?versioning=1", "query"),
    ],
)
def test_factory_refuses_bad_urls(url: str, why: str) -> None:
    with pytest.raises(ValueError, match="DELTAHUB_STORAGE_URL") as excinfo:
        make_blob_store(_settings(url))
    assert why in str(excinfo.value)


def test_check_key() -> None:
    assert check_key("blobs/sha256/ab") == "blobs/sha256/ab"
    for bad in ["", "/a", "a/", "a/../b", "./a", "a\\b"]:
        with pytest.raises(ValueError):
            check_key(bad)
