"""Safe delivery: private targets refused at registration and at delivery, nothing sent."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.app import create_app
from registry.settings import Settings
from registry.storage.local import LocalBlobStore
from registry.tables import Webhook
from registry.webhooks import target
from registry.webhooks.sender import send
from tests.conftest import Tokens
from tests.registry.webhooks.conftest import Receiver, deliveries, drain, emit, subscribe

REFUSED = ["http://127.0.0.1/x", "http://[::1]/x", "http://169.254.169.254/latest/meta-data",
           "http://10.0.0.1/x", "http://[fd00:ec2::254]/x", "http://192.168.1.2/x",
           "http://0.0.0.0/x", "http://[::ffff:127.0.0.1]/x", "http://224.0.0.1/x",
           "https://100.64.0.1/x"]


@pytest.fixture
def strict(settings: Settings, store: LocalBlobStore) -> Iterator[TestClient]:
    """The API with the default rule: private targets refused."""
    app = create_app(settings.model_copy(update={"WEBHOOK_ALLOW_PRIVATE": False}),
                     store=store)
    with TestClient(app) as client:
        yield client
    app.state.database.dispose()


@pytest.fixture
def loopback_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """hooks.example.com resolves to a public address and loopback."""
    real = target.resolve

    def resolve(host: str, port: int) -> list[target.IPAddress]:
        if host != "hooks.example.com":
            return real(host, port)  # an address literal: no DNS
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(target, "resolve", resolve)
    return "http://hooks.example.com/x"


@pytest.mark.usefixtures("no_connect")
@pytest.mark.parametrize("url", REFUSED)
def test_private_targets_refused_at_registration(strict: TestClient, tokens: Tokens,
                                                 url: str) -> None:
    answer = strict.post("/webhooks", json={"url": url}, headers=tokens.admin)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "WebhookTargetRefused"
    assert "DELTAHUB_WEBHOOK_ALLOW_PRIVATE" in answer.json()["detail"]


@pytest.mark.usefixtures("no_connect")
def test_name_resolving_to_loopback_refused(strict: TestClient, tokens: Tokens,
                                            loopback_name: str) -> None:
    answer = strict.post("/webhooks", json={"url": loopback_name}, headers=tokens.admin)
    assert answer.status_code == 422
    assert "127.0.0.1, loopback" in answer.json()["detail"]


@pytest.mark.usefixtures("no_connect")
@pytest.mark.parametrize("url", [*REFUSED[:4], "http://hooks.example.com/x"])
def test_refused_again_at_delivery(settings: Settings, url: str,
                                   loopback_name: str) -> None:
    """A check at each attempt: a name that rebinds to loopback after registration."""
    strict = settings.model_copy(update={"WEBHOOK_ALLOW_PRIVATE": False})
    outcome = send(url, {}, b"{}", strict)
    assert outcome.refused
    assert not outcome.retryable
    assert outcome.error is not None
    assert outcome.error.startswith("TargetRefused")


def test_rebinding_recorded_and_nothing_sent(client: TestClient, app: FastAPI,
                                             tokens: Tokens, receiver: Receiver,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered while allowed, refused when the rule applies at delivery."""
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database)
    monkeypatch.setattr(app.state.settings, "WEBHOOK_ALLOW_PRIVATE", False)
    database = app.state.database
    drain(app, lambda: bool(deliveries(client, tokens, hook["id"], status="failed")))
    failed = deliveries(client, tokens, hook["id"])[0]
    assert failed["error"].startswith("TargetRefused")
    assert failed["status_code"] is None
    assert receiver.requests == 0
    with database.reading() as session:
        assert session.get(Webhook, hook["id"]).enabled  # a refusal is not the receiver's


def test_redirect_to_loopback_not_followed(client: TestClient, app: FastAPI, tokens: Tokens,
                                           receiver: Receiver) -> None:
    receiver.behaviour = lambda r, n: (302, {"Location": "http://127.0.0.1:1/admin"}, b"")
    hook = subscribe(client, tokens, receiver)
    emit(app.state.database)
    drain(app, lambda: bool(deliveries(client, tokens, hook["id"], status="failed")))
    [failed] = deliveries(client, tokens, hook["id"])
    assert failed["status_code"] == 302
    assert "not followed" in failed["error"]
    assert "127.0.0.1:1" in failed["error"]
    assert receiver.requests == 1  # once, and never to the Location


def test_resolved_once_and_pinned(settings: Settings, receiver: Receiver,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One resolution per attempt; the socket goes to that address, and the Host header
    names the URL's host. A rebinding answer afterwards is never asked for."""
    answers = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.9.9.9")]
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[target.IPAddress]:
        asked.append(host)
        return [answers[len(asked) - 1]]

    monkeypatch.setattr(target, "resolve", resolve)
    monkeypatch.setattr("socket.getaddrinfo", lambda *a, **k: pytest.fail("re-resolved"))
    port = receiver.url.split(":")[2].split("/")[0]
    outcome = send(f"http://hooks.example.com:{port}/hook?x=1", {}, b"{}", settings)
    assert outcome.status_code == 204, outcome
    assert asked == ["hooks.example.com"]
    assert receiver.received[0].headers["host"] == f"hooks.example.com:{port}"
