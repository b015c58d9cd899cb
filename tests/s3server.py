"""Real S3-compatible servers for tests, over HTTP on loopback: moto's standalone server
and s3rver, a small independent implementation in Node.js.

Each runs in a child process, so boto3 talks to it exactly as it would to MinIO or AWS
(signing, HTTP, multipart) and nothing is patched into this process. Two servers keep
the storage code to what S3-compatible servers share: moto implements nearly all of
S3, s3rver only its core (no multipart copy, no listing or aborting of multipart
uploads, no bucket policies), like many of the servers deltahub may meet.

One server of each kind serves the whole session (each is started the first time a
test needs it); every test takes a fresh bucket. Fixtures:
- `s3_backend`: each server in turn, so a test that takes it runs on both;
- `s3_server` (moto) and `s3_bucket`: for tests that need what only moto has;
- `s3rver_server`.

s3rver is an npm package that `make test` installs into .s3rver/. If it is missing, its
tests FAIL rather than skip, so that CI never passes without them (the same policy as
PostgreSQL in tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from registry.settings import Settings
from registry.storage.s3 import S3BlobStore
from registry.storage.s3.client import make_s3_client
from tests.ports import free_port

START_TIMEOUT_SECONDS = 30.0
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding

REPO = Path(__file__).resolve().parent.parent
S3RVER_BIN = REPO / ".s3rver" / "node_modules" / ".bin" / "s3rver"
S3RVER_INSTALL = "npm install --prefix .s3rver --no-audit --no-fund s3rver@3.7.1"
S3RVER_CREDENTIAL = "S3RVER"  # s3rver's built-in account: access key id and secret alike


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    kind: str = "moto"  # or "s3rver"
    access_key_id: str = "testing"  # moto takes any
    secret_access_key: str = "testing"
    data_dir: Path | None = None  # where s3rver keeps its buckets

    @property
    def has_bucket_policies(self) -> bool:
        return self.kind == "moto"

    @property
    def lists_uploads(self) -> bool:
        """Whether ListMultipartUploads works (s3rver answers NotImplemented)."""
        return self.kind == "moto"

    def settings(self, **overrides: Any) -> Settings:
        """Settings that point boto3 at this server with its credentials."""
        values: dict[str, Any] = {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": self.access_key_id,
            "S3_SECRET_ACCESS_KEY": self.secret_access_key,
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

    def unfinished_uploads(self, bucket: str) -> list[str]:
        """Keys of the multipart uploads in `bucket` that were neither completed nor
        aborted."""
        if self.data_dir is None:
            listed = self.client.list_multipart_uploads(Bucket=bucket)
            return sorted(upload["Key"] for upload in listed.get("Uploads", []))
        # s3rver cannot list them (NotImplemented); it keeps each in a folder of its own.
        uploads = self.data_dir / bucket / "._S3rver_uploads"
        if not uploads.is_dir():
            return []
        return sorted((upload / "key").read_text() for upload in uploads.iterdir())


# The servers this session started, by endpoint: what a test finds from a store.
_running: dict[str, S3Server] = {}


def server_of(store: S3BlobStore) -> S3Server:
    """The test server a store's client talks to."""
    return _running[store.client.meta.endpoint_url]


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


def _start(what: str, command: Callable[[int], list[str]],
           log: Any) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(START_ATTEMPTS):
        port = free_port()
        proc = subprocess.Popen(command(port), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(port):
                return proc, port
            time.sleep(0.05)
        _stop(proc)
    log.seek(0)
    output = log.read().decode(errors="replace")[-4000:]
    raise RuntimeError(f"{what} did not start:\n{output}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _serving(kind: str, command: Callable[[int], list[str]], what: str,
             **server: Any) -> Iterator[S3Server]:
    with tempfile.TemporaryFile() as log:
        proc, port = _start(what, command, log)
        running = S3Server(f"http://127.0.0.1:{port}", kind, **server)
        _running[running.endpoint_url] = running
        try:
            yield running
        finally:
            del _running[running.endpoint_url]
            _stop(proc)


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto's server on a free loopback port; stop it on exit."""

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]

    with _serving("moto", command, "moto_server (is moto[server] installed?)") as server:
        yield server


@contextlib.contextmanager
def running_s3rver() -> Iterator[S3Server]:
    """Start s3rver on a free loopback port, with its buckets in a temporary directory;
    stop it on exit."""
    node = shutil.which("node")
    if node is None or not S3RVER_BIN.exists():
        missing = "Node.js (`node`)" if node is None else f"s3rver ({S3RVER_BIN})"
        pytest.fail(f"{missing} is missing, and the S3 tests need it: run `make test`, "
                    f"or `{S3RVER_INSTALL}` in {REPO} (Node.js 18 or later)")
    with tempfile.TemporaryDirectory(prefix="s3rver-") as data:

        def command(port: int) -> list[str]:
            return [node, str(S3RVER_BIN), "--address", "127.0.0.1", "--port", str(port),
                    "--directory", data, "--silent"]

        with _serving("s3rver", command, "s3rver", data_dir=Path(data),
                      access_key_id=S3RVER_CREDENTIAL,
                      secret_access_key=S3RVER_CREDENTIAL) as server:
            yield server


S3_SERVER_FIXTURES = {"moto": "s3_server", "s3rver": "s3rver_server"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's server."""
    with running_s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3rver_server() -> Iterator[S3Server]:
    with running_s3rver() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket on moto, so tests never see each other's objects."""
    return s3_server.create_bucket()


@pytest.fixture(params=[pytest.param("moto", marks=pytest.mark.s3),
                        pytest.param("s3rver", marks=pytest.mark.s3)])
def s3_backend(request: pytest.FixtureRequest) -> S3Server:
    """Each S3 server in turn: a test that takes this runs on moto and on s3rver."""
    server: S3Server = request.getfixturevalue(S3_SERVER_FIXTURES[request.param])
    return server
