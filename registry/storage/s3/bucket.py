"""Where an S3 store's objects live (a client, a bucket, a key prefix), and how a failure
there reads.

The store's helpers (reads.py, writer.py) take this, not the store, so they sit below it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from boto3.exceptions import Boto3Error  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
)
from s3transfer.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    RetriesExceededError,
    S3DownloadFailedError,
)

from registry.storage.base import BlobNotFound, StorageError, check_key
from registry.storage.s3.client import DENIED_HINT, S3Client, describe_failure

# The name the S3 store has always logged under, whichever of its modules logs.
logger = logging.getLogger("registry.storage.s3")

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_DENIED = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
# The managed download (download_file) raises its own errors besides botocore's.
_TRANSFER_ERRORS = (BotoCoreError, Boto3Error, RetriesExceededError, S3DownloadFailedError)


@dataclass
class S3Bucket:
    """A client, the bucket it talks to, and the key prefix (checked, no outer slashes)
    under which a store keeps its keys. Mutable: a test swaps the client mid-upload."""

    client: S3Client
    name: str
    prefix: str = ""

    def full_key(self, key: str) -> str:
        """The bucket key for a store key."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def full_prefix(self, prefix: str) -> str:
        """The bucket prefix for a listing prefix: "" (everything) or ending in "/"."""
        if prefix.rstrip("/"):
            check_key(prefix.rstrip("/"))
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def store_key(self, full: str) -> str:
        """The store key (or listing prefix) for a bucket key under the prefix."""
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
        key = self.store_key(full)
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
        logger.warning("s3: cannot %s s3://%s/%s: %s", op, self.name, full, exc)
