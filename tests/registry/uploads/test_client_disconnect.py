"""A client that goes away mid-upload (Ctrl-C during a push) is one info line in the
server's log, not a traceback: it is no bug, and a push resumes."""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.conftest import LiveServer, Tokens
from tests.registry.conftest import TinyModels

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _send_half_and_hang_up(server: LiveServer, path: str, headers: dict[str, str],
                           body: bytes) -> None:
    where = urlsplit(server.url)
    with socket.create_connection((where.hostname, where.port)) as conn:
        head = (f"PUT {path} HTTP/1.1\r\nHost: {where.netloc}\r\n"
                f"Authorization: {headers['Authorization']}\r\n"
                f"Content-Length: {len(body)}\r\nContent-Type: application/octet-stream\r\n\r\n")
        conn.sendall(head.encode() + body[:len(body) // 2])


def _logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the server logged, once it logged something."""
    deadline = time.monotonic() + 30  # a bound on the wait, not a timing assertion
    while True:
        records = [r for r in caplog.records if r.levelno >= logging.INFO
                   and r.name.startswith(("deltahub", "uvicorn"))]
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


@pytest.mark.parametrize("owner", ["models", "datasets"])
def test_a_disconnect_mid_upload_is_one_info_line(live_server: LiveServer, client: TestClient,
                                                  tokens: Tokens, tiny_models: TinyModels,
                                                  caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  owner: str) -> None:
    body = {"name": "m", "kind": "base"} if owner == "models" else {"name": "m"}
    created = client.post(f"/{owner}", json=body, headers=tokens.push)
    assert created.status_code == 201, created.text
    filename = "model.safetensors" if owner == "models" else "text.txt"
    data = ((tiny_models.base / "model.safetensors").read_bytes() if owner == "models"
            else b"some words\n" * 200_000)
    caplog.set_level(logging.INFO)
    # uvicorn's own loggers do not propagate to the root, where caplog listens.
    monkeypatch.setattr(logging.getLogger("uvicorn.error"), "handlers", [caplog.handler])
    _send_half_and_hang_up(live_server, f"/{owner}/m/files/{filename}", tokens.push, data)
    mine = _logged(caplog)
    assert [(r.levelno, r.exc_info) for r in mine] == [(logging.INFO, None)], [
        r.getMessage() for r in mine]
    assert f"client disconnected during PUT /{owner}/m/files/{filename}" in mine[0].getMessage()
    # Nothing was kept: the draft still has no file.
    assert client.get(f"/{owner}/m", headers=tokens.read).json()["files"] == []
