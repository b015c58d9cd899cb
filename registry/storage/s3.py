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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from boto3.exceptions import Boto3Error  # type: ignore[import-untyped, unused-ignore]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
)
from s3transfer.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    RetriesExceededError,
    S3DownloadFailedError,
)

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
from registry.storage.s3_client import DENIED_HINT, S3Client, describe_failure
from registry.storage.s3_copy import (
    COPY_PART_BYTES,
    MAX_COPY_OBJECT_BYTES,
    copy_part_ranges,
    uses_multipart_copy,
)
from registry.storage.s3_reads import BodyChunks, served_range
from registry.storage.s3_writer import (
    UNSUPPORTED_CODES,
    S3StagingWriter,
    abort_multipart,
    error_code,
    part_checksums,
)

logger = logging.getLogger(__name__)

# The boto3 S3 client. Typed as Any because boto3 ships no annotations; with
# boto3-stubs[s3] installed this becomes mypy_boto3_s3.S3Client.

S3_MIN_PART_BYTES = 5 * 1024 * 1024  # S3 refuses smaller parts, except the last
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_DENIED = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
# The managed download (download_file) raises its own errors besides botocore's.
_TRANSFER_ERRORS = (BotoCoreError, Boto3Error, RetriesExceededError, S3DownloadFailedError)


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
        self.client = client
        self.bucket = bucket
        self.prefix = check_key(prefix) if prefix else ""
        self.part_bytes = part_bytes
        # Managed download: parallel ranged GETs above the threshold.
        self.transfer_config = transfer_config or TransferConfig()
        # Below S3's limits only in tests, to run a multipart copy without 5 GiB.
        self.max_copy_object_bytes = max_copy_object_bytes
        self.copy_part_bytes = copy_part_bytes

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix})"

    def full_key(self, key: str) -> str:
        """The bucket key for a store key."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _full_prefix(self, prefix: str) -> str:
        # A listing prefix may be "" (everything) or end in "/" (a folder).
        if prefix.rstrip("/"):
            check_key(prefix.rstrip("/"))
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def _store_key(self, full: str) -> str:
        """The store key (or listing prefix) for a bucket key under this store's prefix."""
        if not self.prefix:
            return full
        return full.removeprefix(self.prefix).removeprefix("/")

    @contextmanager
    def errors(self, op: str, full: str, needed_for: str = "") -> Iterator[None]:
        """Turn boto3 failures into StorageError (BlobNotFound for a missing key).

        The message may reach a client (a 503 body, /readyz), so it names the store key
        and S3's error code only; the bucket, the prefix and botocore's own text (which
        quotes the endpoint URL) go to the log. `needed_for` says what an operation is
        for, should the server not implement it.
        """
        key = self._store_key(full)
        try:
            yield
        except ClientError as exc:
            error: Mapping[str, str] = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code in _NOT_FOUND:
                raise BlobNotFound(f"s3: {op} {key}: not found") from exc
            self._log(op, full, exc)
            if code == "NoSuchBucket":
                raise StorageError(
                    f"s3: cannot {op} {key}: the bucket does not exist; "
                    "create it or fix DELTAHUB_STORAGE_URL"
                ) from exc
            if code == "NotImplemented":
                why = f", which {needed_for}" if needed_for else ""
                raise StorageError(
                    f"s3: cannot {op} {key}: the S3 server does not implement "
                    f"{exc.operation_name} ({code}){why}; use a server that does"
                ) from exc
            message = error.get("Message") or "no message"
            hint = f"; {DENIED_HINT}" if code in _DENIED else ""
            raise StorageError(f"s3: cannot {op} {key}: {code}: {message}{hint}") from exc
        except _TRANSFER_ERRORS as exc:
            self._log(op, full, exc)
            raise StorageError(f"s3: cannot {op} {key}: {describe_failure(exc)}") from exc

    def _log(self, op: str, full: str, exc: Exception) -> None:
        logger.warning("s3: cannot %s s3://%s/%s: %s", op, self.bucket, full, exc)

    def start_upload(self) -> StagingWriter:
        return S3StagingWriter(self, new_staging_key())

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
        with self.errors("commit", src):
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
        with self.errors("copy", src):
            response = self.client.copy_object(
                Bucket=self.bucket, Key=dest, CopySource={"Bucket": self.bucket, "Key": src},
                **extra,
            )
        modified: datetime | None = response.get("CopyObjectResult", {}).get("LastModified")
        return modified

    def _multipart_copy(self, src: str, dest: str, size: int) -> None:
        source = {"Bucket": self.bucket, "Key": src}
        with self.errors("copy", src):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=dest)[
                "UploadId"
            ]
        try:
            parts = []
            for number, byte_range in enumerate(
                copy_part_ranges(size, self.copy_part_bytes), start=1
            ):
                with self.errors("copy", src, needed_for="objects over 5 GiB need"):
                    response = self.client.upload_part_copy(
                        Bucket=self.bucket, Key=dest, UploadId=upload_id, PartNumber=number,
                        CopySource=source, CopySourceRange=byte_range,
                    )
                result = response["CopyPartResult"]
                parts.append({"PartNumber": number, "ETag": result["ETag"],
                              **part_checksums(result)})
            with self.errors("copy", src):
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
            if not abort_multipart(self, dest, upload_id):
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
        with self.errors("head", full):
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
        with self.errors("read", full):
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
            raise StorageError(f"s3: cannot read {self._store_key(full)}: the S3 server "
                               "ignored the byte range; use a server that supports ranged GETs")
        # Never more than asked: s3rver sends the whole object for `bytes=0-0`.
        return BodyChunks(body, self, full, limit=None if end is None else end - start)

    def download(self, sha256: str, dest: Path) -> None:
        full = self.full_key(blob_key(sha256))
        # download_file writes a temporary file beside dest and renames it when complete.
        with self.errors("download", full):
            self.client.download_file(self.bucket, full, str(dest), Config=self.transfer_config)

    def delete(self, sha256: str) -> None:
        self.delete_key(blob_key(sha256))

    def delete_key(self, key: str) -> None:
        full = self.full_key(key)
        with self.errors("delete", full):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        full = self._full_prefix(prefix)
        with self.errors("list", full):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield StoredObject(
                        key=self._store_key(obj["Key"]),
                        size=int(obj["Size"]),
                        modified=obj["LastModified"].astimezone(UTC),
                    )

    def abort_incomplete_uploads(self, older_than: datetime) -> int:
        # A crashed writer leaves a multipart upload that list_objects cannot see but
        # that S3 bills for until it is aborted; a failed multipart copy leaves one
        # under blobs/.
        aborted = 0
        for full, upload_id in self._uploads_started_before(older_than):
            if abort_multipart(self, full, upload_id):
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
            full = self._full_prefix(prefix)
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=full
            )
            with self.errors("list uploads", full):
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
        staging = self._full_prefix(STAGING_PREFIX)
        with self.errors("write to", staging):
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
        with self.errors("delete from", staging):
            self.client.delete_object(Bucket=self.bucket, Key=probe)
