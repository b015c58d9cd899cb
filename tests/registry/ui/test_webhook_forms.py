"""The webhook forms under /ui (admin): add (the secret shown once), enable and disable,
rotate the secret, test, redeliver, delete; refusals shown in the page with their status."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from registry.auth.service import create_token, revoke_token
from registry.settings import Settings
from registry.tables import WebhookDelivery
from registry.webhooks.dispatcher import Dispatcher
from tests.conftest import Tokens
from tests.registry.ui.conftest import sign_in

# Port 9 (discard) is closed on loopback: attempts fail fast, nothing is received.
TARGET = "http://127.0.0.1:9/hook"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Loopback targets allowed, so a webhook can be added without DNS."""
    return Settings(_env_file=None, DATABASE_URL=database_url,  # type: ignore[call-arg]
                    STORAGE_URL=f"file://{tmp_path / 'blobs'}", EMBEDDED_WORKERS=0,
                    WORK_DIR=str(tmp_path / "work"), WEBHOOK_ALLOW_PRIVATE=True,
                    WEBHOOK_RETRY_SCHEDULE="0,60", WEBHOOK_TIMEOUT_SECONDS=1.0,
                    WEBHOOK_CONNECT_TIMEOUT_SECONDS=1.0)


def _alert(page: str) -> str:
    found = re.search(r'<p class="error" role="alert" id="form-error">(.*?)</p>', page, re.S)
    assert found, "no error shown in the page"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


def _hook(client: TestClient, tokens: Tokens, hook_id: int) -> dict[str, Any]:
    answer = client.get(f"/webhooks/{hook_id}", headers=tokens.admin)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def _add(client: TestClient, csrf: str, **fields: str) -> Any:
    return client.post("/ui/webhooks", data={"csrf_token": csrf, "url": TARGET, **fields},
                       follow_redirects=False)


def test_an_admin_adds_a_webhook_and_sees_its_secret_once(client: TestClient,
                                                          tokens: Tokens) -> None:
    csrf = sign_in(client, tokens.admin)
    assert 'id="add-webhook"' in client.get("/ui/webhooks").text
    added = _add(client, csrf, events="alias.set, alias.removed", alias="prod")
    assert added.status_code == 201, added.text
    secret = re.search(r"<code>(whsec_[A-Za-z0-9+/=]+)</code>", added.text)
    assert secret, "the new secret is shown"
    [hook] = client.get("/webhooks", headers=tokens.admin).json()["items"]
    assert (hook["url"], hook["events"], hook["filters"]["alias"]) == (
        TARGET, ["alias.set", "alias.removed"], "prod")
    assert f"<h1>Webhook {hook['id']}</h1>" in added.text
    again = client.get(f"/ui/webhooks/{hook['id']}")
    assert secret.group(1) not in again.text  # once


@pytest.mark.parametrize(("fields", "said"), [
    ({"url": "ftp://example.com/x"}, "WebhookTargetRefused"),
    ({"events": "alias.set, alias.teleported"}, "alias.teleported"),
    ({"base": "no spaces allowed"}, "filters.base"),
])
def test_a_refused_webhook_is_shown_in_the_page_with_the_form_kept(
        client: TestClient, tokens: Tokens, fields: dict[str, str], said: str) -> None:
    csrf = sign_in(client, tokens.admin)
    refused = _add(client, csrf, **fields)
    assert refused.status_code == 422, refused.text
    assert said in _alert(refused.text)
    for value in fields.values():
        assert f'value="{html.escape(value)}"' in refused.text  # kept, to correct
    assert client.get("/webhooks", headers=tokens.admin).json()["items"] == []


def test_forms_need_the_csrf_token_and_the_admin_scope(app: FastAPI, client: TestClient,
                                                       tokens: Tokens) -> None:
    sign_in(client, tokens.admin)
    assert _add(client, "forged").status_code == 403
    with TestClient(app) as reader:
        csrf = sign_in(reader, tokens.read)
        refused = _add(reader, csrf)
        assert refused.status_code == 403
        assert "admin" in refused.text
    assert client.get("/webhooks", headers=tokens.admin).json()["items"] == []


def test_an_admin_disables_rotates_tests_redelivers_and_deletes(
        app: FastAPI, client: TestClient, tokens: Tokens) -> None:
    csrf = sign_in(client, tokens.admin)
    hook_id = client.post("/webhooks", json={"url": TARGET},
                          headers=tokens.admin).json()["id"]
    base = f"/ui/webhooks/{hook_id}"

    def act(path: str, **fields: str) -> Any:
        return client.post(f"{base}/{path}", data={"csrf_token": csrf, **fields},
                           follow_redirects=False)

    assert act("enabled", enabled="false").status_code == 303
    assert _hook(client, tokens, hook_id)["enabled"] is False
    assert "Enable</button>" in client.get(base).text
    assert act("enabled", enabled="true").status_code == 303
    assert _hook(client, tokens, hook_id)["enabled"] is True

    rotated = act("rotate-secret")
    assert rotated.status_code == 200
    assert re.search(r"<code>whsec_", rotated.text)
    assert _hook(client, tokens, hook_id)["previous_secret_valid_until"] is not None

    assert act("test").status_code == 303
    with app.state.database.writing() as session:  # an event for the webhook
        revoke_token(session, create_token(session, "gone", ["read"]).token.id)
    Dispatcher(app.state.database, app.state.settings, "ui").run_once()  # fans out, tries
    with app.state.database.reading() as session:
        events = session.scalars(select(WebhookDelivery.event_id)).all()
    event_id = next(e for e in events if e is not None)
    assert "webhook.test" in client.get(base).text  # the test ping's attempt, logged
    assert act("redeliver", event=str(event_id)).status_code == 303
    with app.state.database.reading() as session:
        again = session.scalars(select(WebhookDelivery).where(
            WebhookDelivery.event_id == event_id)).one()
        assert (again.status, again.attempt) == ("pending", 0)  # from the schedule's start

    not_a_number = act("redeliver", event="seven")
    assert not_a_number.status_code == 422
    assert "seven" in _alert(not_a_number.text)
    unknown = act("redeliver", event="999")
    assert unknown.status_code == 404
    assert "DeliveryNotFound" in _alert(unknown.text)
    assert f"<h1>Webhook {hook_id}</h1>" in unknown.text  # the same page, not an error one

    deleted = act("delete")
    assert (deleted.status_code, deleted.headers["location"]) == (303, "/ui/webhooks")
    assert client.get(f"/webhooks/{hook_id}", headers=tokens.admin).status_code == 404
