"""The registry as deployed: `deltahub serve` in a process of its own, on loopback.

The `live_server` fixture (tests/conftest.py) runs uvicorn in a thread of the test's own
interpreter, sharing its GIL, its engine and its pool. A load test or benchmark must not:
it measures the server the way it runs in production, configured only by `DELTAHUB_*`
variables, with its own connection pool and its own CPU time. The load test
(tests/registry/test_load.py) and the load benchmark (benchmarks/load_bench.py) both
start the server through `serve` here.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from registry.auth.service import create_token
from registry.infra.engines import make_engine, make_session_factory, unit_of_work
from tests.s3server import free_port

START_TIMEOUT_SECONDS = 60.0  # importing torch and the app takes ~5 s on an idle 2-core box
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding
STARTED_LINE = "Application startup complete."
STOP_TIMEOUT_SECONDS = 45.0  # with --workers: SHUTDOWN_TIMEOUT_SECONDS is 30 s; idle, ~5 s


@dataclass(frozen=True)
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's stdout and stderr, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no server log: {exc})"
        return text[-chars:]

    def started_processes(self) -> int:
        """How many API processes have said their start-up is complete (uvicorn's line)."""
        try:
            return self.log_path.read_text(errors="replace").count(STARTED_LINE)
        except OSError:
            return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used so far: its process and, with
        `--workers`, the processes it started (Linux /proc)."""
        return sum(_cpu_ticks(pid) for pid in _process_tree(self.process.pid)
                   ) / os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0  # ended since it was listed
    # After the ")" that ends the command name: state is field 3, utime 14, stime 15.
    return int(fields[11]) + int(fields[12])


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from each thread's /proc children list."""
    found = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError):
            for child in children.read_text().split():
                found += _process_tree(int(child))
    return found


def issue_admin_token(database_url: str, name: str = "load-admin") -> str:
    """Create an admin token straight in the (migrated) database; returns its secret."""
    engine = make_engine(database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return create_token(session, name, ["admin"]).secret
    finally:
        engine.dispose()


def _command(workers: int | None) -> list[str]:
    # The console script installed beside this interpreter is what `make run` starts;
    # without one (a bare checkout on PYTHONPATH), run the same entry point.
    script = Path(sys.executable).with_name("deltahub")
    serve = ["serve"] if workers is None else ["serve", "--workers", str(workers)]
    if script.exists():
        return [str(script), *serve]
    return [sys.executable, "-c", "from registry.cli.app import main; main()", *serve]


def _environment(database_url: str, storage_dir: Path, port: int,
                 overrides: Mapping[str, str]) -> dict[str, str]:
    # Drop the caller's DELTAHUB_* settings: the server must run on exactly the database,
    # storage and limits given here, not on whatever a developer's shell exports.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAHUB_")}
    env.update({
        "DELTAHUB_DATABASE_URL": database_url,
        "DELTAHUB_STORAGE_URL": f"file://{storage_dir}",
        "DELTAHUB_HOST": "127.0.0.1",
        "DELTAHUB_PORT": str(port),
        "PYTHONUNBUFFERED": "1",  # the log file shows the server's last words on a crash
    })
    env.update(overrides)
    return env


def _answers(port: int) -> bool:
    # http.client rather than urllib: no proxy settings can get in the way on loopback.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


@contextlib.contextmanager
def serve(database_url: str, workdir: Path, env: Mapping[str, str] | None = None,
          workers: int | None = 1) -> Iterator[ServerProcess]:
    """Run `deltahub serve --workers N` on a migrated database until the block ends.

    Blobs go to `workdir/blobs` and the server's output to `workdir/server.log`. The
    server runs with `workdir` as its current directory, so no `.env` file of the
    checkout is read. `env` adds or overrides settings (`DELTAHUB_DB_LOCK_TIMEOUT_SECONDS`).
    One API process unless `workers` says more (serve's own default is one per core; None
    passes no `--workers`, for a checkout from before the option, as benchmarks run). The
    block may stop the server itself (`process.send_signal`) and read its exit status.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "blobs"
    storage.mkdir(exist_ok=True)
    log_path = workdir / "server.log"
    for _ in range(START_ATTEMPTS):
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                _command(workers), cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                env=_environment(database_url, storage, port, env or {}))
        server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(port) and server.started_processes() >= (workers or 1):
                try:
                    yield server
                finally:
                    _stop(process)
                return
            time.sleep(0.1)
        _stop(process)
        if "address already in use" not in server.log_tail().lower():
            break
    raise RuntimeError(f"`deltahub serve` did not start (exit status {process.returncode}):\n"
                       f"{server.log_tail()}")
