"""Webhooks (admin): the subscriptions, and each one's delivery log."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from registry.names import MAX_ID
from registry.ui.access import ViewerDep, read
from registry.ui.render import PageError, page
from registry.ui.sessions import Viewer
from registry.webhooks import service
from registry.webhooks.schemas import DeliveryOut, WebhookOut

router = APIRouter(prefix="/ui/webhooks", include_in_schema=False)
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _admin(viewer: Viewer) -> None:
    # Webhook URLs and delivery logs (receivers' answers) are for admins, as in the API.
    if not viewer.may("admin"):
        raise PageError(403, "Forbidden",
                        f"webhooks need a token with the 'admin' scope; yours has "
                        f"{', '.join(sorted(viewer.scopes))}. Sign in with another token")


@router.get("")
async def webhook_list(request: Request, viewer: ViewerDep) -> HTMLResponse:
    _admin(viewer)
    found = await read(request, lambda s: [service.webhook_out(w)
                                           for w in service.list_all(s)])
    return page(request, "webhooks.html", viewer, webhooks=found)


@router.get("/{webhook_id}")
async def webhook_detail(request: Request, webhook_id: WebhookId, viewer: ViewerDep,
                         status: Literal["pending", "delivered", "failed", ""] = ""
                         ) -> HTMLResponse:
    _admin(viewer)

    def gather(session: Session) -> tuple[WebhookOut, list[DeliveryOut]]:
        webhook = service.webhook_out(service.get(session, webhook_id))
        log = service.deliveries(session, webhook_id, status or None)
        return webhook, [service.delivery_out(row) for row in log]

    webhook, deliveries = await read(request, gather)
    return page(request, "webhook.html", viewer, webhook=webhook, deliveries=deliveries,
                filters={"status": status})
