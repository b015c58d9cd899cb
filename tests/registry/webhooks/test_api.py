"""/webhooks: create, read, change, delete, rotate; validation; scope admin."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.webhooks.conftest import Receiver, subscribe


def test_crud_and_secret_shown_once(client: TestClient, tokens: Tokens,
                                    receiver: Receiver) -> None:
    created = subscribe(client, tokens, receiver, events=["alias.set"],
                        filters={"base": "llama", "alias": "prod"})
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["alias.set"]
    assert created["filters"] == {"base": "llama", "name": None, "alias": "prod"}
    assert created["enabled"] is True
    hook = f"/webhooks/{created['id']}"
    shown = client.get(hook, headers=tokens.admin).json()
    assert "secret" not in shown
    assert [w["id"] for w in client.get("/webhooks", headers=tokens.admin).json()["items"]] == [
        created["id"]]
    assert "whsec_" not in client.get("/webhooks", headers=tokens.admin).text

    patched = client.patch(hook, json={"enabled": False, "events": []}, headers=tokens.admin)
    assert patched.status_code == 200, patched.text
    assert patched.json()["enabled"] is False
    assert patched.json()["events"] == []

    rotated = client.post(f"{hook}/rotate-secret", headers=tokens.admin)
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    assert client.get(hook, headers=tokens.admin).json()["previous_secret_valid_until"]

    assert client.delete(hook, headers=tokens.admin).status_code == 204
    gone = client.get(hook, headers=tokens.admin)
    assert gone.status_code == 404
    assert gone.json()["error"] == "WebhookNotFound"


def test_admin_scope_only(client: TestClient, tokens: Tokens, receiver: Receiver) -> None:
    for headers in (tokens.read, tokens.push):
        assert client.get("/webhooks", headers=headers).status_code == 403
        assert client.post("/webhooks", json={"url": receiver.url},
                           headers=headers).status_code == 403
    assert client.get("/webhooks").status_code == 401


def test_bad_input_is_a_clear_422(client: TestClient, tokens: Tokens,
                                  receiver: Receiver) -> None:
    cases = [
        ({"url": receiver.url, "events": ["adapter.exploded"]}, "ValidationError"),
        ({"url": "ftp://example.com/x"}, "WebhookTargetRefused"),
        ({"url": "file:///etc/passwd"}, "WebhookTargetRefused"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "WebhookTargetRefused"),
        ({"url": "http:///nohost"}, "WebhookTargetRefused"),
        ({"url": receiver.url, "filters": {"base": "../x"}}, "InvalidName"),
        ({"url": receiver.url, "filters": {"colour": "red"}}, "ValidationError"),
        ({"url": receiver.url, "secret": "mine"}, "ValidationError"),
    ]
    for body, error in cases:
        answer = client.post("/webhooks", json=body, headers=tokens.admin)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"] == error, (body, answer.text)
        assert answer.json()["detail"]
    assert client.patch("/webhooks/1", json={"enabled": True},
                        headers=tokens.admin).status_code == 404
    assert client.patch("/webhooks/99", json={"url": "gopher://x"},
                        headers=tokens.admin).status_code == 422
