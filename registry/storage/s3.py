"""Blobs in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph) through boto3.

The client is built once by `make_s3_client` (explicit timeouts and retries) and
handed in, so tests and callers choose their own. Uploads stream as multipart uploads
to a staging key; commit is a server-side copy to the content address, so a reader
never sees a partial blob.
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
from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from s3transfer.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    RetriesExceededError,
    S3CopyFailedError,
    S3DownloadFailedError,
)

from registry.settings import Settings
from registry.storage.base import (
    PART_BYTES,
    READ_CHUNK_BYTES,
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
from registry.storage.s3_writer import S3StagingWriter, abort_multipart

logger = logging.getLogger(__name__)

# The boto3 S3 client. Typed as Any because boto3 ships no annotations; with
# boto3-stubs[s3] installed this becomes mypy_boto3_s3.S3Client.
S3Client = Any

S3_MIN_PART_BYTES = 5 * 1024 * 1024  # S3 refuses smaller parts, except the last
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_DENIED = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
# The managed transfers (copy, download_file) raise their own errors besides botocore's.
_TRANSFER_ERRORS = (
    BotoCoreError,
    Boto3Error,
    RetriesExceededError,
    S3CopyFailedError,
    S3DownloadFailedError,
)


def make_s3_client(settings: Settings) -> S3Client:
    """The one place a boto3 S3 client is configured."""
    import boto3  # type: ignore[import-untyped, unused-ignore]

    config = Config(
        region_name=settings.S3_REGION,
        connect_timeout=settings.S3_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.S3_READ_TIMEOUT_SECONDS,
        # total_max_attempts counts the first try too ("max_attempts" would count retries only).
        retries={"total_max_attempts": settings.S3_MAX_ATTEMPTS, "mode": "standard"},
        # MinIO, Ceph and moto serve buckets by path, not by virtual host name.
        s3={"addressing_style": "path"} if settings.S3_ENDPOINT_URL else None,
    )
    # A session per client: boto3's default session is global and not thread-safe.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID,
        aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY,
        config=config,
    )


_DENIED_HINT = "check DELTAHUB_S3_ACCESS_KEY_ID/SECRET_ACCESS_KEY and the bucket policy"
_ENDPOINT_HINT = "is DELTAHUB_S3_ENDPOINT_URL right and the server up?"
# What a transport failure was, in words of our own: botocore's messages quote the
# endpoint or proxy URL, which may carry credentials and is no business of a client.
# The first matching class wins, so subclasses come before their bases.
_TRANSPORT_FAILURES: tuple[tuple[type[Exception], str, str], ...] = (
    (ProxyConnectionError, "cannot connect through the proxy", "check the proxy settings"),
    (SSLError, "TLS verification of the endpoint failed", "check its certificate"),
    (ConnectTimeoutError, "connecting to the endpoint timed out", _ENDPOINT_HINT),
    (EndpointConnectionError, "cannot connect to the endpoint", _ENDPOINT_HINT),
    (ReadTimeoutError, "the endpoint did not answer in time",
     "retry later, or raise DELTAHUB_S3_READ_TIMEOUT_SECONDS"),
    (ConnectionClosedError, "the endpoint closed the connection", "retry later"),
    (NoCredentialsError, "no credentials were found",
     "set DELTAHUB_S3_ACCESS_KEY_ID and DELTAHUB_S3_SECRET_ACCESS_KEY"),
)


def _describe_failure(exc: Exception) -> str:
    """A transport or transfer failure as a client may see it: no URL, path or secret."""
    for kind, what, hint in _TRANSPORT_FAILURES:
        if isinstance(exc, kind):
            return f"{what}; {hint}"
    return f"{type(exc).__name__}; retry later"


class S3BlobStore(BlobStore):
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        part_bytes: int = PART_BYTES,
        transfer_config: TransferConfig | None = None,
    ) -> None:
        if part_bytes < S3_MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {S3_MIN_PART_BYTES} (S3's minimum)")
        prefix = prefix.strip("/")
        self.client = client
        self.bucket = bucket
        self.prefix = check_key(prefix) if prefix else ""
        self.part_bytes = part_bytes
        # Managed copy and download: multipart above the threshold, so blobs over
        # 5 GB (the limit of a single CopyObject) copy too.
        self.transfer_config = transfer_config or TransferConfig()

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
    def errors(self, op: str, full: str) -> Iterator[None]:
        """Turn boto3 failures into StorageError (BlobNotFound for a missing key).

        The message may reach a client (a 503 body, /readyz), so it names the store key
        and S3's error code only; the bucket, the prefix and botocore's own text (which
        quotes the endpoint URL) go to the log.
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
            message = error.get("Message") or "no message"
            hint = f"; {_DENIED_HINT}" if code in _DENIED else ""
            raise StorageError(f"s3: cannot {op} {key}: {code}: {message}{hint}") from exc
        except _TRANSFER_ERRORS as exc:
            self._log(op, full, exc)
            raise StorageError(f"s3: cannot {op} {key}: {_describe_failure(exc)}") from exc

    def _log(self, op: str, full: str, exc: Exception) -> None:
        logger.warning("s3: cannot %s s3://%s/%s: %s", op, self.bucket, full, exc)

    def start_upload(self) -> StagingWriter:
        return S3StagingWriter(self, new_staging_key())

    def commit(self, staged: StagedObject, sha256: str) -> None:
        if not staged.key.startswith(STAGING_PREFIX):
            raise ValueError(f"not a staging key: {staged.key!r}")
        src, dest = self.full_key(staged.key), self.full_key(blob_key(sha256))
        refreshed = False
        if self._exists(dest):
            # Copying the blob onto itself refreshes its age for gc without ever
            # replacing its bytes (see BlobStore.commit); REPLACE makes S3 allow it.
            try:
                self._copy(dest, dest, {"MetadataDirective": "REPLACE"})
                refreshed = True
            except BlobNotFound:
                pass  # collected in between: copy the staged bytes instead
        if not refreshed:
            try:
                self._copy(src, dest, {})
            except BlobNotFound:
                raise StorageError(
                    f"s3: commit: staged object {staged.key} is gone "
                    "(already committed, discarded or collected); upload again"
                ) from None
        with self.errors("commit", src):
            self.client.delete_object(Bucket=self.bucket, Key=src)

    def _copy(self, src: str, dest: str, extra_args: dict[str, str]) -> None:
        with self.errors("copy", src):
            self.client.copy(
                {"Bucket": self.bucket, "Key": src},
                self.bucket,
                dest,
                ExtraArgs=extra_args,
                Config=self.transfer_config,
            )

    def discard(self, staged: StagedObject) -> None:
        if not staged.key.startswith(STAGING_PREFIX):
            raise ValueError(f"not a staging key: {staged.key!r}")
        self.delete_key(staged.key)

    def _exists(self, full: str) -> bool:
        try:
            self._head(full)
        except BlobNotFound:
            return False
        return True

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
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return iter(())
                raise
        return _BodyChunks(response["Body"], self, full)

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
        # that S3 bills for until it is aborted.
        full = self._full_prefix(STAGING_PREFIX)
        aborted = 0
        with self.errors("list uploads", full):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < older_than:
                        abort_multipart(self, upload["Key"], upload["UploadId"])
                        aborted += 1
        return aborted

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


class _BodyChunks(Iterator[bytes]):
    """Chunks of a GetObject body; closes the connection when done, failed or dropped."""

    def __init__(self, body: Any, store: S3BlobStore, full: str) -> None:
        self._body: Any = body
        self._store = store
        self._full = full

    def __next__(self) -> bytes:
        if self._body is None:
            raise StopIteration
        try:
            with self._store.errors("read", self._full):
                chunk: bytes = self._body.read(READ_CHUNK_BYTES)
        except StorageError:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def __del__(self) -> None:
        self.close()
