"""A real S3-compatible server for tests: moto's standalone server, over HTTP on loopback.

It runs in a child process, so boto3 talks to it exactly as it would to MinIO or AWS
(signing, HTTP, multipart) and nothing of moto is patched into this process. One
server serves the whole session; every test takes a fresh bucket from `s3_bucket`.

tests/conftest.py registers the fixtures by importing them.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from registry.settings import Settings
from registry.storage.s3 import make_s3_client

START_TIMEOUT_SECONDS = 30.0
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def settings(self, **overrides: Any) -> Settings:
        """Settings that point boto3 at this server with dummy credentials."""
        values: dict[str, Any] = {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": "testing",
            "S3_CONNECT_TIMEOUT_SECONDS": 2.0,
            "S3_READ_TIMEOUT_SECONDS": 30.0,
            "S3_MAX_ATTEMPTS": 2,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # ignore a developer's .env

    @functools.cached_property
    def client(self) -> Any:
        """One client for the session: boto3 clients are thread-safe, and each new one
        spends ~0.1 s loading the service model."""
        return make_s3_client(self.settings())

    def create_bucket(self) -> str:
        bucket = f"test-{uuid.uuid4().hex[:20]}"
        self.client.create_bucket(Bucket=bucket)
        return bucket


def _answers(port: int) -> bool:
    # http.client rather than urllib: no proxy settings can get in the way on loopback.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/")  # ListBuckets
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _start(log: Any) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(START_ATTEMPTS):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(port):
                return proc, port
            time.sleep(0.05)
        _stop(proc)
    log.seek(0)
    output = log.read().decode(errors="replace")[-4000:]
    raise RuntimeError(f"moto_server did not start (is moto[server] installed?):\n{output}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto's server on a free loopback port; stop it on exit."""
    with tempfile.TemporaryFile() as log:
        proc, port = _start(log)
        try:
            yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket, so tests never see each other's objects."""
    return s3_server.create_bucket()
