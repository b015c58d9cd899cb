"""`deltahub serve --workers 2` as deployed: two API processes on one socket (issue 29).

A keep-alive connection stays with the process that accepted it, so `/healthz`'s `pid` on a
connection names the process that answers everything else sent on it: the tests hold one
connection to each process and check that what one process did (a revocation, a sign-in)
holds in the other on the very next request. Then: 200 clients listing at once get no
5xx; a process killed is replaced; a SIGTERM with an upload in flight lets it finish (or
cuts it, past SHUTDOWN_TIMEOUT_SECONDS), leaves no staging object, exits 0, and the
draft resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.registry.api import register_model
from tests.registry.conftest import TinyModels
from tests.registry.loadclients import BASE, REQUEST_TIMEOUT_SECONDS, Recorder, seed
from tests.registry.serverproc import (
    STARTED_LINE,
    STOP_TIMEOUT_SECONDS,
    ServerProcess,
    issue_admin_token,
    serve,
)

pytestmark = pytest.mark.slow  # each test starts `deltahub serve` (two processes) for real

WORKERS = 2
CONNECT_BATCH = 8  # connections opened before any is used: the processes share them out
MAX_BATCHES = 50
CLIENTS = 200
LISTINGS_PER_CLIENT = 5
WEIGHTS = "adapter_model.safetensors"
# Waiting for the server's own log lines (a bound on a wait, never on speed).
LOG_WAIT_SECONDS = 60.0


class Pinned:
    """One keep-alive connection, and the API process that accepted it."""

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        status, _, body = self.request("GET", "/healthz")
        assert status == 200, body
        self.pid: int = json.loads(body)["pid"]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None
                ) -> tuple[int, http.client.HTTPMessage, bytes]:
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        return response.status, response.msg, response.read()


@contextlib.contextmanager
def one_connection_per_process(server: ServerProcess) -> Iterator[dict[int, Pinned]]:
    port = urlsplit(server.url).port
    assert port is not None
    found: dict[int, Pinned] = {}
    opened: list[http.client.HTTPConnection] = []
    try:
        for _ in range(MAX_BATCHES):
            batch = [http.client.HTTPConnection("127.0.0.1", port,
                                                timeout=REQUEST_TIMEOUT_SECONDS)
                     for _ in range(CONNECT_BATCH)]
            opened += batch
            for conn in batch:
                conn.connect()
            for conn in batch:
                pinned = Pinned(conn)
                found.setdefault(pinned.pid, pinned)
            if len(found) == WORKERS:
                break
        assert len(found) == WORKERS, (
            f"{len(opened)} connections were all answered by process(es) {sorted(found)}"
            f"\n--- server log tail ---\n{server.log_tail()}")
        yield found
    finally:
        for conn in opened:
            conn.close()


def parent_of(pid: int) -> int:
    # /proc/<pid>/stat: after the ")" that ends the command name, state then ppid.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cookies(headers: http.client.HTTPMessage) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for line in headers.get_all("Set-Cookie") or []:
        jar.load(line)
    return {name: morsel.value for name, morsel in jar.items()}


def test_both_processes_answer_and_agree_on_tokens_and_sign_ins(
        database_url: str, tmp_path: Path) -> None:
    admin = issue_admin_token(database_url)
    bearer = {"Authorization": f"Bearer {admin}"}
    with serve(database_url, tmp_path / "server", workers=WORKERS) as server, \
            one_connection_per_process(server) as by_pid:
        # (a) Two processes answered, both the supervisor's children (not the supervisor).
        assert all(parent_of(pid) == server.process.pid for pid in by_pid), by_pid
        first, second = by_pid.values()

        # (b) A token revoked through one process is refused by each on its next request.
        status, _, body = first.request("POST", "/tokens", json.dumps(
            {"name": "doomed", "scopes": ["read"]}).encode(),
            {**bearer, "Content-Type": "application/json"})
        assert status == 201, body
        doomed = json.loads(body)
        reader = {"Authorization": f"Bearer {doomed['token']}"}
        for pinned in (first, second):
            status, _, body = pinned.request("GET", "/adapters", headers=reader)
            assert status == 200, (pinned.pid, body)
        status, _, body = first.request("DELETE", f"/tokens/{doomed['id']}", headers=bearer)
        assert status == 200, body
        for pinned in (second, first):
            status, _, body = pinned.request("GET", "/adapters", headers=reader)
            assert status == 401, (f"process {pinned.pid} still took the revoked token: "
                                   f"{status} {body!r}")

        # (c) The sign-in form of one process, posted to the other (its CSRF token), and
        # the session cookie that one sets, honoured by both.
        status, headers, body = first.request("GET", "/ui/signin")
        assert status == 200, body
        nonce = cookies(headers)["deltahub_signin"]
        found = re.search(rb'name="csrf_token" value="([^"]+)"', body)
        assert found is not None, body[:2000]
        form = urlencode({"token": admin, "csrf_token": found.group(1).decode(),
                          "next": "/ui/models"}).encode()
        status, headers, body = second.request(
            "POST", "/ui/signin", form, {"Content-Type": "application/x-www-form-urlencoded",
                                         "Cookie": f"deltahub_signin={nonce}"})
        assert status == 303, (status, body[:2000])
        session = cookies(headers)["deltahub_session"]
        for pinned in (first, second):
            status, headers, body = pinned.request(
                "GET", "/ui/models", headers={"Cookie": f"deltahub_session={session}"})
            assert status == 200, (f"process {pinned.pid} refused the session cookie: "
                                   f"{status} {headers.get('Location')}")


async def listing_clients(server: ServerProcess, token: str) -> tuple[Recorder, set[int]]:
    """CLIENTS clients, one connection each, listing the base's adapters at once; the
    answers, and the processes that took the connections."""
    rec = Recorder()
    pids: set[int] = set()
    clients = [httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=1),
                                 timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
                                 headers={"Authorization": f"Bearer {token}"})
               for _ in range(CLIENTS)]

    async def one(client: httpx.AsyncClient) -> None:
        health = await rec.call(client, "healthz", {200}, "GET", "/healthz")
        if health is not None and health.status_code == 200:
            pids.add(health.json()["pid"])
        for _ in range(LISTINGS_PER_CLIENT):
            await rec.call(client, "list adapters by base", {200}, "GET", "/adapters",
                           params={"base": BASE})

    try:
        await asyncio.gather(*(one(client) for client in clients))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return rec, pids


def test_two_hundred_clients_listing_get_no_5xx(
        database_url: str, tiny_models: TinyModels, tmp_path: Path) -> None:
    token = issue_admin_token(database_url)
    with serve(database_url, tmp_path / "server", workers=WORKERS) as server:
        seed(server, token, tiny_models)
        start = time.monotonic()
        rec, pids = asyncio.run(listing_clients(server, token))
        seconds = time.monotonic() - start
        log = server.log_tail(3000)
    answers = sum(rec.statuses["list adapters by base"].values())
    print(f"\n{CLIENTS} clients, {WORKERS} processes: {answers} listings in {seconds:.1f} s "
          f"(listings/s: {answers / seconds:.0f}), statuses "
          f"{dict(rec.statuses['list adapters by base'])}, processes {sorted(pids)}")
    server_errors = {kind: {s: n for s, n in counts.items() if s >= 500}
                     for kind, counts in rec.statuses.items()}
    assert not rec.problems, "\n".join(rec.problems[:25]) + f"\n--- server log ---\n{log}"
    assert not any(server_errors.values()), f"{server_errors}\n--- server log ---\n{log}"
    assert answers == CLIENTS * LISTINGS_PER_CLIENT
    assert len(pids) == WORKERS, f"only process(es) {sorted(pids)} took connections"


def test_a_process_that_dies_is_replaced_and_the_stop_still_exits_0(
        database_url: str, tmp_path: Path) -> None:
    with serve(database_url, tmp_path / "server", workers=WORKERS) as server:
        with one_connection_per_process(server) as by_pid:
            victim = min(by_pid)
        os.kill(victim, signal.SIGKILL)
        wait_for_log(server, "starting another", 1)
        wait_for_log(server, STARTED_LINE, WORKERS + 1)
        with one_connection_per_process(server) as by_pid:
            assert victim not in by_pid
            assert all(parent_of(pid) == server.process.pid for pid in by_pid), by_pid
        server.process.send_signal(signal.SIGTERM)
        status = server.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        log = server.log_tail()
    assert status == 0, f"exit status {status}\n--- server log ---\n{log}"


def wait_for_log(server: ServerProcess, line: str, count: int) -> None:
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while server.log_path.read_text(errors="replace").count(line) < count:
        assert time.monotonic() < deadline, (f"{line!r} not logged {count} times\n"
                                             f"--- server log ---\n{server.log_tail()}")
        time.sleep(0.1)


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """What the socket sends up to `marker` or its end."""
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("body_arrives", [True, False], ids=["finishes", "cut"])
def test_sigterm_with_an_upload_in_flight_exits_0_and_leaves_no_staging(
        database_url: str, tiny_models: TinyModels, tmp_path: Path,
        body_arrives: bool) -> None:
    token = issue_admin_token(database_url)
    bearer = {"Authorization": f"Bearer {token}"}
    workdir = tmp_path / "server"
    weights = (tiny_models.lora / WEIGHTS).read_bytes()
    # Cut: the body never comes, so the upload outlives the shutdown's bound.
    env = {} if body_arrives else {"DELTAHUB_SHUTDOWN_TIMEOUT_SECONDS": "1"}
    with serve(database_url, workdir, env, workers=WORKERS) as server:
        with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            register_model(client, bearer, BASE, tiny_models.base)  # type: ignore[arg-type]
            draft = client.post("/adapters", json={"name": "mid-upload", "base": BASE,
                                                   "kind": "lora"}, headers=bearer)
            assert draft.status_code == 201, draft.text
        draft_id = draft.json()["id"]
        port = urlsplit(server.url).port
        with socket.create_connection(("127.0.0.1", port or 0),
                                      timeout=REQUEST_TIMEOUT_SECONDS) as sock:
            sock.sendall((f"PUT /adapters/{draft_id}/files/{WEIGHTS} HTTP/1.1\r\n"
                          f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                          f"Content-Length: {len(weights)}\r\nExpect: 100-continue\r\n\r\n"
                          ).encode())
            # The server asks for the body once the upload reads it: the request is in
            # flight inside the app.
            interim = read_until(sock, b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100"), interim
            sock.sendall(weights[:len(weights) // 2])
            server.process.send_signal(signal.SIGTERM)
            wait_for_log(server, "Shutting down", WORKERS)  # both stopped accepting
            if body_arrives:
                sock.sendall(weights[len(weights) // 2:])
            answer = read_until(sock, b"\r\n\r\n")
            status = server.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        log = server.log_tail()
    assert status == 0, f"exit status {status}\n--- server log ---\n{log}"
    if body_arrives:
        assert answer.startswith(b"HTTP/1.1 201"), f"{answer!r}\n--- server log ---\n{log}"
    else:
        assert not answer.startswith(b"HTTP/1.1 2"), answer
    staging = workdir / "blobs" / "staging"
    left = [p.name for p in staging.iterdir()] if staging.exists() else []
    assert left == [], f"staging objects left behind: {left}\n--- server log ---\n{log}"

    # The draft resumes on the next start: what is missing is uploaded, and it finalizes.
    with serve(database_url, workdir) as server, \
            httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        for path in sorted(tiny_models.lora.iterdir()):
            if path.is_file() and (path.name != WEIGHTS or not body_arrives):
                put = client.put(f"/adapters/{draft_id}/files/{path.name}",
                                 content=path.read_bytes(), headers=bearer)
                assert put.status_code == 201, put.text
        final = client.post(f"/adapters/{draft_id}/finalize", headers=bearer)
        assert final.status_code == 201, final.text
