"""Blobs in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph) through boto3.

The client is built once by `make_s3_client` (explicit timeouts and retries) and
handed in, so tests and callers choose their own. Uploads stream as multipart uploads
to a staging key; commit is a server-side copy to the content address, so a reader
never sees a partial blob.

Only the core of S3 is assumed, because S3-compatible servers differ beyond it (the
suite runs on moto and on s3rver, which has no multipart copy, no listing or aborting
of multipart uploads): a commit is one CopyObject up to S3's 5 GiB limit, and a
multipart copy only above it; a server without upload listing leaves gc unable to
abort crashed uploads, which it says in the log instead of failing the sweep.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from registry.storage.base import (
    BLOB_PREFIX,
    PART_BYTES,
    STAGING_PREFIX,
    BlobNotFound,
    BlobStore,
    StagedObject,
    StagingWriter,
    StorageError,
    StoredObject,
    blob_key,
    check_key,
    check_range,
    new_staging_key,
)
from registry.storage.s3.bucket import S3Bucket
from registry.storage.s3.client import S3Client
from registry.storage.s3.copies import (
    COPY_PART_BYTES,
    MAX_COPY_OBJECT_BYTES,
    copy_part_ranges,
    uses_multipart_copy,
)
from registry.storage.s3.reads import BodyChunks, served_range
from registry.storage.s3.writer import (
    UNSUPPORTED_CODES,
    S3StagingWriter,
    abort_multipart,
    error_code,
    part_checksums,
)

# The name it had as one module, shared with bucket.py.
logger = logging.getLogger("registry.storage.s3")

S3_MIN_PART_BYTES = 5 * 1024 * 1024  # S3 refuses smaller parts, except the last


class S3BlobStore(BlobStore):
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        part_bytes: int = PART_BYTES,
        transfer_config: TransferConfig | None = None,
        max_copy_object_bytes: int = MAX_COPY_OBJECT_BYTES,
        copy_part_bytes: int = COPY_PART_BYTES,
    ) -> None:
        for name, value in (("part_bytes", part_bytes), ("copy_part_bytes", copy_part_bytes)):
            if value < S3_MIN_PART_BYTES:
                raise ValueError(f"{name} must be at least {S3_MIN_PART_BYTES} (S3's minimum)")
        if not 0 < max_copy_object_bytes <= MAX_COPY_OBJECT_BYTES:
            raise ValueError(f"max_copy_object_bytes must be in (0, {MAX_COPY_OBJECT_BYTES}]")
        prefix = prefix.strip("/")
        self.s3 = S3Bucket(client, bucket, check_key(prefix) if prefix else "")
        self.part_bytes = part_bytes
        # Managed download: parallel ranged GETs above the threshold.
        self.transfer_config = transfer_config or TransferConfig()
        # Below S3's limits only in tests, to run a multipart copy without 5 GiB.
        self.max_copy_object_bytes = max_copy_object_bytes
        self.copy_part_bytes = copy_part_bytes

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix})"

    @property
    def client(self) -> S3Client:
        return self.s3.client

    @property
    def bucket(self) -> str:
        return self.s3.name

    @property
    def prefix(self) -> str:
        return self.s3.prefix

    def full_key(self, key: str) -> str:
        """The bucket key for a store key."""
        return self.s3.full_key(key)

    def start_upload(self) -> StagingWriter:
        return S3StagingWriter(self.s3, new_staging_key(), self.part_bytes)

    def commit(self, staged: StagedObject, sha256: str) -> None:
        if not staged.key.startswith(STAGING_PREFIX):
            raise ValueError(f"not a staging key: {staged.key!r}")
        src, dest = self.full_key(staged.key), self.full_key(blob_key(sha256))
        existing = self._head_or_none(dest)
        if existing is None or not self._refresh(existing, dest, src):
            try:
                self._copy(src, dest, staged.size)
            except BlobNotFound:
                raise StorageError(
                    f"s3: commit: staged object {staged.key} is gone "
                    "(already committed, discarded or collected); upload again"
                ) from None
        with self.s3.errors("commit", src):
            self.client.delete_object(Bucket=self.bucket, Key=src)

    def _refresh(self, existing: dict[str, Any], dest: str, src: str) -> bool:
        """Give an existing blob a new modified time without replacing its bytes (see
        BlobStore.commit); False if it was collected in between."""
        size, before = int(existing["ContentLength"]), existing["LastModified"]
        try:
            # A copy onto itself; REPLACE is what makes S3 allow it.
            after = self._copy(dest, dest, size, replace_metadata=True)
            if after is None or after > before:
                return True
            # The time did not move: s3rver keeps it on a copy onto itself (and S3 has
            # one-second times, so a second commit within the second lands here too).
            # A copy between two keys writes a new object on any server, so copy the
            # blob's own bytes over the staged object and back: the staged bytes never
            # reach the blob.
            self._copy(dest, src, size)
            self._copy(src, dest, size)
        except BlobNotFound:
            return False  # collected in between: the caller copies the staged bytes
        return True

    def _copy(self, src: str, dest: str, size: int, *,
              replace_metadata: bool = False) -> datetime | None:
        """Copy `src` (`size` bytes) to `dest` inside the server; return the new object's
        modified time where the server reports it."""
        if uses_multipart_copy(size, self.max_copy_object_bytes):
            self._multipart_copy(src, dest, size)
            return None
        extra = {"MetadataDirective": "REPLACE"} if replace_metadata else {}
        with self.s3.errors("copy", src):
            response = self.client.copy_object(
                Bucket=self.bucket, Key=dest, CopySource={"Bucket": self.bucket, "Key": src},
                **extra,
            )
        modified: datetime | None = response.get("CopyObjectResult", {}).get("LastModified")
        return modified

    def _multipart_copy(self, src: str, dest: str, size: int) -> None:
        source = {"Bucket": self.bucket, "Key": src}
        with self.s3.errors("copy", src):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=dest)[
                "UploadId"
            ]
        try:
            parts = []
            for number, byte_range in enumerate(
                copy_part_ranges(size, self.copy_part_bytes), start=1
            ):
                with self.s3.errors("copy", src, needed_for="objects over 5 GiB need"):
                    response = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=dest, UploadId=upload_id, PartNumber=number,
                        CopySource=source, CopySourceRange=byte_range,
                    )
                result = response["CopyPartResult"]
                parts.append({"PartNumber": number, "ETag": result["ETag"],
                              **part_checksums(result)})
            with self.s3.errors("copy", src):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=dest, UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            self._abort_copy(dest, upload_id)
            raise

    def _abort_copy(self, dest: str, upload_id: str) -> None:
        # Best effort: the copy's own error is the one to report. An upload left
        # behind lies under blobs/, where gc finds and aborts it.
        try:
            if not abort_multipart(self.s3, dest, upload_id):
                logger.warning("s3: the server cannot abort the failed copy to s3://%s/%s "
                               "(upload %s); it keeps the parts", self.bucket, dest, upload_id)
        except StorageError:
            logger.warning("s3: could not abort the failed copy to s3://%s/%s; gc will",
                           self.bucket, dest, exc_info=True)

    def discard(self, staged: StagedObject) -> None:
        if not staged.key.startswith(STAGING_PREFIX):
            raise ValueError(f"not a staging key: {staged.key!r}")
        self.delete_key(staged.key)

    def _exists(self, full: str) -> bool:
        return self._head_or_none(full) is not None

    def _head_or_none(self, full: str) -> dict[str, Any] | None:
        try:
            return self._head(full)
        except BlobNotFound:
            return None

    def _head(self, full: str) -> dict[str, Any]:
        with self.s3.errors("head", full):
            response: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=full)
            return response

    def exists(self, sha256: str) -> bool:
        return self._exists(self.full_key(blob_key(sha256)))

    def size(self, sha256: str) -> int:
        return int(self._head(self.full_key(blob_key(sha256)))["ContentLength"])

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_range(start, end)
        full = self.full_key(blob_key(sha256))
        if end == start:
            self._head(full)  # nothing to read, but a missing blob is still BlobNotFound
            return iter(())
        args = {"Bucket": self.bucket, "Key": full}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with self.s3.errors("read", full):
            try:
                response = self.client.get_object(**args)
            except ClientError as exc:
                # The blob exists but the range starts at or past its end (any range
                # of an empty object does): the contract says that is no bytes.
                if error_code(exc) == "InvalidRange":
                    return iter(())
                raise
        body = response["Body"]
        first, size = served_range(response)
        if size == 0:
            body.close()  # any range of an empty object is no bytes; s3rver announces one
            return iter(())
        if first != start:
            body.close()
            logger.warning("s3: read of s3://%s/%s from byte %d: the server sent from byte %d",
                           self.bucket, full, start, first)
            raise StorageError(f"s3: cannot read {self.s3.store_key(full)}: the S3 server "
                               "ignored the byte range; use a server that supports ranged GETs")
        # Never more than asked: s3rver sends the whole object for `bytes=0-0`.
        return BodyChunks(body, self.s3, full, limit=None if end is None else end - start)

    def download(self, sha256: str, dest: Path) -> None:
        full = self.full_key(blob_key(sha256))
        # download_file writes a temporary file beside dest and renames it when complete.
        with self.s3.errors("download", full):
            self.client.download_file(self.bucket, full, str(dest), Config=self.transfer_config)

    def delete(self, sha256: str) -> None:
        self.delete_key(blob_key(sha256))

    def delete_key(self, key: str) -> None:
        full = self.full_key(key)
        with self.s3.errors("delete", full):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        full = self.s3.full_prefix(prefix)
        with self.s3.errors("list", full):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield StoredObject(
                        key=self.s3.store_key(obj["Key"]),
                        size=int(obj["Size"]),
                        modified=obj["LastModified"].astimezone(UTC),
                    )

    def abort_incomplete_uploads(self, older_than: datetime) -> int:
        # A crashed writer leaves a multipart upload that list_objects cannot see but
        # that S3 bills for until it is aborted; a failed multipart copy leaves one
        # under blobs/.
        aborted = 0
        for full, upload_id in self._uploads_started_before(older_than):
            if abort_multipart(self.s3, full, upload_id):
                aborted += 1
            else:
                logger.warning("s3: the server cannot abort multipart uploads; "
                               "s3://%s/%s (upload %s) stays", self.bucket, full, upload_id)
        return aborted

    def _uploads_started_before(self, older_than: datetime) -> list[tuple[str, str]]:
        """(key, upload id) of the multipart uploads under staging/ and blobs/ started
        before `older_than`; none where the server cannot list them."""
        found = []
        for prefix in (STAGING_PREFIX, BLOB_PREFIX):
            full = self.s3.full_prefix(prefix)
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=full
            )
            with self.s3.errors("list uploads", full):
                try:
                    for page in pages:
                        found += [(upload["Key"], upload["UploadId"])
                                  for upload in page.get("Uploads", [])
                                  if upload["Initiated"] < older_than]
                except ClientError as exc:
                    if error_code(exc) not in UNSUPPORTED_CODES:
                        raise
                    # Not a failure of the sweep: everything else is still collected.
                    logger.warning(
                        "s3: the server cannot list multipart uploads (%s), so gc cannot "
                        "find and abort unfinished ones in s3://%s; where it supports one, "
                        "give the bucket a lifecycle rule (AbortIncompleteMultipartUpload)",
                        error_code(exc), self.bucket)
                    return []
        return found

    def check(self) -> None:
        # Reachable is not enough for /readyz: a read-only key or a bucket policy that
        # denies writes would fail every upload, so write and remove a probe (which
        # also proves the bucket exists). It lives under staging/, so garbage
        # collection removes it if the delete fails. The client's connect and read
        # timeouts and its attempt limit bound how long this takes.
        probe = self.full_key(f"{STAGING_PREFIX}check-{uuid.uuid4().hex}")
        staging = self.s3.full_prefix(STAGING_PREFIX)
        with self.s3.errors("write to", staging):
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
        with self.s3.errors("delete from", staging):
            self.client.delete_object(Bucket=self.bucket, Key=probe)
