"""The dispatcher's side of the database: claim a webhook, fan events out, record attempts.

A dispatcher leases a whole webhook (its row: `SKIP LOCKED` on PostgreSQL, the single
writer of SQLite's `BEGIN IMMEDIATE`), so one sender at a time serves it and its
deliveries go out in event order, while other dispatchers serve other webhooks. Holding
the lease, it first fans the events after the webhook's high-water mark out into
delivery rows (ids commit in order: registry/events/outbox.py), then sends the due
deliveries oldest first. Every write after the claim is fenced by the lease owner; a
dispatcher that lost its lease records nothing. One that dies between a send and its
record leaves the delivery pending: when the lease expires, another sends it again with
the same `webhook-id` (at-least-once).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Exists, exists, func, or_, select
from sqlalchemy.orm import Session

from registry.events.repository import EventRepository
from registry.settings import Settings
from registry.tables import Event, Webhook, WebhookDelivery, WebhookDeliveryAttempt, utcnow
from registry.webhooks.sender import Outcome
from registry.webhooks.service import new_delivery
from registry.webhooks.subscription import matches

_CANDIDATES = 8
_FAN_OUT_BATCH = 1000
_MAX_RETRY_AFTER_S = 3600.0


class LeaseLost(Exception):
    """The webhook is no longer this dispatcher's: its lease expired and moved on."""


@dataclass(frozen=True)
class ClaimedWebhook:
    id: int
    owner: str
    url: str
    secrets: list[str]  # the current one first; the previous one during its grace


@dataclass(frozen=True)
class Due:
    id: int
    message_id: str
    event_id: int | None
    payload: dict[str, object]


def _due(now: datetime) -> Exists:
    return exists().where(WebhookDelivery.webhook_id == Webhook.id,
                          WebhookDelivery.status == "pending",
                          WebhookDelivery.next_attempt_at <= now)


def has_work(session: Session) -> bool:
    """A cheap read: whether some free, enabled webhook has events or deliveries due."""
    now, last = utcnow(), EventRepository(session).last_id()
    query = exists().where(Webhook.enabled.is_(True), _free(now),
                           or_(Webhook.last_event_id < last, _due(now)))
    return bool(session.scalar(query.select()))


def _free(now: datetime) -> ColumnElement[bool]:
    return or_(Webhook.lease_owner.is_(None), Webhook.lease_expires_at < now)


def claim(session: Session, owner: str, settings: Settings) -> ClaimedWebhook | None:
    """Fan out the events of free webhooks, and lease one with deliveries due."""
    now, last = utcnow(), EventRepository(session).last_id()
    candidates = session.scalars(
        select(Webhook).where(Webhook.enabled.is_(True), _free(now),
                              or_(Webhook.last_event_id < last, _due(now)))
        .order_by(Webhook.lease_expires_at.is_(None).desc(), Webhook.lease_expires_at,
                  Webhook.id)
        .limit(_CANDIDATES).with_for_update(skip_locked=True))
    for webhook in list(candidates):
        if webhook.last_event_id < last:
            fan_out(session, webhook)
        now = utcnow()  # after the fan-out: its rows are due at once
        if session.scalar(select(exists().where(
                WebhookDelivery.webhook_id == webhook.id, WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now))):
            webhook.lease_owner = owner
            webhook.lease_expires_at = now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
            session.flush()
            secrets = [webhook.secret]
            if (webhook.previous_secret and webhook.previous_secret_until
                    and _aware(webhook.previous_secret_until) > now):
                secrets.append(webhook.previous_secret)
            return ClaimedWebhook(webhook.id, owner, webhook.url, secrets)
    return None


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # SQLite


def fan_out(session: Session, webhook: Webhook) -> int:
    """Delivery rows for the webhook's events after its high-water mark; how many."""
    events = list(session.scalars(select(Event).where(Event.id > webhook.last_event_id)
                                  .order_by(Event.id).limit(_FAN_OUT_BATCH)))
    rows = [new_delivery(webhook.id, e) for e in events if matches(webhook, e)]
    session.add_all(rows)
    if events:
        webhook.last_event_id = events[-1].id
    session.flush()
    return len(rows)


def due(session: Session, claimed: ClaimedWebhook, limit: int) -> list[Due]:
    rows = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.webhook_id == claimed.id,
                                      WebhookDelivery.status == "pending")
        .order_by(WebhookDelivery.id).limit(limit))
    now = utcnow()
    out = []
    for row in rows:
        if _aware(row.next_attempt_at) > now:
            break  # a retry waits: the ones after it wait too (event order)
        out.append(Due(row.id, row.message_id, row.event_id, dict(row.payload)))
    return out


def _fenced(session: Session, claimed: ClaimedWebhook) -> Webhook:
    webhook = session.get(Webhook, claimed.id, with_for_update=True)
    if webhook is None or webhook.lease_owner != claimed.owner:
        raise LeaseLost(f"webhook {claimed.id}: lease lost")
    return webhook


def record(session: Session, claimed: ClaimedWebhook, due_: Due, outcome: Outcome,
           settings: Settings) -> bool:
    """Record an attempt; whether the dispatcher goes on to the webhook's next delivery
    (False: this one waits for a retry, or the webhook was disabled)."""
    webhook = _fenced(session, claimed)
    now = utcnow()
    webhook.lease_expires_at = now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
    row = session.get(WebhookDelivery, due_.id)
    if row is None or row.status != "pending":
        return True  # its webhook was changed under it, or it was recorded already
    row.attempt += 1
    row.status_code, row.latency_ms = outcome.status_code, outcome.latency_ms
    row.error, row.response_excerpt, row.attempted_at = (outcome.error, outcome.excerpt,
                                                         now)
    go_on = True
    schedule = settings.webhook_retry_schedule
    if outcome.delivered:
        row.status, row.delivered_at = "delivered", now
    elif outcome.status_code == 410:
        row.status = "failed"
        _disable(webhook, f"the receiver answered 410 Gone to {row.message_id} at "
                          f"{now.isoformat()}")
        go_on = False
    elif outcome.retryable and row.attempt < len(schedule):
        row.next_attempt_at = now + timedelta(seconds=retry_delay(
            schedule[row.attempt], outcome.retry_after_s))
        go_on = False
    elif outcome.retryable:
        row.status = "failed"
        _disable(webhook, f"{row.message_id} failed {row.attempt} times over the whole "
                          f"retry schedule; last: {outcome.error}")
        go_on = False
    else:
        row.status = "failed"  # a 3xx, another 4xx, or a refused target: not retried
    # The log's line for this attempt, in the transaction that records its outcome: a
    # dispatcher that dies before this commit leaves neither (and the delivery pending).
    session.add(WebhookDeliveryAttempt(
        delivery_id=row.id, webhook_id=row.webhook_id, event_id=row.event_id,
        attempt=row.attempt, outcome="retrying" if row.status == "pending" else row.status,
        status_code=outcome.status_code, latency_ms=outcome.latency_ms, error=outcome.error,
        response_excerpt=outcome.excerpt, attempted_at=now))
    session.flush()
    return go_on and webhook.enabled  # disabled by hand meanwhile: stop there


def retry_delay(scheduled_s: float, retry_after_s: float | None) -> float:
    """The schedule's delay with +-20% jitter (so receivers coming back are not all hit
    at once), or the receiver's Retry-After when longer (capped at an hour)."""
    delay = scheduled_s * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, _MAX_RETRY_AFTER_S))
    return delay


def _disable(webhook: Webhook, reason: str) -> None:
    webhook.enabled, webhook.disabled_reason = False, reason
    webhook.updated_at = utcnow()


def release(session: Session, claimed: ClaimedWebhook) -> None:
    webhook = session.get(Webhook, claimed.id, with_for_update=True)
    if webhook is not None and webhook.lease_owner == claimed.owner:
        webhook.lease_owner = webhook.lease_expires_at = None
        session.flush()


def undelivered_floor(session: Session) -> int | None:
    """The highest event id that every enabled webhook has fanned out and delivered (or
    given up on): retention may prune up to it, not beyond. None: no enabled webhook."""
    mark = session.scalar(select(func.min(Webhook.last_event_id))
                          .where(Webhook.enabled.is_(True)))
    if mark is None:
        return None
    pending = session.scalar(
        select(func.min(WebhookDelivery.event_id))
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(Webhook.enabled.is_(True), WebhookDelivery.status == "pending",
               WebhookDelivery.event_id.is_not(None)))
    return int(mark) if pending is None else min(int(mark), int(pending) - 1)
