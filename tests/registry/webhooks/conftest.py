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

from registry.events.outbox import record_event
from registry.events.schemas import AliasData, EventType, TokenData
from registry.infra.database import Database
from registry.settings import Settings
from registry.webhooks.dispatcher import Dispatcher
from tests.conftest import Tokens


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]


# How the receiver answers a request: (status, headers, body); None to hang; status 0 to
# drop the connection unanswered; status 200 with an "X-Huge" header to send 100 MiB.
Behaviour = Callable[["Receiver", int], tuple[int, dict[str, str], bytes] | None]


@dataclass
class Receiver:
    url: str
    secrets: list[str] = field(default_factory=list)  # each must verify every delivery
    received: list[Received] = field(default_factory=list)  # verified, answered 2xx
    requests: int = 0  # every request, whatever the answer
    behaviour: Behaviour | None = None
    release: threading.Event = field(default_factory=threading.Event)
    huge_written: int = 0  # bytes of a huge answer the sender took before it hung up

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received]


def _handler(receiver: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.requests += 1
            answer = (receiver.behaviour(receiver, receiver.requests)
                      if receiver.behaviour else (204, {}, b""))
            if answer is None:  # hang until the test ends
                receiver.release.wait(30)
                return
            status, extra, content = answer
            if status == 0:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
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
                if "X-Huge" in extra:
                    chunk = b"x" * 2**20
                    for _ in range(100):
                        self.wfile.write(chunk)
                        receiver.huge_written += len(chunk)
            except OSError:
                self.close_connection = True  # the sender stopped reading: as it should

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    """`make_receiver(port=0)`: another receiver, on a port of its own (or on `port`)."""
    running: list[tuple[http.server.ThreadingHTTPServer, Receiver]] = []

    def make(port: int = 0) -> Receiver:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _handler(Receiver("")))
        server.daemon_threads = True
        receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook")
        server.RequestHandlerClass = _handler(receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append((server, receiver))
        return receiver

    yield make
    for server, receiver in running:
        receiver.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(make_receiver: Callable[[], Receiver]) -> Receiver:
    return make_receiver()


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


def feed(client: TestClient, tokens: Tokens) -> list[dict[str, Any]]:
    """Every event GET /events answers (up to 100)."""
    answer = client.get("/events", params={"limit": 100}, headers=tokens.read)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items
