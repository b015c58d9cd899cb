"""Garbage collection across the database and the store: the database says what is needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from registry.blobs.repository import BlobRepository
from registry.infra.engines import unit_of_work
from registry.storage.base import BlobStore
from registry.storage.sweep import SweepReport, sweep_storage


def collect_garbage(factory: sessionmaker[Session], store: BlobStore, grace_seconds: int,
                    now: datetime | None = None) -> tuple[SweepReport, int]:
    """Sweep the store, then drop blob rows nothing references; (report, rows dropped)."""
    now = now or datetime.now(UTC)
    with unit_of_work(factory) as session:
        # Read before sweeping: a row recorded meanwhile points at a young object,
        # which the grace period protects.
        referenced = BlobRepository(session).referenced()
    report = sweep_storage(store, referenced, grace_seconds, now)
    with unit_of_work(factory) as session:
        rows = BlobRepository(session).delete_unreferenced(
            now - timedelta(seconds=grace_seconds))
    return report, rows
