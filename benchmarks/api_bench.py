"""API cost per request: what each JSON route costs the server, in CPU and SQL statements.

`deltahub serve` runs in a process of its own (tests/registry/serverproc.py) on a database
seeded with one base and --adapters adapters under it (benchmarks/load_bench.py's seeding:
one real LoRA pushed over HTTP, cloned with bulk INSERTs). Closed-loop clients in this
process (asyncio + httpx, one keep-alive connection each) call each route at each
--clients level; measured per route and level:

- requests per second, p50 and p99 latency (ms) of the expected answers, and errors
  (any other status, timeouts, broken connections);
- **server CPU ms per request**: utime + stime of the server's process tree (workers
  included) from /proc, before and after, divided by the requests answered. It does not
  depend on what else the machine is doing, unlike req/s and latency;
- SQL statements per request, counted once per route by a `before_cursor_execute`
  listener with the same request sent in-process through httpx.ASGITransport to the app
  built on the same database (benchmarks/api_statements.py).

Routes: `GET /adapters?base=` (a 20-item page) asked again and again (what pollers do:
answered from the server's cache of change-tagged answers where it has one), the same
listing with a new, ignored `probe` query value each time (no cached answer: the page is
read and built), one `GET /adapters/{name}@{version}`, the listing with `If-None-Match` of
its ETag (a 304; "n/a" when the server sends no ETag), `/healthz`, `/models`, `/jobs`,
`/events`.

--src runs the server from other checkouts, interleaved cell by cell in one run, so a
before/after comparison shares the machine's state; each source gets its own database,
migrated, seeded and counted by that source's own code. The table then shows each value
per source and the ratio last/first.

    python benchmarks/api_bench.py          # both databases, defaults: ≈ 4 min on 2 cores
    python benchmarks/api_bench.py --db sqlite --clients 1,50 --duration 1  # smoke
    git worktree add /tmp/deltahub-old <old commit>
    python benchmarks/api_bench.py --src old=/tmp/deltahub-old --src new=.

PostgreSQL: a database `deltahub_bench_<random>` per source on --postgres-url's server
(default the local postgresql://postgres@127.0.0.1:5432), created and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load_bench import (  # after the sys.path fix-up above
    BASE,
    REQUEST_TIMEOUT_SECONDS,
    Measurement,
    closed_loop,
    machine,
    push_over_http,
    tiny_models,
)
from tests.registry.serverproc import ServerProcess, serve

ROOT = Path(__file__).resolve().parents[1]
PAGE_ITEMS = 20
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HEADER = ["database", "route", "clients", "req/s", "p50 ms", "p99 ms", "errors",
          "server CPU ms/req", "SQL statements/req"]

OneRequest = Callable[[httpx.AsyncClient, int], Awaitable[tuple[int | str, int]]]


# -- options (pure) ---------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A checkout whose `deltahub serve` is measured, under a short label."""

    label: str
    path: Path


def parse_source(text_: str) -> Source:
    """`LABEL=PATH`, or a bare `PATH` labelled by its folder's name."""
    label, sep, path = text_.partition("=")
    if not sep:
        label, path = "", text_
    where = Path(path).expanduser().resolve()
    if not (where / "registry" / "app.py").is_file():
        raise argparse.ArgumentTypeError(f"{where} is not a deltahub checkout "
                                         "(no registry/app.py)")
    return Source(label or where.name, where)


def parse_clients(text_: str) -> list[int]:
    try:
        levels = [int(part) for part in text_.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text_!r}: give client counts like 1,50,200")
    return levels


def parse_databases(text_: str) -> list[str]:
    kinds = [part.strip() for part in text_.split(",") if part.strip()]
    if not kinds or set(kinds) - {"sqlite", "postgres"}:
        raise argparse.ArgumentTypeError(f"{text_!r}: give sqlite, postgres or both")
    return kinds


def psycopg_url(url: str) -> str:
    """A PostgreSQL URL with SQLAlchemy's psycopg 3 driver and a database to connect to."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if not parsed.database:
        parsed = parsed.set(database="postgres")
    return parsed.render_as_string(hide_password=False)


# -- server CPU of a process tree (Linux /proc) -----------------------------------------

def parse_proc_stat(stat: str) -> tuple[int, int]:
    """(parent pid, utime + stime in clock ticks) from a /proc/<pid>/stat line."""
    # After the ")" that ends the command name: ppid is field 4, utime 14, stime 15.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_cpu_seconds(root: int) -> float:
    """CPU time used so far by `root` and its living descendants (`--workers` children)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent, used = parse_proc_stat((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        parents[int(entry.name)], ticks[int(entry.name)] = parent, used
    tree, grown = {root}, True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ServerTree:
    """A served process whose CPU is counted over its whole tree (for closed_loop)."""

    server: ServerProcess

    @property
    def url(self) -> str:
        return self.server.url

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.server.process.pid)


# -- routes and results -----------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    label: str
    path: str
    expect: int = 200
    conditional: bool = False  # sends If-None-Match with the ETag `path` answered
    # adds `&probe=<n>`, new for each request: a query no earlier one asked, so no
    # cached answer (ANSWER_CACHE_BYTES) serves it and the page is read and built
    distinct: bool = False


def routes(single: str) -> list[Route]:
    listing = f"/adapters?base={BASE}&limit={PAGE_ITEMS}"
    return [Route(f"GET /adapters?base= ({PAGE_ITEMS} items), the same again", listing),
            Route(f"GET /adapters?base= ({PAGE_ITEMS} items), a new query each", listing,
                  distinct=True),
            Route("GET /adapters/{name}@{version}", f"/adapters/{single}"),
            Route("listing + If-None-Match (304)", listing, 304, conditional=True),
            Route("GET /healthz", "/healthz"),
            Route("GET /models", "/models"),
            Route("GET /jobs", "/jobs"),
            Route("GET /events", "/events")]


@dataclass
class Result(Measurement):
    """load_bench's measurement, with the status a route is expected to answer (a 304)."""

    expect: int = 200

    def add(self, status: int | str, seconds: float) -> None:
        if status == self.expect:
            status = 200  # counted as answered; Measurement keeps only 2xx latencies
        elif isinstance(status, int) and 200 <= status < 300:
            status = f"{status} instead of {self.expect}"  # an error for this route
        super().add(status, seconds)

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else float("nan")

    @property
    def cpu_ms(self) -> float:
        return self.server_cpu * 1000 / self.requests if self.requests else float("nan")


def ratio_cell(values: list[float | None], digits: int) -> str:
    """One value per source, `a → b (×b/a)` when there are several; `n/a` where missing."""
    shown = ["n/a" if v is None else f"{v:.{digits}f}" for v in values]
    cell = " → ".join(shown)
    first, last = values[0], values[-1]
    if len(values) > 1 and first and last is not None:
        cell += f" (×{last / first:.2f})"
    return cell


@dataclass
class Row:
    database: str
    route: str
    clients: int
    results: list[Result | None]  # one per source, None where the route is n/a
    statements: list[int | None] = field(default_factory=list)

    def cells(self) -> list[str]:
        def each(pick: Callable[[Result], float]) -> list[float | None]:
            return [None if r is None else pick(r) for r in self.results]

        return [self.database, self.route, str(self.clients),
                ratio_cell(each(lambda r: r.per_second), 0),
                ratio_cell(each(lambda r: r.percentile(50)), 1),
                ratio_cell(each(lambda r: r.percentile(99)), 1),
                " / ".join("n/a" if r is None else str(r.failed) for r in self.results),
                ratio_cell(each(lambda r: r.cpu_ms), 2),
                " / ".join("n/a" if s is None else str(s) for s in self.statements)]


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * 3 + "---:|" * (len(HEADER) - 3)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


# -- one source's server ----------------------------------------------------------------

def source_env(source: Source, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAHUB_")}
    env["PYTHONPATH"] = str(source.path)
    env.update(extra or {})
    return env


def in_source(source: Source, code: str, extra_env: dict[str, str] | None = None,
              stdin: str | None = None, script: Path | None = None) -> str:
    """Run Python `code` (or `script`) with `source`'s packages first on the path; stdout."""
    command = [sys.executable, str(script)] if script else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=source.path, env=source_env(source, extra_env),
                          input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{source.label}: {command[1:]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


@contextlib.contextmanager
def fresh_database(kind: str, source: Source, postgres_url: str, workdir: Path
                   ) -> Iterator[str]:
    """A database of `kind` migrated by `source`'s own migrations, gone afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"deltahub_bench_{secrets.token_hex(4)}"
    admin = None
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'deltahub.db'}"
    else:
        admin = create_engine(psycopg_url(postgres_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(psycopg_url(postgres_url)).set(database=name).render_as_string(
            hide_password=False)
    try:
        in_source(source, f"from registry.infra.migrate import upgrade; upgrade({url!r})")
        yield url
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def supports_workers(source: Source) -> bool:
    """Whether `source`'s `deltahub serve` takes --workers (older checkouts do not)."""
    help_text = in_source(source, "import sys; sys.argv = ['deltahub', 'serve', '--help']\n"
                                  "from registry.cli.app import main\n"
                                  "try:\n    main()\nexcept SystemExit:\n    pass",
                          {"COLUMNS": "200"})
    return "--workers" in help_text


@dataclass
class Target:
    source: Source
    server: ServerTree
    token: str
    etag: str | None
    statements: dict[str, Any]
    workers: str  # what --workers did for this source


@contextlib.contextmanager
def start_target(kind: str, source: Source, args: argparse.Namespace,
                 models: tuple[Path, Path], workdir: Path) -> Iterator[Target]:
    with fresh_database(kind, source, args.postgres_url, workdir) as url:
        token = in_source(source, "from tests.registry.serverproc import issue_admin_token; "
                                  f"print(issue_admin_token({url!r}, 'bench-admin'))").strip()
        processes: int | None = None  # a checkout without --workers runs one process
        workers = "1 process"
        if supports_workers(source):
            processes = args.workers or 1
            workers = f"--workers {processes}"
        elif args.workers is not None:
            workers = f"1 process (no --workers in {source.label})"
        with serve(url, workdir / "server", {"PYTHONPATH": str(source.path)},
                   workers=processes) as server:
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_SECONDS,
                              headers=auth) as client:
                push_over_http(client, *models)
                in_source(source, "from benchmarks.load_bench import clone_adapters; "
                                  f"clone_adapters({url!r}, {args.adapters})")
                single = f"bench-{args.adapters // 2:06d}@1"
                listing = client.get(routes(single)[0].path)
                if listing.status_code != 200 or len(listing.json()["items"]) != PAGE_ITEMS:
                    raise RuntimeError(f"{source.label}: the seeded listing is wrong: "
                                       f"{listing.status_code} {listing.text[:300]}")
                etag = listing.headers.get("etag")
            statements = count_statements(source, url, workdir / "server" / "blobs",
                                          routes(single), auth, etag)
            yield Target(source, ServerTree(server), token, etag, statements, workers)


def count_statements(source: Source, url: str, blobs: Path, all_routes: list[Route],
                     auth: dict[str, str], etag: str | None) -> dict[str, Any]:
    requests = [{"label": route.label, "path": route.path, "distinct": route.distinct,
                 "headers": {**auth, **({"If-None-Match": etag} if route.conditional else {})}}
                for route in all_routes if etag is not None or not route.conditional]
    out = in_source(source, "", {"DELTAHUB_DATABASE_URL": url,
                                 "DELTAHUB_STORAGE_URL": f"file://{blobs}"},
                    stdin=json.dumps(requests), script=ROOT / "benchmarks" / "api_statements.py")
    counted: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return counted


_PROBES = itertools.count()  # distinct routes' query values, never repeated in a run


def requester(route: Route, etag: str | None) -> OneRequest:
    headers = {"If-None-Match": etag} if route.conditional and etag else {}

    async def one(client: httpx.AsyncClient, _index: int) -> tuple[int | str, int]:
        path = f"{route.path}&probe={next(_PROBES)}" if route.distinct else route.path
        response = await client.get(path, headers=headers)
        return response.status_code, 1

    return one


def measure(target: Target, route: Route, clients: int, args: argparse.Namespace
            ) -> Result | None:
    if route.conditional and target.etag is None:
        return None  # the server sends no ETag: there is no 304 to measure
    result = Result(route.label, clients, expect=route.expect)
    asyncio.run(closed_loop(target.server, target.token, result, args.duration,  # type: ignore[arg-type]
                            args.warmup, requester(route, target.etag)))
    return result


def statement_count(target: Target, route: Route) -> int | None:
    found = target.statements.get(route.label)
    if found is None or found["status"] != route.expect:
        return None
    return int(found["statements"])


def bench_database(kind: str, args: argparse.Namespace, models: tuple[Path, Path],
                   workdir: Path) -> tuple[list[Row], list[Target]]:
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        targets = [stack.enter_context(start_target(kind, source, args, models,
                                                    workdir / f"{i}-{source.label}"))
                   for i, source in enumerate(args.src)]
        print(f"{kind}: seeded {args.adapters} adapters for "
              f"{', '.join(t.source.label for t in targets)}", flush=True)
        single = f"bench-{args.adapters // 2:06d}@1"
        for route in routes(single):
            for clients in args.clients:
                # Interleaved: every source measured in turn for the same cell.
                results = [measure(t, route, clients, args) for t in targets]
                row = Row(kind, route.label, clients, results,
                          [statement_count(t, route) for t in targets])
                rows.append(row)
                print(" | ".join(row.cells()), flush=True)
        return rows, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=parse_source, action="append",
                        help="LABEL=PATH of a checkout to serve from (repeat: before and "
                             "after, interleaved); default: this checkout")
    parser.add_argument("--db", type=parse_databases, default=["sqlite", "postgres"],
                        help="sqlite, postgres or sqlite,postgres (the default)")
    parser.add_argument("--clients", type=parse_clients, default=[1, 50, 200],
                        help="concurrent clients, comma-separated (default 1,50,200)")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds measured per route, client count and source")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each")
    parser.add_argument("--adapters", type=int, default=1000,
                        help="adapters seeded under the one base")
    parser.add_argument("--workers", type=int, default=None,
                        help="pass --workers N to `deltahub serve` where it has it")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help="a server where this user may CREATE and DROP DATABASE")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    args.src = args.src or [Source("this", ROOT)]

    started, load_before = datetime.now(UTC), os.getloadavg()[0]
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="deltahub-api-") as tmp:
        models = tiny_models(Path(tmp) / "models")
        for kind in args.db:
            found, targets = bench_database(kind, args, models, Path(tmp) / kind)
            rows += found
            notes += [f"{t.source.label} on {kind}: {t.workers}, ETag "
                      f"{'sent' if t.etag else 'not sent (304 row n/a)'}" for t in targets]
    sources = " → ".join(f"{s.label} ({s.path}, commit {source_commit(s)})" for s in args.src)
    report = "\n\n".join([
        f"Run {started:%Y-%m-%d %H:%M} UTC on {machine()}; sources {sources}; "
        f"{args.adapters} adapters under one base, {PAGE_ITEMS} a page; clients in this "
        f"process (httpx, one keep-alive connection each, closed loop), {args.duration:g} s "
        f"per cell after {args.warmup:g} s of warm-up; load average {load_before:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end.",
        table(rows),
        "Server CPU ms/req: CPU time of the server's process tree per request answered "
        "(lower is better; independent of the machine's other load). Errors: answers "
        "other than the route's 200 (304 for the conditional row), timeouts and broken "
        "connections. SQL statements/req: counted in-process on the same database. "
        + ("Several sources: values per source in order, ratio last/first in brackets. "
           if len(args.src) > 1 else "") + "; ".join(notes) + "."])
    print("\n" + report)
    if args.markdown:
        args.markdown.write_text(report + "\n")


def source_commit(source: Source) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=source.path).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
