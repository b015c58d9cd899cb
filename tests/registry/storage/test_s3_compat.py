"""What S3-compatible servers do differently, and how S3BlobStore copes.

The commit is a server-side copy: one CopyObject up to S3's 5 GiB limit (all that
simpler servers such as s3rver offer), a multipart copy only above it. Tests lower the
limit on the store, so a multipart copy runs on a few MiB instead of 5 GiB.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from registry.storage.base import (
    BLOB_PREFIX,
    STAGING_PREFIX,
    StagedObject,
    StorageError,
    blob_key,
)
from registry.storage.s3 import S3_MIN_PART_BYTES, S3BlobStore
from registry.storage.s3.copies import (
    COPY_PART_BYTES,
    MAX_COPY_OBJECT_BYTES,
    S3_MAX_PARTS,
    copy_part_ranges,
    uses_multipart_copy,
)
from registry.storage.sweep import sweep_storage
from tests.s3server import S3Server

MIB = 1024 * 1024
GIB = 1024 * MIB
HOUR = 3600


def payload(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def stage(store: S3BlobStore, data: bytes) -> tuple[str, StagedObject]:
    """Upload `data` to staging; return its sha256 and the staged object."""
    with store.start_upload() as writer:
        writer.write(data)
        staged = writer.finish()
    return hashlib.sha256(data).hexdigest(), staged


def small_copy_limit(server: S3Server) -> S3BlobStore:
    """A store that copies anything over 5 MiB in 5 MiB parts, as it would over 5 GiB."""
    return S3BlobStore(server.client, server.create_bucket(), "deltahub",
                       max_copy_object_bytes=S3_MIN_PART_BYTES, copy_part_bytes=S3_MIN_PART_BYTES)


# --- the copy decision, by size -------------------------------------------------------


def test_one_copy_object_up_to_5_gib_and_multipart_above() -> None:
    assert not uses_multipart_copy(0)
    assert not uses_multipart_copy(20 * MIB)  # past boto3's 8 MiB multipart threshold
    assert not uses_multipart_copy(5 * GIB)
    assert uses_multipart_copy(5 * GIB + 1)
    assert uses_multipart_copy(50 * 10**9)


@pytest.mark.parametrize("size", [5 * GIB + 1, 50 * 10**9, S3_MAX_PARTS * COPY_PART_BYTES + 1,
                                  5 * 1024 * GIB])
def test_copy_parts_cover_the_object_within_s3_limits(size: int) -> None:
    ranges = [tuple(int(b) for b in r.removeprefix("bytes=").split("-"))
              for r in copy_part_ranges(size)]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == size - 1
    assert all(prev[1] + 1 == nxt[0] for prev, nxt in itertools.pairwise(ranges))
    assert len(ranges) <= S3_MAX_PARTS
    sizes = [last - first + 1 for first, last in ranges]
    assert all(S3_MIN_PART_BYTES <= s <= 5 * GIB for s in sizes[:-1])
    assert 0 < sizes[-1] <= 5 * GIB


def test_copy_parts_of_a_blob_just_over_the_limit() -> None:
    assert copy_part_ranges(5 * GIB + 1) == [
        f"bytes={i * COPY_PART_BYTES}-{(i + 1) * COPY_PART_BYTES - 1}" for i in range(10)
    ] + [f"bytes={5 * GIB}-{5 * GIB}"]


@pytest.mark.s3
def test_copy_settings_outside_s3_limits_are_refused(s3_server: S3Server) -> None:
    with pytest.raises(ValueError, match="copy_part_bytes"):
        S3BlobStore(s3_server.client, "bucket", copy_part_bytes=S3_MIN_PART_BYTES - 1)
    with pytest.raises(ValueError, match="max_copy_object_bytes"):
        S3BlobStore(s3_server.client, "bucket", max_copy_object_bytes=MAX_COPY_OBJECT_BYTES + 1)


# --- on the servers -------------------------------------------------------------------


def test_commit_and_recommit_of_a_blob_over_8_mib(s3_backend: S3Server) -> None:
    # boto3's managed copy turned multipart from 8 MiB, which s3rver refuses.
    store = S3BlobStore(s3_backend.client, s3_backend.create_bucket(), "deltahub")
    data = payload(12 * MIB)
    digest, staged = stage(store, data)
    store.commit(staged, digest)
    (first,) = store.list_objects(BLOB_PREFIX)

    time.sleep(1.1)  # S3 times have one-second resolution
    _, again = stage(store, data)
    store.commit(again, digest)  # the copy onto itself that refreshes the blob's age

    (second,) = store.list_objects(BLOB_PREFIX)
    assert second.modified > first.modified
    assert store.read_bytes(digest) == data
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert s3_backend.unfinished_uploads(store.bucket) == []


@pytest.mark.s3
def test_commit_over_the_copy_object_limit_copies_in_parts(s3_server: S3Server) -> None:
    store = small_copy_limit(s3_server)
    data = payload(12 * MIB)  # parts of 5, 5 and 2 MiB
    digest, staged = stage(store, data)
    store.commit(staged, digest)

    head = store.client.head_object(Bucket=store.bucket, Key=store.full_key(blob_key(digest)))
    assert head["ETag"].endswith('-3"')  # S3 marks an object made of 3 parts so
    assert store.read_bytes(digest) == data
    (first,) = store.list_objects(BLOB_PREFIX)

    time.sleep(1.1)
    _, again = stage(store, data)
    store.commit(again, digest)  # the refresh is a multipart copy onto itself

    (second,) = store.list_objects(BLOB_PREFIX)
    assert second.modified > first.modified
    assert store.read_bytes(digest) == data
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert s3_server.unfinished_uploads(store.bucket) == []


@pytest.mark.s3
def test_commit_over_the_limit_without_multipart_copy_fails_clearly(
        s3rver_server: S3Server, caplog: pytest.LogCaptureFixture) -> None:
    store = small_copy_limit(s3rver_server)
    digest, staged = stage(store, payload(6 * MIB))
    with pytest.raises(StorageError, match=r"does not implement UploadPartCopy "
                       r"\(NotImplemented\), which objects over 5 GiB need; use a server"):
        store.commit(staged, digest)
    assert not store.exists(digest)
    assert "cannot abort the failed copy" in caplog.text  # s3rver has no abort either
    store.discard(staged)  # the staged object is still the caller's to drop
    assert list(store.list_objects(STAGING_PREFIX)) == []


@pytest.mark.s3
def test_gc_aborts_a_multipart_copy_left_under_blobs(s3_server: S3Server) -> None:
    store = S3BlobStore(s3_server.client, s3_server.create_bucket(), "deltahub")
    # What a worker that died in a multipart copy leaves behind.
    store.client.create_multipart_upload(Bucket=store.bucket,
                                         Key=store.full_key(blob_key("ab" * 32)))
    later = datetime.now(UTC) + timedelta(hours=2)
    assert sweep_storage(store, set(), grace_seconds=HOUR, now=later).uploads_aborted == 1
    assert s3_server.unfinished_uploads(store.bucket) == []

