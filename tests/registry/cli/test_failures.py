"""Failures end in one line on stderr and a documented exit status; --debug adds the trace.

Against servers that misbehave on purpose, on loopback: none listening, one that never
answers, one that fails every request.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from typer.testing import Result

from registry.cli.app import app
from registry.cli.failures import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_STATUS_HELP,
    EXIT_UNAVAILABLE,
    CommandFailure,
    describe,
)
from registry.client import ChecksumMismatch, ClientError, ServerUnreachable
from tests.ports import free_port
from tests.registry.cli.conftest import runner


def run(url: str, *args: str, timeout: str = "60") -> Result:
    return runner.invoke(app, list(args), env={
        "DELTAHUB_URL": url, "DELTAHUB_TOKEN": "dh_test", "COLUMNS": "200",
        "DELTAHUB_TIMEOUT_SECONDS": timeout})


def one_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_server_listening() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(url, "ls", "adapters")
    assert result.exit_code == EXIT_UNAVAILABLE
    line = one_line(result)
    assert line.startswith("cannot reach the server")
    assert f"GET {url}/adapters" in line
    assert "DELTAHUB_URL" in line  # what to do


def test_debug_shows_the_traceback_first() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(url, "--debug", "ls", "models")
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "Traceback (most recent call last)" in result.stderr
    assert "httpx.ConnectError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("cannot reach the server")
    quiet = run(url, "ls", "models")
    assert "Traceback" not in quiet.stderr


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_server_that_does_not_answer_in_time(silent_server: str) -> None:
    result = run(silent_server, "show", "bot", timeout="0.5")
    assert result.exit_code == EXIT_UNAVAILABLE
    line = one_line(result)
    assert line.startswith("server too slow")
    assert f"GET {silent_server}/adapters/bot" in line
    assert "DELTAHUB_TIMEOUT_SECONDS" in line
    bad = run(silent_server, "show", "bot", timeout="soon")
    assert bad.exit_code == 2
    assert "DELTAHUB_TIMEOUT_SECONDS" in bad.stderr


class Failing(BaseHTTPRequestHandler):
    status = 500
    calls: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Failing.calls.append(self.path)
        body = json.dumps({"error": "InternalError" if self.status == 500 else "DatabaseBusy",
                           "detail": "something broke on our side"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=[500, 503])
def failing_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    handler = type("Handler", (Failing,), {"status": request.param})
    Failing.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", request.param
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_server_errors(failing_server: tuple[str, int]) -> None:
    url, status = failing_server
    result = run(url, "jobs", "ls")
    assert result.exit_code == EXIT_UNAVAILABLE
    line = one_line(result)
    assert f"({status})" in line
    assert "something broke on our side" in line
    assert f"GET {url}/jobs" in line
    # 503 says "come back": a GET asks again (4 tries); a 500 is not retried.
    assert len(Failing.calls) == (4 if status == 503 else 1)
    assert ("try again later" if status == 503 else "server's log") in line


@pytest.mark.parametrize(("error", "code", "words"), [
    (ClientError(401, "Unauthorized", "unknown token", method="GET", url="u"), EXIT_AUTH,
     "DELTAHUB_TOKEN"),
    (ClientError(403, "Forbidden", "needs push", method="PUT", url="u"), EXIT_AUTH,
     "scope"),
    (ClientError(404, "ModelNotFound", "no model 'x'", method="GET", url="u",
                 did_you_mean=["y"]), EXIT_NOT_FOUND, "did you mean 'y'?"),
    (ClientError(409, "NameTaken", "pick another name", method="POST", url="u"),
     EXIT_FAILED, "pick another name (POST u)"),
    (ClientError(405, "HTTPError", "Method Not Allowed", method="DELETE", url="u"),
     EXIT_FAILED, "upgrade the server"),
    (ServerUnreachable("PUT", "u", "the connection broke (reset)"), EXIT_UNAVAILABLE,
     "a push resumes"),
    (ChecksumMismatch("f", "a", "b", "u"), EXIT_FAILED, "pull again"),
    (FileNotFoundError(2, "No such file or directory", "/x/y"), EXIT_FAILED, "/x/y"),
    (CommandFailure("no database", "where", 8), 8, "where"),
])
def test_each_failure_has_its_status_and_advice(error: Exception, code: int,
                                                words: str) -> None:
    described = describe(error)
    assert described is not None
    what, detail, exit_code = described
    assert exit_code == code
    assert words in f"{what}: {detail}"


def test_a_bug_is_not_dressed_up() -> None:
    assert describe(KeyError("items")) is None


def test_help_documents_the_exit_statuses() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for line in EXIT_STATUS_HELP.splitlines()[1:]:
        assert line.replace("\\[", "[") in result.stdout
