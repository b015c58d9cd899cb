"""`deltahub webhooks add|ls|rm|test|deliveries` (an admin token)."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli.console import print_json, print_table, stdout
from registry.cli.remote import DEFAULT_URL, Json, Token, Url, connected

webhooks_app = typer.Typer(help="Signed webhooks: add, ls, rm, test, deliveries (an admin token).",
                           no_args_is_help=True)


@webhooks_app.command("add")
def webhooks_add(
    target: Annotated[str, typer.Argument(help="the http(s) URL to POST events to")],
    events: Annotated[list[str] | None, typer.Option(
        "--events", help="event types (repeat, or comma-separated); default: all")] = None,
    base: Annotated[str | None, typer.Option(help="only events about this base model")]
    = None,
    name: Annotated[str | None, typer.Option(help="only events about this name")] = None,
    alias: Annotated[str | None, typer.Option(help="only alias events of this alias")]
    = None,
    json: Json = False, url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Subscribe a URL; prints its id and its secret (shown this once: keep it)."""
    wanted = [t.strip() for item in events or [] for t in item.split(",") if t.strip()]
    filters = {k: v for k, v in (("base", base), ("name", name), ("alias", alias)) if v}
    with connected(url, token) as client:
        created = client.create_webhook(target, wanted, filters)
    if json:
        print_json(created)
        return
    stdout.print(f"webhook {created['id']} -> {created['url']}", highlight=False)
    stdout.print(f"secret: {created['secret']}  (shown once: verify signatures with it)",
                 highlight=False)


@webhooks_app.command("ls")
def webhooks_ls(json: Json = False, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """List webhooks."""
    with connected(url, token) as client:
        hooks = client.list_webhooks()
    if json:
        print_json(hooks)
        return
    rows = [[h["id"], h["url"], ",".join(h["events"]) or "all",
             " ".join(f"{k}={v}" for k, v in h["filters"].items() if v),
             "yes" if h["enabled"] else f"no: {h['disabled_reason'] or 'by hand'}"]
            for h in hooks]
    print_table("webhooks", ["id", "url", "events", "filters", "enabled"], rows)


@webhooks_app.command("rm")
def webhooks_rm(webhook_id: Annotated[int, typer.Argument(help="webhook id")],
                url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Delete a webhook and its delivery log."""
    with connected(url, token) as client:
        client.delete_webhook(webhook_id)
    stdout.print(f"webhook {webhook_id} deleted")


@webhooks_app.command("test")
def webhooks_test(webhook_id: Annotated[int, typer.Argument(help="webhook id")],
                  json: Json = False, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Queue a signed webhook.test ping (its outcome shows in `deliveries`)."""
    with connected(url, token) as client:
        delivery = client.test_webhook(webhook_id)
    if json:
        print_json(delivery)
        return
    stdout.print(f"test ping {delivery['message_id']} queued for webhook {webhook_id}",
                 highlight=False)


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    webhook_id: Annotated[int, typer.Argument(help="webhook id")],
    event: Annotated[int | None, typer.Option(help="only attempts at this event")] = None,
    outcome: Annotated[str | None, typer.Option(
        help="only attempts that led to: delivered, retrying or failed")] = None,
    status: Annotated[str | None, typer.Option(
        help="only attempts at deliveries now: pending, delivered or failed")] = None,
    limit: Annotated[int | None, typer.Option(help="attempts per page")] = None,
    page_token: Annotated[str | None, typer.Option(
        help="the next page, as the previous one printed it")] = None,
    json: Json = False, url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """A webhook's delivery log: every attempt, newest first."""
    with connected(url, token) as client:
        page = client.webhook_deliveries(webhook_id, status, event=event, outcome=outcome,
                                         limit=limit, page_token=page_token)
    if json:
        print_json(page["items"])
        return
    rows = [[d["attempted_at"], d["event_id"] if d["event_id"] is not None else "test",
             d["event_type"], d["attempt"], d["outcome"], d["status_code"] or "",
             "" if d["latency_ms"] is None else f"{d['latency_ms']:.0f}", d["error"] or "",
             (d["response_excerpt"] or "")[:60]]
            for d in page["items"]]
    print_table(f"webhook {webhook_id} delivery attempts (newest first)",
                ["when", "event", "type", "attempt", "outcome", "HTTP", "latency ms",
                 "error", "answer"], rows)
    if page["next_page_token"]:
        stdout.print(f"older: --page-token {page['next_page_token']}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
