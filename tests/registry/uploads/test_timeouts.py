"""An upload that goes quiet is cut off (408) and leaves nothing behind; a slow but steady
one is not.

The live tests talk to a real uvicorn over a raw socket, since only a real server shows
what the client sees when the body stalls (the answer, the closed connection) and that
the server still serves the next request afterwards.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.types import Message

from registry.errors import RequestTimeout, UnsupportedFile
from registry.settings import Settings
from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX
from registry.storage.local import LocalBlobStore
from registry.uploads.pipeline import UploadPipeline, UploadResult
from registry.uploads.receive import receive_upload
from registry.uploads.rules import ContentKind, FileRule
from tests.conftest import LiveServer, Tokens
from tests.malformed import assemble, entry, valid_safetensors

IDLE_S = 0.5
# Generous on a loaded 2-core machine, yet far below "forever".
ANSWER_WITHIN_S = IDLE_S + 5
DECLARED = 10_000_000


def safetensors_prefix(n: int) -> bytes:
    """The first `n` bytes of a valid-looking safetensors file of about DECLARED bytes:
    whatever part the server checks before the stall passes, so only the stall fails."""
    floats = (DECLARED - 100) // 4
    head = assemble({"w": entry("F32", [floats], 0, floats * 4)})
    return (head + bytes(n))[:n]


def assert_nothing_stored(client: TestClient, store: LocalBlobStore, tokens: Tokens) -> None:
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert list(store.list_objects(BLOB_PREFIX)) == []
    assert client.get("/models/m", headers=tokens.read).json()["files"] == []


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"UPLOAD_IDLE_TIMEOUT_SECONDS": IDLE_S})


@pytest.fixture
def model(client: TestClient, tokens: Tokens) -> str:
    created = client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
    assert created.status_code == 201, created.text
    return "m"


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    after_s: float  # from the first byte sent to the whole answer read


def _request_head(server: LiveServer, target: str, tokens: Tokens, length: int) -> bytes:
    host = server.url.removeprefix("http://")
    return (f"PUT {target} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {tokens.push['Authorization']}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


@pytest.fixture
def connection(live_server: LiveServer) -> Iterator[socket.socket]:
    host, port = live_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        yield sock


def _read_answer(sock: socket.socket, started: float) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = json.loads(response.read())
    return Answer(response.status, body, time.monotonic() - started)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("sent", [1024, 1536 * 1024], ids=["1kB", "1.5MB-some-staged"])
def test_stalled_upload_is_cut_off_and_leaves_nothing(
        live_server: LiveServer, connection: socket.socket, client: TestClient,
        store: LocalBlobStore, tokens: Tokens, model: str, sent: int) -> None:
    target = f"/models/{model}/files/model.safetensors"
    started = time.monotonic()
    connection.sendall(_request_head(live_server, target, tokens, DECLARED)
                       + safetensors_prefix(sent))
    answer = _read_answer(connection, started)  # and then send nothing more

    assert answer.status == 408, answer.body
    assert answer.body["error"] == "RequestTimeout"
    assert f"no byte of the body arrived for {IDLE_S:g} s" in answer.body["detail"]
    assert f"after {sent} bytes" in answer.body["detail"]
    assert IDLE_S <= answer.after_s < ANSWER_WITHIN_S
    connection.settimeout(2)
    assert connection.recv(1) == b""  # the server closed the connection, not kept it
    assert_nothing_stored(client, store, tokens)

    # The server is fine afterwards, on a fresh connection.
    with httpx.Client(base_url=live_server.url, timeout=30) as fresh:
        ok = fresh.put(target, content=valid_safetensors(), headers=tokens.push)
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_slow_but_steady_upload_succeeds(live_server: LiveServer, connection: socket.socket,
                                         store: LocalBlobStore, tokens: Tokens,
                                         model: str) -> None:
    body = valid_safetensors()
    pieces = 6  # 6 gaps of 0.2 s: the whole upload takes over twice the idle timeout
    step = -(-len(body) // pieces)
    target = f"/models/{model}/files/model.safetensors"
    started = time.monotonic()
    connection.sendall(_request_head(live_server, target, tokens, len(body)))
    for i in range(0, len(body), step):
        time.sleep(0.2)
        connection.sendall(body[i : i + step])
    answer = _read_answer(connection, started)

    assert answer.status == 201, answer.body
    assert answer.after_s > 2 * IDLE_S  # so the bound is per chunk, not per upload
    assert len(list(store.list_objects(BLOB_PREFIX))) == 1
    assert list(store.list_objects(STAGING_PREFIX)) == []


# --- receive_upload against a bare ASGI receive -----------------------------------------


class StallingReceive:
    """An ASGI `receive` that hands out `parts`, then waits forever (a client gone quiet)."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = list(parts)
        self.waiting = False
        self.cancelled = False

    async def __call__(self) -> Message:
        if self.parts:
            return {"type": "http.request", "body": self.parts.pop(0), "more_body": True}
        self.waiting = True
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        finally:
            self.waiting = False
        raise AssertionError("unreachable")


def _request(receive: StallingReceive) -> Request:
    scope = {"type": "http", "method": "PUT", "path": "/x", "headers": [], "query_string": b""}
    return Request(scope, receive)


def _pipeline(store: LocalBlobStore, kind: ContentKind = ContentKind.BINARY) -> UploadPipeline:
    return UploadPipeline(store, "blob.bin", FileRule(kind=kind, max_bytes=DECLARED))


def test_receive_stops_waiting_for_a_quiet_body(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    receive = StallingReceive([b"a" * 1000, b"b" * 24])
    pipeline = _pipeline(store)
    assert len(list(store.list_objects(STAGING_PREFIX))) == 1  # the pipeline's staging file

    async def run() -> None:
        with anyio.fail_after(10):  # a bound for the test itself, should the code hang
            await receive_upload(_request(receive).stream(), pipeline, idle_timeout_s=0.2)

    started = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"for 0\.2 s \(after 1024 bytes\)"):
        anyio.run(run)
    assert 0.2 <= time.monotonic() - started < 5
    # The pending receive was cancelled, not left waiting, and the staging file is gone.
    assert receive.cancelled
    assert not receive.waiting
    assert list(store.list_objects(STAGING_PREFIX)) == []


def test_receive_without_a_timeout_waits_until_cancelled(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    receive = StallingReceive([b"a" * 10])

    async def run() -> None:
        with anyio.move_on_after(1.0):
            await receive_upload(_request(receive).stream(), _pipeline(store))

    anyio.run(run)  # no RequestTimeout: only the test's own deadline ended the wait
    assert receive.cancelled
    # A cancelled request still removes its staging object.
    assert list(store.list_objects(STAGING_PREFIX)) == []


def test_receive_completes_a_body_that_arrives_in_time(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    parts = [b"x" * 700_000, b"y" * 700_000, b"z"]  # more than one batch for the thread

    async def receive() -> Message:
        await anyio.sleep(0.05)
        last = len(parts) == 1
        return {"type": "http.request", "body": parts.pop(0), "more_body": not last}

    async def run() -> UploadResult:
        request = Request({"type": "http", "method": "PUT", "path": "/x", "headers": []},
                          receive)
        return await receive_upload(request.stream(), _pipeline(store), idle_timeout_s=0.5)

    result = anyio.run(run)
    assert result.size == 1_400_001
    assert [o.key for o in store.list_objects(STAGING_PREFIX)] == [result.staged.key]


def test_refused_content_stops_reading_the_body(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    # A pickle (refused on its first batch), then a client that would keep the server
    # waiting: the refusal must come at once, not after a wait for more body.
    receive = StallingReceive([b"\x80\x04" + bytes(2 * 1024 * 1024)])

    async def run() -> None:
        with anyio.fail_after(10):
            await receive_upload(_request(receive).stream(), _pipeline(store), idle_timeout_s=None)

    with pytest.raises(UnsupportedFile, match="pickle"):
        anyio.run(run)
    assert not receive.waiting
    assert list(store.list_objects(STAGING_PREFIX)) == []
