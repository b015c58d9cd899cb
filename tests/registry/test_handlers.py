"""Error rendering over a real connection: a bug's 500 leaves the connection usable."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI

from tests.conftest import LiveServer

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_a_500_keeps_the_keep_alive_connection(app: FastAPI, live_server: LiveServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test-only/broken", broken)  # routes are looked up per request
    url = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.request("GET", "/test-only/broken")
        failed = connection.getresponse()
        body = json.loads(failed.read())
        assert failed.status == 500
        assert body["error"] == "InternalError"
        assert "a bug" not in body["detail"]  # nothing of the internals
        assert failed.getheader("connection") != "close"
        sock = connection.sock
        connection.request("GET", "/healthz")  # the same connection, not a new one
        again = connection.getresponse()
        assert again.status == 200
        assert json.loads(again.read())["status"] == "ok"
        assert connection.sock is sock
    finally:
        connection.close()
    assert "unhandled error in GET /test-only/broken" in caplog.text
