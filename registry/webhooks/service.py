"""Webhook subscriptions: create, list, change, delete, rotate; the delivery log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import (
    DeliveryNotFound,
    EventNotSubscribed,
    WebhookDisabled,
    WebhookNotFound,
    WebhookTargetRefused,
)
from registry.events.repository import EventRepository
from registry.events.service import event_out
from registry.infra.pagination import Page, page_request
from registry.names import check_name
from registry.settings import Settings
from registry.tables import Event, Webhook, WebhookDelivery, WebhookDeliveryAttempt, utcnow
from registry.webhooks import signing
from registry.webhooks.schemas import (
    TEST_EVENT,
    AttemptOut,
    DeliveryOut,
    WebhookFilters,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from registry.webhooks.subscription import matches
from registry.webhooks.target import TargetRefused, check_target


def check_url(url: str, settings: Settings) -> None:
    """422 for a URL a webhook may not use (blocking: resolves the host)."""
    try:
        check_target(url, settings.WEBHOOK_ALLOW_PRIVATE)
    except TargetRefused as exc:
        raise WebhookTargetRefused(str(exc)) from None


def check_filters(filters: WebhookFilters) -> None:
    for value, what in ((filters.base, "filters.base"), (filters.name, "filters.name"),
                        (filters.alias, "filters.alias")):
        if value is not None:
            check_name(value, what)


def create(session: Session, body: WebhookIn) -> tuple[Webhook, str]:
    """The new webhook and its secret. It receives events committed from now on."""
    check_filters(body.filters)
    secret = signing.new_secret()
    webhook = Webhook(url=body.url, events=[t.value for t in body.events],
                      filter_base=body.filters.base, filter_name=body.filters.name,
                      filter_alias=body.filters.alias, enabled=body.enabled, secret=secret,
                      last_event_id=EventRepository(session).last_id())
    session.add(webhook)
    session.flush()
    return webhook, secret


def get(session: Session, webhook_id: int, *, lock: bool = False) -> Webhook:
    webhook = session.get(Webhook, webhook_id, with_for_update=lock)
    if webhook is None:
        raise WebhookNotFound(f"no webhook {webhook_id}; `GET /webhooks` lists them")
    return webhook


def list_all(session: Session) -> list[Webhook]:
    return list(session.scalars(select(Webhook).order_by(Webhook.id)))


def patch(session: Session, webhook_id: int, body: WebhookPatch) -> Webhook:
    webhook = get(session, webhook_id, lock=True)
    if body.url is not None:
        webhook.url = body.url
    if body.events is not None:
        webhook.events = [t.value for t in body.events]
    if body.filters is not None:
        check_filters(body.filters)
        webhook.filter_base = body.filters.base
        webhook.filter_name = body.filters.name
        webhook.filter_alias = body.filters.alias
    if body.enabled is not None:
        webhook.enabled = body.enabled
        if body.enabled:
            webhook.disabled_reason = None
    webhook.updated_at = utcnow()
    session.flush()
    return webhook


def delete(session: Session, webhook_id: int) -> None:
    session.delete(get(session, webhook_id, lock=True))
    session.flush()


def rotate_secret(session: Session, webhook_id: int, settings: Settings) -> Webhook:
    """A new secret; the old one still signs deliveries for the grace period."""
    webhook = get(session, webhook_id, lock=True)
    now = utcnow()
    webhook.previous_secret = webhook.secret
    webhook.previous_secret_until = now + timedelta(
        seconds=settings.WEBHOOK_SECRET_GRACE_SECONDS)
    webhook.secret = signing.new_secret()
    webhook.updated_at = now
    session.flush()
    return webhook


@dataclass(frozen=True)
class AttemptFilters:
    event_id: int | None = None
    outcome: str | None = None  # delivered, retrying, failed
    status: str | None = None  # the delivery's state now: pending, delivered, failed


Attempted = tuple[WebhookDeliveryAttempt, WebhookDelivery]


def attempts(session: Session, settings: Settings, webhook_id: int, filters: AttemptFilters,
             limit: int | None, page_token: str | None) -> Page[Attempted]:
    """The webhook's delivery log: every attempt, newest first, keyset-paged by id."""
    get(session, webhook_id)
    request = page_request(settings, limit, page_token, {
        "event": filters.event_id, "outcome": filters.outcome, "status": filters.status})
    query = (select(WebhookDeliveryAttempt, WebhookDelivery)
             .join(WebhookDelivery, WebhookDelivery.id == WebhookDeliveryAttempt.delivery_id)
             .where(WebhookDeliveryAttempt.webhook_id == webhook_id))
    if filters.event_id is not None:
        query = query.where(WebhookDeliveryAttempt.event_id == filters.event_id)
    if filters.outcome is not None:
        query = query.where(WebhookDeliveryAttempt.outcome == filters.outcome)
    if filters.status is not None:
        query = query.where(WebhookDelivery.status == filters.status)
    if request.after_id is not None:
        query = query.where(WebhookDeliveryAttempt.id < request.after_id)
    rows = [(a, d) for a, d in session.execute(
        query.order_by(WebhookDeliveryAttempt.id.desc()).limit(request.fetch))]
    return request.page(rows, key=lambda row: row[0].id)


def attempt_out(row: Attempted) -> AttemptOut:
    attempt, delivery = row
    return AttemptOut(
        id=attempt.id, delivery_id=delivery.id, event_id=attempt.event_id,
        event_type=delivery.event_type, message_id=delivery.message_id,
        attempt=attempt.attempt, outcome=attempt.outcome, status_code=attempt.status_code,
        latency_ms=attempt.latency_ms, error=attempt.error,
        response_excerpt=attempt.response_excerpt, attempted_at=attempt.attempted_at,
        status=delivery.status,
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None)


def redeliver(session: Session, webhook_id: int, event_id: int) -> WebhookDelivery:
    """Send an event again, with its webhook-id: its delivery row, back to pending; or a
    new one for an event the webhook's filters had passed over."""
    webhook = _enabled(get(session, webhook_id, lock=True), "redeliver to it")
    row = session.scalar(select(WebhookDelivery).where(
        WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.event_id == event_id))
    if row is None:
        event = session.get(Event, event_id)
        if event is None or event_id > webhook.last_event_id:
            raise DeliveryNotFound(
                f"webhook {webhook_id} has no delivery of event {event_id}, and the feed no "
                "longer has (or has not yet fanned out) that event")
        if not matches(webhook, event):
            raise EventNotSubscribed(
                f"webhook {webhook_id} does not subscribe to event {event_id} (a "
                f"{event.type} event{f' of {event.name}' if event.name else ''}): its event "
                "types or filters leave it out, so its receiver never asked for it")
        row = new_delivery(webhook.id, event)
        session.add(row)
    row.status, row.attempt, row.next_attempt_at = "pending", 0, utcnow()
    session.flush()
    return row


def ping(session: Session, webhook_id: int) -> WebhookDelivery:
    """Queue a `webhook.test` delivery."""
    webhook = _enabled(get(session, webhook_id), "test it")
    now = utcnow()
    message_id = f"msg_test_{uuid.uuid4().hex}"
    row = WebhookDelivery(webhook_id=webhook.id, event_id=None, event_type=TEST_EVENT,
                          message_id=message_id, status="pending", attempt=0,
                          next_attempt_at=now, payload={
                              "id": None, "type": TEST_EVENT, "created_at": now.isoformat(),
                              "data": {"webhook_id": webhook.id, "url": webhook.url}})
    session.add(row)
    session.flush()
    return row


def _enabled(webhook: Webhook, to: str) -> Webhook:
    """The webhook, if deliveries to it are made: nothing is sent to a disabled one."""
    if not webhook.enabled:
        reason = f" ({webhook.disabled_reason})" if webhook.disabled_reason else ""
        raise WebhookDisabled(
            f"webhook {webhook.id} is disabled{reason}, so nothing would be sent; enable it "
            f"first (PATCH /webhooks/{webhook.id} with {{\"enabled\": true}}), then {to}")
    return webhook


def new_delivery(webhook_id: int, event: Event) -> WebhookDelivery:
    payload = event_out(event).model_dump(mode="json")
    return WebhookDelivery(webhook_id=webhook_id, event_id=event.id, event_type=event.type,
                           message_id=message_id(webhook_id, event.id), payload=payload,
                           status="pending", attempt=0, next_attempt_at=utcnow())


def message_id(webhook_id: int, event_id: int) -> str:
    """The webhook-id header: stable per (event, webhook)."""
    return f"msg_{event_id}_{webhook_id}"


def webhook_out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(id=webhook.id, url=webhook.url, events=list(webhook.events),
                      filters=WebhookFilters(base=webhook.filter_base,
                                             name=webhook.filter_name,
                                             alias=webhook.filter_alias),
                      enabled=webhook.enabled, disabled_reason=webhook.disabled_reason,
                      previous_secret_valid_until=webhook.previous_secret_until,
                      created_at=webhook.created_at, updated_at=webhook.updated_at)


def delivery_out(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id, webhook_id=row.webhook_id, event_id=row.event_id,
        event_type=row.event_type, message_id=row.message_id, status=row.status,
        attempt=row.attempt, status_code=row.status_code, latency_ms=row.latency_ms,
        error=row.error, response_excerpt=row.response_excerpt,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        attempted_at=row.attempted_at, delivered_at=row.delivered_at,
        created_at=row.created_at)
