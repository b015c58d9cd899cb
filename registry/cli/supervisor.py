"""`deltahub serve --workers N` (N > 1): N API processes on one socket, and a job process.

The supervisor (the process `deltahub serve` runs as) binds the listening socket and
starts, each a fresh interpreter (multiprocessing "spawn": no threads or pooled
connections inherited):
- N API processes (registry/cli/api_process.py) accepting on that socket: the kernel hands
  each new connection to one of them. They run no jobs (EMBEDDED_WORKERS=0 in them).
- with EMBEDDED_WORKERS > 0, one job process running those job threads and the webhook
  dispatchers: what one `deltahub serve` process runs beside its API, in one place only,
  however many API processes there are.
It serves nothing itself.

A process that dies (killed, out of memory) is started again in its place. If they die
more than CRASH_LIMIT times within CRASH_WINDOW_SECONDS (a start-up that keeps failing:
a database gone, a bad setting), the supervisor stops the others and exits 1 saying so.

SIGTERM or SIGINT: the supervisor stops listening and sends SIGTERM to every process;
each finishes its requests in flight (up to SHUTDOWN_TIMEOUT_SECONDS) and exits. Then the
supervisor exits 0. A process still running STOP_MARGIN_SECONDS past that is killed and
the exit status is 1. A second SIGINT is passed on: the processes stop at once.
The processes sit in a process group of their own, so a terminal's Ctrl-C reaches only the
supervisor, which passes it on once, and each exits if the supervisor dies.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType

from registry.cli.console import console
from registry.settings import Settings

CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 60.0
# Past the requests' own bound: the app's shutdown, and the job threads' (5 s each).
STOP_MARGIN_SECONDS = 15.0
_CHECK_SECONDS = 0.5  # how often the supervisor looks at a signal flag between exits
_SPAWN = multiprocessing.get_context("spawn")


def default_workers() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class Child:
    role: str  # "api 0", ..., "jobs": what the log calls it
    target: Callable[..., None]
    args: tuple[object, ...]
    process: BaseProcess | None = None

    def start(self) -> None:
        self.process = _SPAWN.Process(target=self.target, args=self.args,
                                      name=f"deltahub {self.role}")
        self.process.start()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.pid is not None and self.alive:
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                os.kill(self.process.pid, signum)


@dataclass
class Supervisor:
    settings: Settings
    host: str
    port: int
    workers: int
    children: list[Child] = field(default_factory=list)
    stopping: str | None = None  # the signal's name once one came
    deaths: deque[float] = field(default_factory=deque)

    def run(self, sock: socket.socket) -> int:
        """Serve on `sock` (from `bind`) until a signal; the exit status."""
        self.children = [Child(f"api {i}", _api_main, (sock, self.host, self.port))
                         for i in range(self.workers)]
        if self.settings.EMBEDDED_WORKERS > 0:
            self.children.append(Child("jobs", _jobs_main, ()))
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        jobs = (f"{self.settings.EMBEDDED_WORKERS} job thread(s) in a job process"
                if self.settings.EMBEDDED_WORKERS else "no jobs (EMBEDDED_WORKERS=0)")
        _say(f"deltahub serve: {self.workers} API processes on http://{self.host}:{self.port}, "
             f"{jobs}; supervisor pid {os.getpid()}")
        for child in self.children:
            child.start()
        failure = self._watch()
        sock.close()  # the processes hold their own copies until they stop listening
        failure = self._stop_all() or failure
        if failure:
            _say(f"deltahub serve: {failure}", style="bold red")
            return 1
        _say("deltahub serve: stopped")
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping is None:
            self.stopping = signal.Signals(signum).name
            _say(f"deltahub serve: {self.stopping}: stopping; requests in flight get "
                 f"{self.settings.SHUTDOWN_TIMEOUT_SECONDS:g} s")
            for child in self.children:
                child.signal(signal.SIGTERM)
        elif signum == signal.SIGINT:
            _say("deltahub serve: second SIGINT: stopping now")
            for child in self.children:
                child.signal(signal.SIGINT)  # uvicorn: a second one cuts everything

    def _watch(self) -> str | None:
        """Restart processes that die until a signal comes; a failure that ends it all."""
        while self.stopping is None:
            sentinels = [c.process.sentinel for c in self.children if c.process is not None]
            multiprocessing.connection.wait(sentinels, timeout=_CHECK_SECONDS)
            for child in self.children:
                if self.stopping is not None or child.alive or child.process is None:
                    continue
                code = child.process.exitcode
                now = time.monotonic()
                self.deaths.append(now)
                while self.deaths and self.deaths[0] < now - CRASH_WINDOW_SECONDS:
                    self.deaths.popleft()
                if len(self.deaths) > CRASH_LIMIT:
                    return (f"processes died {len(self.deaths)} times within "
                            f"{CRASH_WINDOW_SECONDS:g} s (last: {child.role}, {_status(code)}); "
                            "see their errors above. Stopping")
                _say(f"deltahub serve: {child.role} (pid {child.process.pid}) "
                     f"ended ({_status(code)}); starting another", style="yellow")
                child.start()
        return None

    def _stop_all(self) -> str | None:
        for child in self.children:
            child.signal(signal.SIGTERM)  # again, for one started as the signal came
        deadline = (time.monotonic() + self.settings.SHUTDOWN_TIMEOUT_SECONDS
                    + STOP_MARGIN_SECONDS)
        failed = []
        for child in self.children:
            if child.process is None:
                continue
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
                failed.append(f"{child.role} did not stop in time and was killed")
            elif child.process.exitcode not in (0, -signal.SIGTERM):
                # -SIGTERM: ours reached it before it set up its handlers, i.e. before it
                # served anything; any later SIGTERM is a graceful stop ending in 0.
                failed.append(f"{child.role} ended with {_status(child.process.exitcode)}")
        return "; ".join(failed) or None


def _say(message: str, style: str | None = None) -> None:
    # One line each, whatever the terminal's width: these are the server's log.
    console.print(message, style=style, highlight=False, soft_wrap=True)


def _status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"


def _detach() -> None:
    """Own process group (no terminal Ctrl-C: the supervisor passes signals on), and a
    SIGTERM to ourselves if the supervisor dies, so no process outlives it."""
    os.setpgid(0, 0)
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _api_main(sock: socket.socket, host: str, port: int) -> None:
    _detach()
    from registry.cli.api_process import process_settings, run_api

    run_api(process_settings(Settings(), embedded_workers=False), host, port, sockets=[sock])


def _jobs_main() -> None:
    _detach()
    from registry.infra.database import Database
    from registry.jobs.embedded import running_workers
    from registry.storage.factory import make_blob_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    database = Database.from_settings(settings)
    try:
        with running_workers(database, make_blob_store(settings), settings):
            while not stop.wait(_CHECK_SECONDS):
                pass
    finally:
        database.dispose()
