"""Events: commit → webhook received and commit → long-poll answered, and followers' cost.

`deltahub serve` runs in a process of its own (tests/registry/serverproc.py) with
DELTAHUB_WEBHOOK_ALLOW_PRIVATE=true; a webhook receiver listens on 127.0.0.1 in this
process. A pusher revokes tokens (each revocation commits one `token.revoked` event) at
--rate per second for --seconds; measured, per database:

- commit → webhook received and commit → long-poll answered (`GET /events?wait=`): from
  the event's `created_at` (stamped by the committing transaction just before its commit)
  to the receiver reading the POST / the follower getting its answer; p50, p99. The
  issue's aims on PostgreSQL at 10 events/s: p50 ≤ 100 ms, p99 ≤ 1 s;
- followers' cost: server CPU per request answered (listings from --listers closed-loop
  clients, pushes at --rate, follower answers) with no follower, with --followers that
  wait for a type never emitted (every commit is matched against them), and with ones
  that get every event. The issue's aim: followers add ≤ 5 % to the API's CPU per request.

    python benchmarks/events_bench.py                        # both databases, 20 s each
    python benchmarks/events_bench.py --db sqlite --seconds 5 --cpu-seconds 3  # smoke

PostgreSQL: DELTAHUB_TEST_POSTGRES_URL's server if set, else one started with the
`pgserver` package (as tests/conftest.py does); a database of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry.auth.service import create_token  # after the sys.path fix-up above
from registry.infra.engines import make_engine, make_session_factory, unit_of_work
from registry.infra.migrate import upgrade
from tests.registry.serverproc import ServerProcess, issue_admin_token, serve

AIM_P50_MS, AIM_P99_MS, AIM_CPU_PERCENT = 100.0, 1000.0, 5.0
# Cost run followers of a type the bench never emits: every commit is matched against
# them, none answers them (a serving fleet's followers of their own adapters' aliases).
IDLE_TYPES = "alias.removed"
DRAIN_SECONDS = 15.0  # after the last push, how long stragglers may still arrive
TIMEOUT = httpx.Timeout(60.0)


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Latencies:
    """Per database: commit → received, in milliseconds, and what went wrong."""

    pushed: int = 0
    webhook: dict[int, float] = field(default_factory=dict)  # event id → ms
    feed: dict[int, float] = field(default_factory=dict)
    statuses: Counter[int | str] = field(default_factory=Counter)  # of non-2xx answers
    duplicates: int = 0
    recording: bool = True  # the receiver records only during the latency run


@dataclass
class Cost:
    followers: int
    types: str  # what the followers follow
    requests: int = 0  # listings
    pushes: int = 0
    server_cpu: float = 0.0
    follower_answers: int = 0

    @property
    def cpu_ms(self) -> float:
        """Server CPU per request answered: listings, pushes and follower answers."""
        answered = self.requests + self.pushes + self.follower_answers
        return self.server_cpu * 1000 / answered if answered else float("nan")


@contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
        import pgserver
    pgdata = Path(tempfile.mkdtemp(prefix="dh-pg-", dir="/tmp"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]
    try:
        socket_dir = make_url(server.get_uri()).query["host"]
        yield f"postgresql+psycopg://postgres@/postgres?host={socket_dir}"
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@contextmanager
def database(kind: str, postgres_url: str | None, workdir: Path) -> Iterator[str]:
    """A migrated, empty database of `kind` that is gone afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'deltahub.db'}"
        upgrade(url)
        yield url
        return
    with postgres_server(postgres_url) as admin_url:
        name = f"deltahub_bench_{secrets.token_hex(4)}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
            upgrade(url)
            yield url
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def tokens_to_revoke(url: str, count: int) -> list[int]:
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return [create_token(session, f"revoke-{i}", ["read"]).token.id
                    for i in range(count)]
    finally:
        engine.dispose()


@contextmanager
def receiver(latencies: Latencies) -> Iterator[str]:
    """A webhook receiver on 127.0.0.1 that records commit → received per event."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            now = time.time()
            event = json.loads(body)
            if latencies.recording:  # the first arrival counts, any other is a duplicate
                latencies.duplicates += event["id"] in latencies.webhook
                latencies.webhook.setdefault(event["id"], ms_since(event["created_at"], now))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def ms_since(created_at: str, now: float) -> float:
    return (now - datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()) * 1000


async def push(http: httpx.AsyncClient, ids: Iterator[int], rate: float, seconds: float,
               statuses: Counter[int | str]) -> int:
    """Revoke one token every 1/rate s (on a fixed schedule) for `seconds`; how many."""
    start, pushed = time.monotonic(), 0
    while (due := start + pushed / rate) < start + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        answer = await http.delete(f"/tokens/{next(ids)}")
        if answer.status_code != 200:
            statuses[answer.status_code] += 1
        pushed += 1
    return pushed


async def follow(http: httpx.AsyncClient, until: float, seen: dict[int, float] | None,
                 statuses: Counter[int | str], answers: list[int],
                 types: str = "token.revoked") -> None:
    """Long-poll `types` events from now on until `until` (monotonic)."""
    cursor, full = 0, True
    while full:  # to the newest event: only what comes after it is followed
        page = await http.get("/events", params={"after": cursor, "limit": 100,
                                                 "types": types})
        if page.status_code != 200:
            raise RuntimeError(f"GET /events: {page.status_code} {page.text[:300]}")
        cursor, full = page.json()["cursor"], len(page.json()["items"]) == 100
    while (left := until - time.monotonic()) > 0:
        try:
            answer = await http.get("/events", params={
                "after": cursor, "types": types, "wait": min(25.0, left)})
        except httpx.TransportError as exc:
            statuses[type(exc).__name__] += 1
            continue
        now = time.time()
        if answer.status_code != 200:
            statuses[answer.status_code] += 1
            continue
        page = answer.json()
        answers[0] += 1
        if seen is not None:
            for item in page["items"]:
                seen[item["id"]] = ms_since(item["created_at"], now)
        cursor = page["cursor"]


def client(server: ServerProcess, token: str, connections: int = 1) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT,
                             limits=httpx.Limits(max_connections=connections),
                             headers={"Authorization": f"Bearer {token}"})


async def latency_run(server: ServerProcess, token: str, ids: Iterator[int],
                      args: argparse.Namespace, latencies: Latencies) -> None:
    async with client(server, token) as pusher, client(server, token) as follower:
        until = time.monotonic() + args.seconds + DRAIN_SECONDS
        following = asyncio.create_task(follow(follower, until, latencies.feed,
                                               latencies.statuses, [0]))
        await asyncio.sleep(1.0)  # the follower is waiting before the first push
        latencies.pushed = await push(pusher, ids, args.rate, args.seconds,
                                      latencies.statuses)
        drain = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < drain and (len(latencies.feed) < latencies.pushed or
                                            len(latencies.webhook) < latencies.pushed):
            await asyncio.sleep(0.1)
        latencies.recording = False
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


async def cost_run(server: ServerProcess, token: str, ids: Iterator[int],
                   args: argparse.Namespace, followers: int, types: str) -> Cost:
    """Server CPU per request while listing, pushing at --rate and `followers`
    long-poll `types`."""
    cost, statuses, answers = Cost(followers, types), Counter[int | str](), [0]
    listers = [client(server, token) for _ in range(args.listers)]
    follower_clients = [client(server, token) for _ in range(followers)]
    pusher = client(server, token)
    warm_until = time.monotonic() + args.warmup + args.cpu_seconds + 1
    tasks = [asyncio.create_task(follow(c, warm_until, None, statuses, answers, types))
             for c in follower_clients]
    pushing: asyncio.Task[int] | None = None

    async def listing(http: httpx.AsyncClient, until: float, record: bool) -> None:
        while time.monotonic() < until:
            answer = await http.get("/adapters")
            if answer.status_code != 200:
                statuses[answer.status_code] += 1
            elif record:
                cost.requests += 1

    try:
        await asyncio.gather(*(listing(c, time.monotonic() + args.warmup, False)
                               for c in listers))
        cpu, answered, start = server.cpu_seconds(), answers[0], time.monotonic()
        pushing = asyncio.create_task(push(pusher, ids, args.rate, args.cpu_seconds,
                                           statuses))
        await asyncio.gather(*(listing(c, start + args.cpu_seconds, True) for c in listers))
        cost.server_cpu = server.cpu_seconds() - cpu
        cost.follower_answers = answers[0] - answered
        cost.pushes = await pushing
        await asyncio.gather(*tasks)
    finally:
        for task in [*tasks, *([pushing] if pushing else [])]:
            task.cancel()
        await asyncio.gather(*(c.aclose() for c in [*listers, *follower_clients, pusher]))
    if statuses:
        print(f"  cost run with {followers} followers: not 2xx {dict(statuses)}", flush=True)
    return cost


def bench_database(kind: str, args: argparse.Namespace, workdir: Path
                   ) -> tuple[Latencies, list[Cost]]:
    env = {"DELTAHUB_WEBHOOK_ALLOW_PRIVATE": "true"}
    if args.webhook_poll is not None:
        env["DELTAHUB_WEBHOOK_POLL_SECONDS"] = str(args.webhook_poll)
    latencies = Latencies()
    pushes = int(args.rate * (args.seconds + 3 * args.cpu_seconds)) + 50  # 3 cost runs
    with database(kind, args.postgres_url, workdir) as url, receiver(latencies) as hook:
        token = issue_admin_token(url, "bench-admin")
        ids = iter(tokens_to_revoke(url, pushes))
        with serve(url, workdir / "server", env) as server:
            with httpx.Client(base_url=server.url, timeout=TIMEOUT,
                              headers={"Authorization": f"Bearer {token}"}) as http:
                made = http.post("/webhooks", json={"url": hook, "events": ["token.revoked"]})
                if made.status_code != 201:
                    raise RuntimeError(f"POST /webhooks: {made.status_code} {made.text}")
            asyncio.run(latency_run(server, token, ids, args, latencies))
            costs = [asyncio.run(cost_run(server, token, ids, args, n, types))
                     for n, types in ((0, ""), (args.followers, IDLE_TYPES),
                                      (args.followers, "token.revoked"))]
    return latencies, costs


def machine() -> str:
    cpus = [line.split(":", 1)[1].strip() for line in
            Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    return f"{os.cpu_count()} vCPU ({cpus[0] if cpus else 'unknown CPU'}), CPU only"


def table(kind: str, lat: Latencies, costs: list[Cost], args: argparse.Namespace) -> str:
    title = "PostgreSQL" if kind == "postgres" else "SQLite"

    def row(what: str, values: dict[int, float]) -> str:
        v = list(values.values())
        return (f"| {what} | {lat.pushed} | {len(v)} | {percentile(v, 50):.0f} | "
                f"{percentile(v, 99):.0f} | {max(v, default=float('nan')):.0f} |")

    lines = [f"### {title}: {args.rate:g} events/s for {args.seconds:g} s", "",
             "| commit → | events | received | p50 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|",
             row("webhook received", lat.webhook), row("long-poll answered", lat.feed)]
    other = dict(lat.statuses) or "none"
    lines += ["", f"Not-2xx answers: {other}; webhook duplicates: {lat.duplicates}."]
    if kind == "postgres":
        for what, values in (("webhook", lat.webhook), ("long-poll", lat.feed)):
            v = list(values.values())
            met = percentile(v, 50) <= AIM_P50_MS and percentile(v, 99) <= AIM_P99_MS
            lines.append(f"Aim (p50 ≤ {AIM_P50_MS:.0f} ms, p99 ≤ {AIM_P99_MS:.0f} ms), "
                         f"{what}: {'met' if met else '**not met**'}.")
    base = costs[0]
    lines += ["", "| followers (of) | listings | pushes | follower answers | "
                  "server CPU ms/request | vs none |", "|---|---:|---:|---:|---:|---:|"]
    for c in costs:
        change = (c.cpu_ms / base.cpu_ms - 1) * 100
        verdict = "" if not c.followers else (
            " (met)" if change <= AIM_CPU_PERCENT else " (**not met**)")
        lines.append(f"| {c.followers} ({c.types or '-'}) | {c.requests} | {c.pushes} | "
                     f"{c.follower_answers} | {c.cpu_ms:.2f} | {change:+.1f} %{verdict} |")
    lines += ["", f"Server CPU per request answered (listings, pushes and follower answers "
                  f"together); aim: followers add ≤ {AIM_CPU_PERCENT:.0f} %. "
                  f"{args.listers} listing clients in a closed loop for "
                  f"{args.cpu_seconds:g} s after {args.warmup:g} s of warm-up, pushes at "
                  f"{args.rate:g}/s; `{IDLE_TYPES}` followers wait for a type never "
                  "emitted (every commit is matched against them), `token.revoked` ones "
                  "get every event."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", nargs="+", choices=["sqlite", "postgres"],
                        default=["sqlite", "postgres"])
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency run, per db")
    parser.add_argument("--followers", type=int, default=100, help="for the CPU cost run")
    parser.add_argument("--listers", type=int, default=4, help="listing clients (CPU run)")
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--webhook-poll", type=float, default=None,
                        help="DELTAHUB_WEBHOOK_POLL_SECONDS for the server (its default "
                             "when not given)")
    parser.add_argument("--postgres-url", default=os.environ.get("DELTAHUB_TEST_POSTGRES_URL"),
                        help="a server where this user may CREATE DATABASE (default: "
                             "DELTAHUB_TEST_POSTGRES_URL, else one started with pgserver)")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()

    started, load_before = datetime.now(UTC), os.getloadavg()[0]
    tables = []
    with tempfile.TemporaryDirectory(prefix="deltahub-events-") as tmp:
        for kind in args.db:
            latencies, costs = bench_database(kind, args, Path(tmp) / kind)
            tables.append(table(kind, latencies, costs, args))
            print(tables[-1], flush=True)
    report = "\n\n".join([
        f"Run {started:%Y-%m-%d %H:%M} UTC on {machine()}; clients and receiver in this "
        f"process on the same machine; load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.", *tables])
    print("\n" + report)
    if args.markdown:
        args.markdown.write_text(report + "\n")


if __name__ == "__main__":
    main()
