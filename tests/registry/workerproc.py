"""`deltahub worker` and other `deltahub` commands as real processes, for failure tests.

A worker that is SIGKILLed, paused with SIGSTOP or cut off mid-request must be a process
of its own: a thread in the test's interpreter cannot be killed, and pausing it would
pause the test. Each process gets exactly the `DELTAHUB_*` settings given (none of the
caller's), runs in a folder without a `.env`, and writes its output to a log file that
failure messages quote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.s3server import S3Server

T = TypeVar("T")

STOP_TIMEOUT_SECONDS = 15.0
LOG_TAIL_CHARS = 6000


def deltahub_argv(*args: str) -> list[str]:
    """The `deltahub` console script beside this interpreter, or its entry point."""
    script = Path(sys.executable).with_name("deltahub")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from registry.cli.app import main; main()", *args]


def deployment_settings(database_url: str, s3: S3Server, bucket: str,
                        **overrides: str) -> dict[str, str]:
    """The settings every process of one deployment shares: its database and bucket."""
    settings = {
        "DELTAHUB_DATABASE_URL": database_url,
        "DELTAHUB_STORAGE_URL": f"s3://{bucket}",
        "DELTAHUB_S3_ENDPOINT_URL": s3.endpoint_url,
        "DELTAHUB_S3_REGION": "us-east-1",
        "DELTAHUB_S3_ACCESS_KEY_ID": "testing",
        "DELTAHUB_S3_SECRET_ACCESS_KEY": "testing",
        "DELTAHUB_S3_CONNECT_TIMEOUT_SECONDS": "2",
        "DELTAHUB_S3_READ_TIMEOUT_SECONDS": "30",
    }
    settings.update(overrides)
    return settings


def process_environment(settings: Mapping[str, str]) -> dict[str, str]:
    # Drop the caller's DELTAHUB_* settings: the process must run on exactly these.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAHUB_")}
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"  # the log shows a killed process's last words
    return env


def poll_until(check: Callable[[], T | None], timeout_s: float, what: str,
               every_s: float = 0.05, diagnose: Callable[[], str] | None = None) -> T:
    """The first truthy result of `check`, polled until `timeout_s`; AssertionError after."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{detail}")
        time.sleep(every_s)


@dataclass
class WorkerProcess:
    """One `deltahub worker --name <name>` process and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    terminated: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return f"--- worker {self.name} (pid {self.pid}) ---\n{self.log_text()[-chars:]}"

    def started(self) -> bool:
        return f"worker {self.name} started" in self.log_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def settled(self) -> bool:
        """Started, or already gone: either way there is nothing more to wait for."""
        return self.started() or not self.alive()

    def paused(self) -> bool:
        """Stopped by SIGSTOP (state T in /proc), as opposed to running or sleeping."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")

    def kill(self) -> int:
        """SIGKILL, then the exit status (-9)."""
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.name} still runs after {timeout_s:g} s\n"
                                 f"{self.log_tail()}") from None

    def terminate(self) -> None:
        """SIGTERM (after SIGCONT, should it be paused): it stops after its job in flight."""
        if self.process.poll() is None and not self.terminated:
            self.terminated = True
            self.resume()
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Terminate, and wait for the end; SIGKILL if it does not come."""
        self.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


@dataclass
class WorkerPool:
    """Starts workers of one deployment, and stops them all when the test ends."""

    settings: Mapping[str, str]
    folder: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(self, name: str, extra: Mapping[str, str] | None = None) -> WorkerProcess:
        """`deltahub worker --cpu-only --name <name>`, with `extra` settings on top."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log_path = self.folder / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                deltahub_argv("worker", "--cpu-only", "--name", name), cwd=self.folder,
                stdout=log, stderr=subprocess.STDOUT,
                env=process_environment({**self.settings, **(extra or {})}))
        worker = WorkerProcess(name, process, log_path)
        self.workers.append(worker)
        return worker

    def wait_started(self, workers: list[WorkerProcess], timeout_s: float = 60.0) -> None:
        for worker in workers:
            poll_until(worker.settled, timeout_s, f"worker {worker.name} to start",
                       every_s=0.1)
            assert worker.alive(), f"worker {worker.name} exited at start\n{worker.log_tail()}"

    def stop_all(self) -> None:
        for worker in self.workers:  # all at once: each takes a second to exit
            worker.terminate()
        for worker in self.workers:
            worker.stop()

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(self.workers)

    def log_tails(self) -> str:
        return "\n".join(w.log_tail() for w in self.workers)


def run_cli(settings: Mapping[str, str], folder: Path, *args: str,
            timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """One `deltahub` command as a process of its own; its output is in the result."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(deltahub_argv(*args), cwd=folder, env=process_environment(settings),
                          capture_output=True, text=True, timeout=timeout_s, check=False)
