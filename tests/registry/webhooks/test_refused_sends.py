"""A test ping or a redelivery that would send nothing, or send what the receiver never
asked for, is refused with a 409 that says why."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.webhooks.conftest import Receiver, drain, emit, emit_alias, subscribe


def test_a_disabled_webhook_is_not_tested_or_redelivered(
        client: TestClient, app: FastAPI, tokens: Tokens, receiver: Receiver) -> None:
    hook = subscribe(client, tokens, receiver, enabled=False)
    emit(app.state.database)
    ping = client.post(f"/webhooks/{hook['id']}/test", headers=tokens.admin)
    assert ping.status_code == 409, ping.text
    assert ping.json()["error"] == "WebhookDisabled"
    assert "enable it first" in ping.json()["detail"]
    again = client.post(f"/webhooks/{hook['id']}/deliveries/1/redeliver", headers=tokens.admin)
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "WebhookDisabled"


def test_an_event_the_webhook_leaves_out_is_not_redelivered(
        client: TestClient, app: FastAPI, tokens: Tokens, receiver: Receiver) -> None:
    hook = subscribe(client, tokens, receiver, events=["alias.set"],
                     filters={"alias": "prod"})
    emit(app.state.database)  # token.revoked: not a type it asked for
    emit_alias(app.state.database, "staging", 1)  # alias.set, but not its alias
    client.post(f"/webhooks/{hook['id']}/test", headers=tokens.admin)
    drain(app, lambda: receiver.requests >= 1)  # the dispatcher has passed both events by
    for event_id in (1, 2):
        refused = client.post(f"/webhooks/{hook['id']}/deliveries/{event_id}/redeliver",
                              headers=tokens.admin)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "EventNotSubscribed"
    assert [r.payload["type"] for r in receiver.received] == ["webhook.test"]
