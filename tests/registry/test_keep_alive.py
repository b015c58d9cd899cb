"""`deltahub serve` closes idle keep-alive connections after DELTAHUB_KEEP_ALIVE_SECONDS.

The default (65 s) outlives client pools' idle expiry, so the client is the side that
closes; uvicorn's own 5 s equals httpx's and raced it under load (a request sent as the
server closed came back "server disconnected without sending a response").
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from registry.settings import Settings
from tests.registry.serverproc import serve


def test_the_default_outlives_client_pools() -> None:
    assert Settings().KEEP_ALIVE_SECONDS > 60  # load balancers' usual idle timeout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_closes_an_idle_connection_after_the_setting(database_url: str,
                                                           tmp_path: Path) -> None:
    with serve(database_url, tmp_path / "server", {"DELTAHUB_KEEP_ALIVE_SECONDS": "1"}) as server:
        parts = urlsplit(server.url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert connection.sock is not None
            time.sleep(3)  # the setting's 1 s, with room for a busy machine
            assert connection.sock.recv(1) == b""  # closed by the server
        finally:
            connection.close()
