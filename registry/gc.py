"""Registry-level garbage collection: the database says which blobs are still needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, exists, select, union
from sqlalchemy.orm import Session, sessionmaker

from registry.db import unit_of_work
from registry.storage.base import BlobStore
from registry.storage.gc import GcReport, collect_garbage
from registry.tables import AdapterFile, Blob, ModelFile


def referenced_blobs(session: Session) -> set[str]:
    rows = session.execute(union(select(ModelFile.sha256), select(AdapterFile.sha256)))
    return {row[0] for row in rows}


def collect(factory: sessionmaker[Session], store: BlobStore, grace_seconds: int,
            now: datetime | None = None) -> tuple[GcReport, int]:
    """Collect storage garbage, then drop blob rows nothing references; (report, rows)."""
    now = now or datetime.now(UTC)
    with unit_of_work(factory) as session:
        # Read before collecting: a row recorded meanwhile points at a young object,
        # which the grace period protects.
        referenced = referenced_blobs(session)
    report = collect_garbage(store, referenced, grace_seconds, now)
    cutoff = now - timedelta(seconds=grace_seconds)
    with unit_of_work(factory) as session:
        result = session.execute(delete(Blob).where(
            Blob.created_at < cutoff,
            ~exists().where(ModelFile.sha256 == Blob.sha256),
            ~exists().where(AdapterFile.sha256 == Blob.sha256),
        ))
        rows = int(getattr(result, "rowcount", 0) or 0)
    return report, rows
