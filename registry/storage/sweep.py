"""Sweep the store: remove staging leftovers and blobs no database row references.

The database is the source of truth for what is referenced. Anything younger than the
grace period is kept whatever its state, so an upload in flight (still staging, or
committed but not yet recorded) cannot lose its object to a concurrent collection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from registry.storage.base import BLOB_PREFIX, SHA256_HEX, STAGING_PREFIX, BlobStore

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    staging_deleted: int = 0
    staging_bytes_freed: int = 0
    blobs_deleted: int = 0
    blob_bytes_freed: int = 0
    uploads_aborted: int = 0  # unfinished multipart uploads (S3)
    kept_young: int = 0  # inside the grace period
    kept_referenced: int = 0
    skipped_unknown: int = 0  # keys under blobs/ that are not a sha256: left for a human

    @property
    def bytes_freed(self) -> int:
        return self.staging_bytes_freed + self.blob_bytes_freed


def sweep_storage(
    store: BlobStore,
    referenced: Callable[[str], bool] | Set[str],
    grace_seconds: float,
    now: datetime | None = None,
) -> SweepReport:
    """Delete staging objects and unreferenced blobs last modified before now - grace.

    `referenced` answers for a sha256 (hex) whether the database still needs it; pass a
    set read from the database *before* this call, so that a row recorded meanwhile is
    covered by the grace period instead.
    """
    if grace_seconds < 0:
        raise ValueError("grace_seconds must be >= 0")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cutoff = now - timedelta(seconds=grace_seconds)
    is_referenced = referenced.__contains__ if isinstance(referenced, Set) else referenced
    report = SweepReport()

    for obj in store.list_objects(STAGING_PREFIX):
        if obj.modified >= cutoff:
            report.kept_young += 1
            continue
        store.delete_key(obj.key)
        report.staging_deleted += 1
        report.staging_bytes_freed += obj.size

    report.uploads_aborted = store.abort_incomplete_uploads(cutoff)

    for obj in store.list_objects(BLOB_PREFIX):
        sha256 = obj.key[len(BLOB_PREFIX) :]
        if not SHA256_HEX.match(sha256):
            report.skipped_unknown += 1
            continue
        if is_referenced(sha256):
            report.kept_referenced += 1
        elif obj.modified >= cutoff:
            report.kept_young += 1
        else:
            store.delete(sha256)
            report.blobs_deleted += 1
            report.blob_bytes_freed += obj.size

    logger.info("storage sweep: %s", report)
    return report
