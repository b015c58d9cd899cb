"""Webhooks (admin): the subscriptions, each one's delivery log, and the forms that change
them (add, enable or disable, rotate the secret, test, redeliver, delete).

Every form calls the service functions the API calls (registry/webhooks/service.py); a
refusal (a bad URL, an unknown event) comes back as the same page with the reason and
the API's status (422), the form still filled in. A new secret is shown in the answer
to the form that made it, once, as the API does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from registry.errors import APIError
from registry.infra.pagination import Page
from registry.names import MAX_ID
from registry.ui.access import AdminAction, ViewerDep, read, write
from registry.ui.render import PageError, page, redirect
from registry.ui.sessions import Viewer
from registry.webhooks import service
from registry.webhooks.schemas import AttemptOut, WebhookIn, WebhookOut, WebhookPatch

router = APIRouter(prefix="/ui/webhooks", include_in_schema=False)
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID)]
_LOG_PAGE = 50  # attempts per page of the log


@dataclass
class FormState:
    """What a form was given, and why it was refused (None: not refused)."""

    values: dict[str, str] = field(default_factory=dict)
    error: PageError | None = None


def _admin(viewer: Viewer) -> None:
    # Webhook URLs and delivery logs (receivers' answers) are for admins, as in the API.
    if not viewer.may("admin"):
        raise PageError(403, "Forbidden",
                        f"webhooks need a token with the 'admin' scope; yours has "
                        f"{', '.join(sorted(viewer.scopes))}. Sign in with another token")


def _refusal(exc: ValidationError) -> PageError:
    """A body the API would answer 422 to, said as a person reads it."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}, "
                         f"got {e['input']!r}" for e in exc.errors())
    return PageError(422, "InvalidRequest", problems)


def _listed(text: str) -> list[str]:
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


async def _list_page(request: Request, viewer: Viewer, form: FormState | None = None,
                     status: int = 200) -> HTMLResponse:
    found = await read(request, lambda s: [service.webhook_out(w)
                                           for w in service.list_all(s)])
    return page(request, "webhooks.html", viewer, status=status, webhooks=found,
                form=form or FormState())


@router.get("")
async def webhook_list(request: Request, viewer: ViewerDep) -> HTMLResponse:
    _admin(viewer)
    return await _list_page(request, viewer)


@router.post("")
async def webhook_add(request: Request, viewer: AdminAction,
                      url: Annotated[str, Form()] = "", events: Annotated[str, Form()] = "",
                      base: Annotated[str, Form()] = "", name: Annotated[str, Form()] = "",
                      alias: Annotated[str, Form()] = "") -> HTMLResponse:
    """Add a webhook; the answer shows its secret, this once."""
    values = {"url": url, "events": events, "base": base, "name": name, "alias": alias}
    try:
        body = WebhookIn.model_validate({
            "url": url.strip(), "events": _listed(events),
            "filters": {k: v.strip() for k, v in (("base", base), ("name", name),
                                                  ("alias", alias)) if v.strip()}})
        settings = request.app.state.settings
        # Resolving blocks: in a thread, as the API does.
        await anyio.to_thread.run_sync(service.check_url, body.url, settings)
        webhook, secret = await write(request, lambda s: _created(s, body))
    except ValidationError as exc:
        return await _list_page(request, viewer, FormState(values, _refusal(exc)), 422)
    except APIError as exc:
        return await _list_page(request, viewer, FormState(values, PageError.of(exc)),
                                exc.status_code)
    except PageError as exc:
        return await _list_page(request, viewer, FormState(values, exc), exc.status)
    return await _detail_page(request, viewer, webhook.id, secret=secret, status=201)


def _created(session: Session, body: WebhookIn) -> tuple[WebhookOut, str]:
    webhook, secret = service.create(session, body)
    return service.webhook_out(webhook), secret


@dataclass(frozen=True)
class LogQuery:
    event: int | None = None
    outcome: str = ""
    page_token: str | None = None


async def _detail_page(request: Request, viewer: Viewer, webhook_id: int, *,
                       log: LogQuery | None = None, secret: str | None = None,
                       form: FormState | None = None, status: int = 200) -> HTMLResponse:
    log = log or LogQuery()
    settings = request.app.state.settings
    filters = service.AttemptFilters(log.event, log.outcome or None)

    def gather(session: Session) -> tuple[WebhookOut, Page[AttemptOut]]:
        webhook = service.webhook_out(service.get(session, webhook_id))
        found = service.attempts(session, settings, webhook_id, filters, _LOG_PAGE,
                                 log.page_token)
        return webhook, Page([service.attempt_out(row) for row in found.items],
                             found.next_page_token)

    webhook, attempts = await read(request, gather)
    return page(request, "webhook.html", viewer, status=status, webhook=webhook,
                attempts=attempts.items, next_page_token=attempts.next_page_token,
                filters={"event": log.event or "", "outcome": log.outcome},
                secret=secret, form=form or FormState())


@router.get("/{webhook_id}")
async def webhook_detail(request: Request, webhook_id: WebhookId, viewer: ViewerDep,
                         event: str = "",
                         outcome: Literal["delivered", "retrying", "failed", ""] = "",
                         page_token: str | None = None) -> HTMLResponse:
    _admin(viewer)
    if event.strip() and not (event.strip().isdigit() and 0 < int(event) <= MAX_ID):
        raise PageError(422, "InvalidRequest",
                        f"event: an event id (a positive whole number), got {event!r}")
    query = LogQuery(int(event) if event.strip() else None, outcome, page_token or None)
    return await _detail_page(request, viewer, webhook_id, log=query)


async def _acted(request: Request, viewer: Viewer, webhook_id: int, work: Any,
                 values: dict[str, str] | None = None) -> Response:
    """Run `work` in a write transaction and go back to the webhook's page; a refusal
    shows on that page, with its status."""
    try:
        await write(request, work)
    except PageError as exc:
        if exc.status == 404 and exc.name == "WebhookNotFound":
            raise
        return await _detail_page(request, viewer, webhook_id,
                                  form=FormState(values or {}, exc), status=exc.status)
    return redirect(f"/ui/webhooks/{webhook_id}")


@router.post("/{webhook_id}/enabled")
async def webhook_enable(request: Request, webhook_id: WebhookId, viewer: AdminAction,
                         enabled: Annotated[Literal["true", "false"], Form()]
                         ) -> Response:
    """Enable (its pending deliveries resume) or disable a webhook."""
    body = WebhookPatch(enabled=enabled == "true")
    return await _acted(request, viewer, webhook_id,
                        lambda s: service.patch(s, webhook_id, body))


@router.post("/{webhook_id}/rotate-secret")
async def webhook_rotate(request: Request, webhook_id: WebhookId,
                         viewer: AdminAction) -> HTMLResponse:
    """A new secret, shown in this answer only; the old one signs too for a grace period."""
    settings = request.app.state.settings
    webhook = await write(request, lambda s: service.rotate_secret(s, webhook_id, settings))
    return await _detail_page(request, viewer, webhook_id, secret=webhook.secret)


@router.post("/{webhook_id}/test")
async def webhook_test(request: Request, webhook_id: WebhookId,
                       viewer: AdminAction) -> Response:
    return await _acted(request, viewer, webhook_id, lambda s: service.ping(s, webhook_id))


@router.post("/{webhook_id}/redeliver")
async def webhook_redeliver(request: Request, webhook_id: WebhookId, viewer: AdminAction,
                            event: Annotated[str, Form()] = ""
                            ) -> Response:
    """Send an event again with its webhook-id, from the start of the retry schedule."""
    text = event.strip()
    if not (text.isdigit() and 0 < int(text) <= MAX_ID):
        error = PageError(422, "InvalidRequest",
                          f"event: the id of an event to send again, got {event!r}")
        return await _detail_page(request, viewer, webhook_id,
                                  form=FormState({"event": event}, error), status=422)
    return await _acted(request, viewer, webhook_id,
                        lambda s: service.redeliver(s, webhook_id, int(text)),
                        {"event": event})


@router.post("/{webhook_id}/delete")
async def webhook_delete(request: Request, webhook_id: WebhookId,
                         viewer: AdminAction) -> RedirectResponse:
    """Delete the webhook and its delivery log."""
    await write(request, lambda s: service.delete(s, webhook_id))
    return redirect("/ui/webhooks")
