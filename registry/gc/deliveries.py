"""Retention of the webhook delivery log: deliveries and their attempts go with their events.

`deltahub gc` prunes events older than DELTAHUB_EVENT_RETENTION_DAYS (registry/events/
service.py `prune_events`), then, here, the deliveries of events it pruned (and test
pings as old), with their attempts. Only settled deliveries go (delivered or failed): a
pending one drives its retries, and retention never prunes the event of a pending
delivery of an enabled webhook anyway. Deliveries of events still in the feed are kept,
so those events can be redelivered.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from registry.tables import WebhookDelivery, WebhookDeliveryAttempt

log = logging.getLogger("deltahub.gc")

# Deliveries removed per transaction (with all their attempts): keeps each one short,
# and its locks few, whatever the backlog.
BATCH = 500


def prune_deliveries(session: Session, pruned_through: int, created_before: datetime,
                     batch: int | None = None) -> int:
    """Delete settled deliveries of events up to `pruned_through`, and test pings made
    before `created_before`, with their attempts; how many deliveries.

    Commits after each batch: call it outside any larger transaction (as gc does)."""
    batch = BATCH if batch is None else batch
    if batch < 1:
        raise ValueError("batch must be >= 1")
    prunable = and_(WebhookDelivery.status != "pending", or_(
        WebhookDelivery.event_id <= pruned_through,
        and_(WebhookDelivery.event_id.is_(None), WebhookDelivery.created_at < created_before)))
    removed = 0
    while True:
        ids = list(session.scalars(select(WebhookDelivery.id).where(prunable)
                                   .order_by(WebhookDelivery.id).limit(batch)))
        if ids:
            # Attempts first: SQLite enforces the foreign key but the cascade needs the
            # pragma on every connection, so say it outright.
            session.execute(delete(WebhookDeliveryAttempt)
                            .where(WebhookDeliveryAttempt.delivery_id.in_(ids)))
            session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
        session.commit()
        removed += len(ids)
        if len(ids) < batch:
            break
    if removed:
        log.info("pruned %d webhook deliveries (and their attempts) of pruned events",
                 removed)
    return removed
