"""The webhooks pages under /ui (admin): the list, and one webhook's delivery log."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.ui.conftest import sign_in
from tests.registry.webhooks.conftest import Receiver, deliveries, drain, emit, subscribe


def _rows(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-attempt="(\d+)">(.*?)</tr>', html, re.S))


def test_admin_sees_webhooks_and_each_ones_delivery_log(
        app: FastAPI, client: TestClient, tokens: Tokens, receiver: Receiver) -> None:
    hook = subscribe(client, tokens, receiver, events=["token.revoked"])
    emit(app.state.database)
    drain(app, lambda: len(receiver.received) == 1)
    receiver.behaviour = lambda r, n: (500, {}, b"receiver <b>broke</b>")
    emit(app.state.database, name="second")
    drain(app, lambda: any(d["status"] == "failed"
                           for d in deliveries(client, tokens, hook["id"])))
    sign_in(client, tokens.admin)

    listing = client.get("/ui/webhooks")
    assert listing.status_code == 200
    assert 'href="/ui/webhooks"' in listing.text  # the nav offers the page to admins
    assert f'href="/ui/webhooks/{hook["id"]}"' in listing.text
    assert receiver.url in listing.text
    assert "<script" not in listing.text
    assert "script-src" in listing.headers["Content-Security-Policy"]

    log = client.get(f"/ui/webhooks/{hook['id']}")
    assert log.status_code == 200
    rows = _rows(log.text)
    assert len(rows) == 4  # every attempt: one delivered, three at the failing one
    assert '<div class="scroll"><table class="list deliveries">' in log.text
    failed = next(row for row in rows.values() if "<td>failed</td>" in row)
    assert "500" in failed
    assert "receiver &lt;b&gt;broke&lt;/b&gt;" in failed  # the receiver's answer, escaped
    delivered = next(row for row in rows.values() if "<td>204</td>" in row)
    assert "<td>delivered</td>" in delivered
    assert "msg_" in delivered  # the webhook-id, for matching the receiver's own logs

    only_failed = client.get(f"/ui/webhooks/{hook['id']}", params={"outcome": "failed"})
    assert list(_rows(only_failed.text).values()) == [failed]


def test_webhook_pages_are_for_admins(client: TestClient, tokens: Tokens,
                                      receiver: Receiver) -> None:
    hook = subscribe(client, tokens, receiver)
    sign_in(client, tokens.read)

    models = client.get("/ui/models")
    assert 'href="/ui/webhooks"' not in models.text
    for path in ("/ui/webhooks", f"/ui/webhooks/{hook['id']}"):
        answer = client.get(path)
        assert answer.status_code == 403
        assert "admin" in answer.text
        assert receiver.url not in answer.text


def test_an_unknown_webhook_is_a_404_page(client: TestClient, tokens: Tokens) -> None:
    sign_in(client, tokens.admin)

    answer = client.get("/ui/webhooks/999")

    assert answer.status_code == 404
    assert "text/html" in answer.headers["content-type"]
