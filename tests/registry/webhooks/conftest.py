"""A real webhook receiver on 127.0.0.1, and ways to make events and drive dispatch."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook as Verifier

from registry.database import Database
from registry.events.outbox import record_event
from registry.events.schemas import AliasData, EventType, TokenData
from registry.settings import Settings
from registry.webhooks.dispatcher import Dispatcher
from tests.conftest import Tokens


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]


# How the receiver answers a request: (status, headers, body); or None to hang.
Behaviour = Callable[["Receiver", int], tuple[int, dict[str, str], bytes] | None]


@dataclass
class Receiver:
    url: str
    secrets: list[str] = field(default_factory=list)  # each must verify every delivery
    received: list[Received] = field(default_factory=list)  # verified, answered 2xx
    requests: int = 0  # every request, whatever the answer
    behaviour: Behaviour | None = None
    release: threading.Event = field(default_factory=threading.Event)

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]


def _handler(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.requests += 1
            answer = (receiver.behaviour(receiver, receiver.requests)
                      if receiver.behaviour else (204, {}, b""))
            if answer is None:  # hang until the test ends
                receiver.release.wait(30)
                return
            status, extra, content = answer
            if 200 <= status < 300:
                payload = None
                for secret in receiver.secrets:
                    payload = Verifier(secret).verify(body, headers)  # raises if bad
                receiver.received.append(Received(headers, body, payload or {}))
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            if "Content-Length" not in extra:
                self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            try:
                self.wfile.write(content)
            except OSError:
                pass  # the sender stopped reading (a huge answer): as it should

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver("")))
    server.daemon_threads = True
    port = server.server_address[1]
    receiver = Receiver(f"http://127.0.0.1:{port}/hook")
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Private targets allowed (the receiver is on loopback), a shrunk retry schedule."""
    return Settings(_env_file=None, DATABASE_URL=database_url,  # type: ignore[call-arg]
                    STORAGE_URL=f"file://{tmp_path / 'blobs'}", EMBEDDED_WORKERS=0,
                    WORK_DIR=str(tmp_path / "work"), WEBHOOK_ALLOW_PRIVATE=True,
                    WEBHOOK_RETRY_SCHEDULE="0,0.1,0.2", WEBHOOK_TIMEOUT_SECONDS=1.0,
                    WEBHOOK_CONNECT_TIMEOUT_SECONDS=1.0, WEBHOOK_LEASE_SECONDS=2.0,
                    WEBHOOK_POLL_SECONDS=0.05)


def subscribe(client: TestClient, tokens: Tokens, receiver: Receiver,
              **body: Any) -> dict[str, Any]:
    answer = client.post("/webhooks", json={"url": receiver.url, **body},
                         headers=tokens.admin)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    receiver.secrets.append(created["secret"])
    return created


def emit(database: Database, count: int = 1, name: str = "tok") -> None:
    """`count` token.revoked events, one transaction each."""
    for i in range(count):
        with database.writing() as session:
            record_event(session, EventType.TOKEN_REVOKED, TokenData(id=i + 1, name=name))


def emit_alias(database: Database, alias: str, version: int, base: str = "b") -> None:
    with database.writing() as session:
        record_event(session, EventType.ALIAS_SET, AliasData(
            name="a", alias=alias, base=base, adapter_id=version, version=version,
            previous_version=None, path=f"/adapters/a:{alias}"))


def drain(app: FastAPI, until: Callable[[], bool], timeout_s: float = 10.0,
          dispatcher: Dispatcher | None = None) -> Dispatcher:
    """Run one dispatcher's turns until `until()` (retries wait in real time)."""
    dispatcher = dispatcher or Dispatcher(app.state.database, app.state.settings, "test")
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "dispatch did not get there in time"
        if not dispatcher.run_once():
            time.sleep(0.02)
    return dispatcher


def deliveries(client: TestClient, tokens: Tokens, webhook_id: int,
               **params: Any) -> list[dict[str, Any]]:
    answer = client.get(f"/webhooks/{webhook_id}/deliveries", params=params,
                        headers=tokens.admin)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test: nothing may be sent."""

    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"a connection to {address} was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
