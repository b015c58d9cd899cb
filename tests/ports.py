"""A free loopback port, for the servers the tests start (not a fixture module, so the root
conftest can import it before pytest loads the fixture modules it names)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
