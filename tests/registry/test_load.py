"""The registry under load, as deployed: `deltahub serve` in its own process (issue 8).

Two things must hold however busy the server is. Every answer is a success or a bounded,
honest refusal (503 JSON `{"error", "detail"}` with `Retry-After`), never a 500, never a
hang. And what clients were told was stored is exactly what is stored: every push that got
a 2xx finalize is listed once with its version, and nothing else appears.

The second test takes SQLite's write lock from another process: reads must still answer,
writes must give up within the configured bounds, and writes must work again afterwards.

Latency percentiles are printed (`pytest -s`), not asserted: speed is measured by
benchmarks/load_bench.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.registry.conftest import TinyModels
from tests.registry.loadclients import (
    BASE,
    REQUEST_TIMEOUT_SECONDS,
    SEEDS,
    Recorder,
    refusal_problem,
    seed,
)
from tests.registry.serverproc import ServerProcess, issue_admin_token, serve

CLIENTS = 200
WRITER_EVERY = 5  # every fifth client pushes, the others read: 40 writers, 160 readers
LOAD_SECONDS = 15.0
RETRY_PAUSE_SECONDS = 0.5  # after a 503: shorter than Retry-After, to keep the load on
FINALIZE_RETRIES = 3
LISTING_PAGE = 7  # small, so the final check walks several pages of each name
READ_SUCCESS_SHARE = 0.5  # a server that sheds most reads has not survived the load


@dataclass
class Writer:
    """One pushing client's own record, checked against the listings afterwards."""

    name: str
    drafts: set[int] = field(default_factory=set)  # ids of 201 POST /adapters
    confirmed: dict[int, int] = field(default_factory=dict)  # id -> version (2xx finalize)
    unknown: set[int] = field(default_factory=set)  # finalize never answered 2xx
    alias_targets: list[int] = field(default_factory=list)  # versions moved to, in order
    last_alias_ok: bool = False


@dataclass(frozen=True)
class Lora:
    config: dict[str, Any]
    weights: bytes
    weights_sha256: str

    @classmethod
    def read(cls, directory: Path) -> Lora:
        weights = (directory / "adapter_model.safetensors").read_bytes()
        return cls(json.loads((directory / "adapter_config.json").read_text()), weights,
                   hashlib.sha256(weights).hexdigest())

    def config_bytes(self, alpha: int) -> bytes:
        """The config with its own lora_alpha: distinct content, hence a new version."""
        return json.dumps({**self.config, "lora_alpha": alpha}).encode()


async def push_loop(client: httpx.AsyncClient, rec: Recorder, writer: Writer, index: int,
                    lora: Lora, deadline: float) -> None:
    """Push new content under the writer's name, then move its `stable` alias to it."""
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        draft = await rec.call(client, "push: create", {201}, "POST", "/adapters",
                               json={"name": writer.name, "base": BASE, "kind": "lora"})
        if draft is None or draft.status_code != 201:
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            continue
        adapter_id: int = draft.json()["id"]
        writer.drafts.add(adapter_id)
        uploads = (("adapter_config.json", lora.config_bytes(1000 * index + attempt)),
                   ("adapter_model.safetensors", lora.weights))
        uploaded = True
        for filename, content in uploads:
            if time.monotonic() >= deadline:
                return  # an abandoned draft stays pending: never listed
            put = await rec.call(client, "push: upload", {201}, "PUT",
                                 f"/adapters/{adapter_id}/files/{filename}", content=content)
            uploaded = uploaded and put is not None and put.status_code == 201
        if not uploaded:
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            continue
        version = await finalize(client, rec, writer, adapter_id, deadline)
        if version is None or time.monotonic() >= deadline:
            continue
        writer.alias_targets.append(version)
        moved = await rec.call(client, "alias move", {200}, "PUT",
                               f"/adapters/{writer.name}@{version}/aliases/stable")
        writer.last_alias_ok = moved is not None and moved.status_code == 200


async def finalize(client: httpx.AsyncClient, rec: Recorder, writer: Writer, adapter_id: int,
                   deadline: float) -> int | None:
    """Finalize, retrying after a 503 (a retry of a committed finalize answers 200)."""
    expected = {201}  # the content is new under this name: a first finalize makes a version
    for _ in range(FINALIZE_RETRIES):
        final = await rec.call(client, "push: finalize", expected, "POST",
                               f"/adapters/{adapter_id}/finalize")
        if final is not None and final.status_code in expected:
            body = final.json()
            if body["id"] != adapter_id or body["name"] != writer.name:
                rec.problems.append(f"finalize of draft {adapter_id} ({writer.name}) answered "
                                    f"adapter {body['id']} ({body['name']})")
            writer.confirmed[adapter_id] = body["version"]
            return int(body["version"])
        if final is None or final.status_code != 503 or time.monotonic() >= deadline:
            break
        expected = {200, 201}
        await asyncio.sleep(RETRY_PAUSE_SECONDS)
    writer.unknown.add(adapter_id)
    return None


async def read_loop(client: httpx.AsyncClient, rec: Recorder, index: int, lora: Lora,
                    seed_ids: list[int], deadline: float) -> None:
    """Cycle through what serving systems and people read, including what writers write."""
    step = index
    while time.monotonic() < deadline:
        step += 1
        seed = SEEDS[step % len(SEEDS)]
        match step % 6:
            case 0:
                await rec.call(client, "list adapters by base", {200}, "GET", "/adapters",
                               params={"base": BASE})
            case 1:
                await rec.call(client, "list models", {200}, "GET", "/models")
            case 2:
                ref = (seed, f"{seed}@1", "seed-0:prod", str(seed_ids[step % len(seed_ids)]))
                await rec.call(client, "get adapter", {200}, "GET",
                               f"/adapters/{ref[step // 6 % len(ref)]}")
            case 3:
                got = await rec.call(client, "download file", {200}, "GET",
                                     f"/adapters/{seed}/files/adapter_model.safetensors")
                if got is not None and got.status_code == 200 and (
                        hashlib.sha256(got.content).hexdigest() != lora.weights_sha256):
                    rec.problems.append(f"download of {seed}'s weights: {len(got.content)} "
                                        "bytes that are not the pushed file")
            case 4:
                writer = (step * 7 + index) % CLIENTS // WRITER_EVERY * WRITER_EVERY
                await rec.call(client, "list adapters by name", {200}, "GET", "/adapters",
                               params={"name": f"load-{writer}"})
            case _:
                await rec.call(client, "get adapter", {200}, "GET", f"/adapters/{seed}")


async def run_load(server: ServerProcess, token: str, lora: Lora, seed_ids: list[int],
                   writers: dict[int, Writer]) -> tuple[Recorder, float]:
    rec = Recorder()
    # A client (and connection) per loop, 200 in all: one shared httpx pool scans its
    # connections on every request, costing this process more CPU than the server.
    clients = [httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=1),
                                 timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
                                 headers={"Authorization": f"Bearer {token}"})
               for _ in range(CLIENTS)]
    start = time.monotonic()
    deadline = start + LOAD_SECONDS
    loops = [push_loop(clients[i], rec, writers[i], i, lora, deadline) if i in writers
             else read_loop(clients[i], rec, i, lora, seed_ids, deadline)
             for i in range(CLIENTS)]
    try:
        # Each loop starts no request after the deadline and each request ends within the
        # client timeout; this outer bound only catches a loop that breaks those rules.
        await asyncio.wait_for(asyncio.gather(*loops),
                               LOAD_SECONDS + 2 * REQUEST_TIMEOUT_SECONDS)
    except TimeoutError:
        rec.problems.append("the load phase did not end within its bound")
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return rec, time.monotonic() - start


def print_summary(title: str, rec: Recorder, seconds: float) -> None:
    total = sum(len(v) for v in rec.latencies.values())
    print(f"\n{title}: {total} answers in {seconds:.1f} s ({total / seconds:.0f}/s), "
          f"{CLIENTS} clients, {len(rec.problems)} problems")
    print(f"{'request':<24} {'count':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}  statuses")
    for kind in sorted(rec.latencies):
        values = sorted(rec.latencies[kind])
        cuts = statistics.quantiles(values, n=100) if len(values) > 1 else values * 99
        statuses = ", ".join(f"{s}×{n}" for s, n in sorted(rec.statuses[kind].items()))
        print(f"{kind:<24} {len(values):>6} {cuts[49] * 1000:>8.1f} {cuts[89] * 1000:>8.1f} "
              f"{cuts[98] * 1000:>8.1f} {values[-1] * 1000:>8.1f}  {statuses}")


def listed(client: httpx.Client, **params: str) -> Iterator[dict[str, Any]]:
    """Every adapter a filtered listing returns, following next_page_token to the end."""
    token: str | None = None
    for _ in range(10_000):  # a bound far above any listing here; a loop would not end
        page_params = {**params, "limit": str(LISTING_PAGE)}
        if token is not None:
            page_params["page_token"] = token
        page = client.get("/adapters", params=page_params)
        assert page.status_code == 200, page.text
        body = page.json()
        yield from body["items"]
        token = body["next_page_token"]
        if token is None:
            return
    raise AssertionError(f"GET /adapters {params} never ended its pages")


def check_stored(client: httpx.Client, writers: dict[int, Writer], seed_ids: list[int]
                 ) -> list[str]:
    """What the listings show against what the writers were told; the mismatches."""
    wrong: list[str] = []
    for writer in writers.values():
        items = list(listed(client, name=writer.name))
        ids = [a["id"] for a in items]
        if len(ids) != len(set(ids)):
            wrong.append(f"{writer.name}: listed more than once: "
                         f"{[i for i, n in Counter(ids).items() if n > 1]}")
        versions = {a["id"]: a["version"] for a in items}
        for adapter_id, version in writer.confirmed.items():
            if versions.get(adapter_id) != version:
                wrong.append(f"{writer.name}: finalize answered id {adapter_id} version "
                             f"{version}; listed as version {versions.get(adapter_id)}")
        # A finalize that never answered 2xx may or may not have committed; anything
        # else listed under the name (a draft that was not finalized) must not be.
        strays = set(versions) - set(writer.confirmed) - writer.unknown
        if strays:
            wrong.append(f"{writer.name}: lists adapters no finalize made: {sorted(strays)}")
        if sorted(versions.values()) != list(range(1, len(versions) + 1)):
            wrong.append(f"{writer.name}: versions {sorted(versions.values())} are not 1..n")
        if writer.last_alias_ok:
            stable = client.get(f"/adapters/{writer.name}:stable")
            got = stable.json().get("version") if stable.status_code == 200 else stable.text
            if got != writer.alias_targets[-1]:
                wrong.append(f"{writer.name}:stable is {got!r}; the last move answered 200 "
                             f"for version {writer.alias_targets[-1]}")
    everything = [a["id"] for a in listed(client)]
    known = set(seed_ids).union(*(w.drafts for w in writers.values()))
    if unknown := set(everything) - known:
        wrong.append(f"listed adapters no client pushed: {sorted(unknown)[:20]}")
    if len(everything) != len(set(everything)):
        wrong.append("GET /adapters lists some adapter more than once")
    by_base = [a["id"] for a in listed(client, base=BASE)]
    if sorted(by_base) != sorted(everything):
        wrong.append(f"GET /adapters?base={BASE} lists {len(by_base)} adapters, "
                     f"GET /adapters {len(everything)}")
    return wrong


@pytest.mark.slow
def test_two_hundred_clients_get_answers_and_lose_no_push(
        database_url: str, tiny_models: TinyModels, tmp_path: Path) -> None:
    token = issue_admin_token(database_url)
    lora = Lora.read(tiny_models.lora)
    writers = {i: Writer(f"load-{i}") for i in range(0, CLIENTS, WRITER_EVERY)}
    with serve(database_url, tmp_path / "server") as server:
        seed_ids = seed(server, token, tiny_models)
        rec, seconds = asyncio.run(run_load(server, token, lora, seed_ids, writers))
        print_summary(f"load on {database_url.split(':', 1)[0]}", rec, seconds)
        with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_SECONDS,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            try:
                wrong = check_stored(client, writers, seed_ids)
            except (AssertionError, httpx.HTTPError) as exc:
                wrong = [f"the listings after the load failed: {type(exc).__name__}: {exc}"]
        log = server.log_tail(3000)

    failures = rec.problems + wrong
    # Liveness, not speed: a server that refuses every write or most reads with 503 would
    # pass the checks above. How many pushes each writer completes depends on the cores.
    pushed = sum(len(w.confirmed) for w in writers.values())
    idle = sum(not w.confirmed for w in writers.values())
    print(f"{pushed} pushes finalized; {idle} of {len(writers)} writers finalized none")
    if pushed == 0:
        failures.append("no push was finalized during the load")
    reads = [kind for kind in rec.statuses if not kind.startswith(("push", "alias"))]
    answered = sum(sum(rec.statuses[k].values()) for k in reads)
    ok = sum(rec.statuses[k][200] for k in reads)
    if answered == 0 or ok / answered < READ_SUCCESS_SHARE:
        failures.append(f"only {ok} of {answered} reads answered 200")
    assert not failures, (f"{len(failures)} failures, first 25:\n" + "\n".join(failures[:25])
                          + f"\n--- server log tail ---\n{log}")


# -- another process holds SQLite's write lock -----------------------------------------

LOCK_TIMEOUT_SECONDS = 1
QUEUE_TIMEOUT_SECONDS = 2
WRITE_BOUND_SECONDS = 5.0  # lock timeout + queue timeout + slack for a busy 2-core box
READ_BOUND_SECONDS = 2.0  # reads wait on no lock; a read that did would take ≥ 1 s and 503
BLOCKED_WRITES = 4

# Holds the write lock (BEGIN IMMEDIATE) until its stdin closes: the test closes it to
# release the lock, and if the test dies the pipe closes and the lock goes with it.
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


LOCKED_CLIENT_TIMEOUT_SECONDS = 10.0  # twice the write bound: a hang shows as "no answer"


@dataclass(frozen=True)
class Timed:
    label: str
    seconds: float
    response: httpx.Response | None  # None: no answer within the client timeout

    @property
    def status(self) -> int | str:
        return self.response.status_code if self.response is not None else "no answer"

    def __str__(self) -> str:
        body = self.response.text[:200] if self.response is not None else ""
        return f"{self.label}: {self.status} in {self.seconds:.2f} s {body!r}"


async def timed(client: httpx.AsyncClient, label: str, method: str, url: str,
                after: float = 0.0, **kwargs: Any) -> Timed:
    await asyncio.sleep(after)
    start = time.monotonic()
    try:
        response: httpx.Response | None = await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        response = None
    return Timed(label, time.monotonic() - start, response)


async def while_locked(server: ServerProcess, token: str) -> list[Timed]:
    """Writes that must give up, and reads sent while those writes wait, all at once."""
    async with httpx.AsyncClient(base_url=server.url, timeout=LOCKED_CLIENT_TIMEOUT_SECONDS,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        calls = [timed(client, f"write {i}", "POST", "/models",
                       json={"name": f"locked-{i}", "kind": "base"})
                 for i in range(BLOCKED_WRITES)]
        # Reads at several moments of the writes' wait: on the lock, then in the queue.
        for after in (0.3, 1.2, 2.5):
            calls += [
                timed(client, f"read models @{after}s", "GET", "/models", after),
                timed(client, f"read adapters @{after}s", "GET", "/adapters", after,
                      params={"base": BASE}),
                timed(client, f"readyz @{after}s", "GET", "/readyz", after),
            ]
        return list(await asyncio.gather(*calls))


async def after_release(server: ServerProcess, token: str) -> list[Timed]:
    async with httpx.AsyncClient(base_url=server.url, timeout=LOCKED_CLIENT_TIMEOUT_SECONDS,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        results = [await timed(client, "after release: write", "POST", "/models",
                               json={"name": "after-release", "kind": "base"})]
        for i in range(BLOCKED_WRITES):
            results.append(await timed(client, f"after release: refused write {i} stored?",
                                       "GET", f"/models/locked-{i}"))
        return results


@contextlib.contextmanager
def write_lock_held(db_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding SQLite's write lock on `db_path` until the block ends."""
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None
        ready, _, _ = select.select([locker.stdout], [], [], 15)
        line = locker.stdout.readline().strip() if ready else ""
        assert line == "locked", "the locker process did not take the write lock"
        yield locker
    finally:
        if locker.stdin is not None:
            locker.stdin.close()  # EOF: the locker rolls back and exits
        try:
            locker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            locker.kill()
            locker.wait(timeout=10)
        if locker.stdout is not None:
            locker.stdout.close()


@pytest.mark.slow
def test_reads_answer_and_writes_refuse_in_time_while_another_process_holds_the_lock(
        sqlite_template: Path, tiny_models: TinyModels, tmp_path: Path) -> None:
    db_path = tmp_path / "deltahub.db"
    shutil.copyfile(sqlite_template, db_path)
    url = f"sqlite:///{db_path}"
    token = issue_admin_token(url)
    env = {"DELTAHUB_DB_LOCK_TIMEOUT_SECONDS": str(LOCK_TIMEOUT_SECONDS),
           "DELTAHUB_DB_QUEUE_TIMEOUT_SECONDS": str(QUEUE_TIMEOUT_SECONDS)}
    with serve(url, tmp_path / "server", env) as server:
        seed(server, token, tiny_models)
        with write_lock_held(db_path) as locker:
            results = asyncio.run(while_locked(server, token))
            assert locker.poll() is None, "the locker exited early: the lock was not held"
        # Once the lock is gone: a refused write left nothing behind, and writes work.
        results += asyncio.run(after_release(server, token))
        log = server.log_tail(3000)

    failures = []
    for r in results:
        want, bound = 200, READ_BOUND_SECONDS
        if r.label.startswith("write"):
            want, bound = 503, WRITE_BOUND_SECONDS
        elif r.label.startswith("readyz"):
            # 200: the database answers reads, so the server is ready to serve them; a
            # probe failing here would take a working replica out of rotation.
            bound = WRITE_BOUND_SECONDS
        elif r.label.startswith("after release: write"):
            want, bound = 201, WRITE_BOUND_SECONDS
        elif r.label.startswith("after release: refused"):
            want = 404
        if r.status != want:
            failures.append(f"{r.label}: {r.status}, expected {want}")
        elif want == 503 and r.response is not None and (
                problem := refusal_problem(r.response)) is not None:
            failures.append(f"{r.label}: {problem}")
        if r.seconds > bound:
            failures.append(f"{r.label}: took {r.seconds:.1f} s, bound {bound:.0f} s")
    report = "\n".join(str(r) for r in results)
    print(f"\nwith the write lock held by another process:\n{report}")
    assert not failures, ("\n".join(failures) + f"\n--- every request ---\n{report}"
                          f"\n--- server log tail ---\n{log}")
