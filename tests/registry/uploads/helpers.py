"""What the upload tests share: hostile request targets, and a way to send them unchanged."""

from __future__ import annotations

import http.client
import json

from tests.conftest import LiveServer

# Raw request targets, sent byte for byte: no client-side normalisation of `..`.
PATH_TRICKS = [
    "../config.json",
    "..%2fconfig.json",
    "%2e%2e%2fconfig.json",
    "%252e%252e%252fconfig.json",
    "..%5cconfig.json",
    "..\\config.json",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "config.json%00",
    "config.json%00.safetensors",
    "C:%5cwindows%5cconfig.json",
    "sub/config.json",
]


def raw(server: LiveServer, method: str, target: str, headers: dict[str, str],
        body: bytes = b"") -> tuple[int, str]:
    """(status, error name) of a request sent with its target byte for byte."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body)["error"] if response.status >= 400 else ""
    finally:
        conn.close()
