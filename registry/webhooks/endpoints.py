"""HTTP for webhooks (scope `admin`): subscriptions, secret rotation, the delivery log."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.orm import Session

from registry.infra.deps import AdminReader, AdminToken, DatabaseDep, SettingsDep
from registry.infra.pagination import MAX_PAGE_TOKEN_CHARS
from registry.names import MAX_ID
from registry.settings import Settings
from registry.webhooks import service
from registry.webhooks.schemas import (
    AttemptList,
    DeliveryOut,
    SecretRotated,
    WebhookCreated,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID)]
EventId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def _check_url(url: str, settings: Settings) -> None:
    # Resolving blocks: in a thread, never on the event loop.
    await anyio.to_thread.run_sync(service.check_url, url, settings)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_webhook(body: WebhookIn, db: DatabaseDep, settings: SettingsDep,
                         _: AdminToken) -> WebhookCreated:
    """Subscribe a URL to events committed from now on. The answer carries the
    `whsec_` secret that signs its deliveries: shown this once."""
    await _check_url(body.url, settings)
    webhook, secret = await db.write(lambda session: service.create(session, body))
    return WebhookCreated(**service.webhook_out(webhook).model_dump(), secret=secret)


@router.get("", response_model=WebhookList)
async def list_webhooks(reader: AdminReader) -> Response:
    return await reader.json(lambda session: WebhookList(
        items=[service.webhook_out(w) for w in service.list_all(session)]))


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: WebhookId, reader: AdminReader) -> Response:
    return await reader.json(
        lambda session: service.webhook_out(service.get(session, webhook_id)))


@router.patch("/{webhook_id}")
async def patch_webhook(webhook_id: WebhookId, body: WebhookPatch, db: DatabaseDep,
                        settings: SettingsDep, _: AdminToken) -> WebhookOut:
    """Change any of url, events, filters, enabled. `enabled: true` re-enables a webhook
    disabled after failures, and its pending deliveries resume."""
    if body.url is not None:
        await _check_url(body.url, settings)
    return await db.write(lambda session: service.webhook_out(
        service.patch(session, webhook_id, body)))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(webhook_id: WebhookId, db: DatabaseDep, _: AdminToken) -> Response:
    await db.write(lambda session: service.delete(session, webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate-secret")
async def rotate_secret(webhook_id: WebhookId, db: DatabaseDep, settings: SettingsDep,
                        _: AdminToken) -> SecretRotated:
    """A new secret (shown this once). For DELTAHUB_WEBHOOK_SECRET_GRACE_SECONDS
    deliveries carry two signatures, the new secret's and the old one's."""
    webhook = await db.write(lambda session: service.rotate_secret(session, webhook_id,
                                                                   settings))
    assert webhook.previous_secret_until is not None
    return SecretRotated(secret=webhook.secret,
                         previous_secret_valid_until=webhook.previous_secret_until)


@router.get("/{webhook_id}/deliveries", response_model=AttemptList)
async def list_deliveries(
    webhook_id: WebhookId, settings: SettingsDep, reader: AdminReader,
    event: Annotated[int | None, Query(ge=1, le=MAX_ID, description=(
        "only the attempts at this event's delivery"))] = None,
    outcome: Annotated[Literal["delivered", "retrying", "failed"] | None, Query(description=(
        "only attempts that led to this"))] = None,
    delivery_status: Annotated[Literal["pending", "delivered", "failed"] | None,
                               Query(alias="status", description=(
                                   "only attempts at deliveries in this state now"))] = None,
    limit: Annotated[int | None, Query(description="attempts per page")] = None,
    page_token: Annotated[str | None, Query(max_length=MAX_PAGE_TOKEN_CHARS)] = None,
) -> Response:
    """The delivery log: every attempt (status code, latency, error, the start of the
    answer, what it led to), newest first, with where its delivery stands now. A delivery
    not yet attempted has no line here; its event is pending in the metrics."""
    filters = service.AttemptFilters(event, outcome, delivery_status)

    def page(session: Session) -> AttemptList:
        found = service.attempts(session, settings, webhook_id, filters, limit, page_token)
        return AttemptList(items=[service.attempt_out(row) for row in found.items],
                           next_page_token=found.next_page_token)

    return await reader.json(page)


@router.post("/{webhook_id}/deliveries/{event_id}/redeliver",
             status_code=status.HTTP_202_ACCEPTED)
async def redeliver(webhook_id: WebhookId, event_id: EventId, db: DatabaseDep,
                    _: AdminToken) -> DeliveryOut:
    """Send an event again (with the same webhook-id), from the start of the schedule."""
    return await db.write(lambda session: service.delivery_out(
        service.redeliver(session, webhook_id, event_id)))


@router.post("/{webhook_id}/test", status_code=status.HTTP_202_ACCEPTED)
async def ping_webhook(webhook_id: WebhookId, db: DatabaseDep, _: AdminToken) -> DeliveryOut:
    """Queue a signed `webhook.test` ping; its outcome shows in the delivery log."""
    return await db.write(lambda session: service.delivery_out(
        service.ping(session, webhook_id)))
