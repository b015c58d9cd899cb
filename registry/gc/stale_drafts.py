"""Abandoned drafts: pushes never finalized, which nothing else will ever clean up.

A draft is abandoned when no push has touched it (created, resumed, a file upload started
or recorded) for the draft time-to-live. `deltahub gc` removes such drafts, then the blobs
only they referenced, under the same rule as the storage sweep: an object younger than
the cut-off is kept, because a concurrent upload of the same bytes refreshes its age when
it commits, before it records its row.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from registry.adapters.repository import AdapterRepository
from registry.blobs.repository import BlobRepository
from registry.datasets.repository import DatasetRepository
from registry.infra.engines import unit_of_work
from registry.models.repository import ModelRepository
from registry.storage.base import BLOB_PREFIX, BlobStore

log = logging.getLogger("deltahub.gc")

# Drafts removed per transaction: keeps each one short whatever the backlog.
_BATCH = 100


def remove_stale_drafts(factory: sessionmaker[Session], store: BlobStore,
                        older_than_seconds: float, *, now: datetime | None = None) -> int:
    """Remove pending model, adapter and data set drafts untouched for `older_than_seconds`, and
    the blobs only they referenced (rows and objects) that are as old; how many drafts.

    Safe beside live pushes: a draft touched meanwhile is not stale any more, and one a
    push holds locked is skipped. A push that comes back to a removed draft gets a 404
    for it and starts again with a new draft.
    """
    if older_than_seconds <= 0:
        raise ValueError("older_than_seconds must be > 0")
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=older_than_seconds)
    removed, freed = 0, set[str]()
    while True:
        with unit_of_work(factory) as session:
            count, sha256s = _remove_batch(session, cutoff)
        removed += count
        freed |= sha256s
        if count < _BATCH:
            break
    blobs = _remove_blobs(factory, store, freed, cutoff)
    log.info("removed %d stale draft(s) and %d blob(s) only they referenced", removed, blobs)
    return removed


def _remove_batch(session: Session, cutoff: datetime) -> tuple[int, set[str]]:
    """One transaction's worth of stale drafts: (how many removed, their files' sha256)."""
    sha256s: set[str] = set()
    adapters = AdapterRepository(session)
    stale_adapters = adapters.stale_drafts(cutoff, _BATCH)
    for adapter in stale_adapters:
        sha256s.update(f.sha256 for f in adapter.files)
        adapters.delete(adapter)
    datasets = DatasetRepository(session)
    stale_datasets = datasets.stale_drafts(cutoff, _BATCH - len(stale_adapters))
    for dataset in stale_datasets:
        sha256s.update(f.sha256 for f in dataset.files)
        datasets.delete(dataset)
    models = ModelRepository(session)
    removed = len(stale_adapters) + len(stale_datasets)
    for model in models.stale_drafts(cutoff, _BATCH - removed):
        if any(models.dependents(model.id)):
            continue  # a fine-tune draft still in use is built on this base draft
        sha256s.update(f.sha256 for f in model.files)
        models.delete(model)
        removed += 1
    return removed, sha256s


def _remove_blobs(factory: sessionmaker[Session], store: BlobStore, candidates: set[str],
                  cutoff: datetime) -> int:
    if not candidates:
        return 0
    with unit_of_work(factory) as session:
        unreferenced = BlobRepository(session).unreferenced_among(candidates)
    deleted = set()
    for obj in store.list_objects(BLOB_PREFIX):
        sha256 = obj.key[len(BLOB_PREFIX):]
        if sha256 in unreferenced and obj.modified < cutoff:
            store.delete(sha256)
            deleted.add(sha256)
    with unit_of_work(factory) as session:
        BlobRepository(session).delete_unreferenced_rows(deleted)
    return len(deleted)
