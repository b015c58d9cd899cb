"""CLI startup: wall time and peak memory of a `deltahub` command, against `python -c pass`.

What a user or a CI job waits for before a command does anything, and what it holds:

- `python -c pass`: the interpreter alone, the floor every ratio is taken against;
- `deltahub --help`: the console script, typer, and the command table (no command module);
- `deltahub ls models`: a real request to a live `deltahub serve` that this script starts
  (SQLite, a migrated empty database; tests/registry/serverproc.py), so the figure
  includes httpx, the client commands' imports, one HTTP round trip and the table.

Each command runs `--runs` times, interleaved (round-robin) so that a busy spell of a
shared machine hits every command alike. Wall time is the median of its runs, from spawn
to exit; CPU is the process's user + system time (what a loaded machine inflates least);
peak RSS is the largest `ru_maxrss` of its process (see LAUNCHER).
The issue's aim: `deltahub --help` and `deltahub ls` under 0.5 s and under 60 MB.

    python benchmarks/cli_bench.py            # 15 runs each
    python benchmarks/cli_bench.py --runs 5   # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry.infra.migrate import upgrade
from tests.registry.serverproc import issue_admin_token, serve

AIM_SECONDS = 0.5
AIM_MB = 60.0


@dataclass
class Samples:
    label: str
    argv: list[str]
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_kb: int = 0


# Starts the measured command and reports its wall time, peak RSS (KB) and exit status.
# A launcher of its own, started without `site` (about 7 MB), because Linux counts the
# memory a process had before exec into the peak of the program it execs: measured from
# this script (which has SQLAlchemy loaded), every command would show this script's RSS.
LAUNCHER = """
import os, sys, time
devnull = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=devnull)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss,
      os.waitstatus_to_exitcode(status))
"""


def run_once(sample: Samples, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *sample.argv], env=env,
                          capture_output=True, text=True, check=True)
    seconds, cpu_seconds, peak_kb, code = done.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{sample.label} failed ({code}): {done.stderr}")
    sample.seconds.append(float(seconds))
    sample.cpu_seconds.append(float(cpu_seconds))
    sample.peak_kb = max(sample.peak_kb, int(peak_kb))  # KB on Linux


def table(samples: list[Samples]) -> str:
    floor = samples[0]
    floor_s, floor_mb = statistics.median(floor.seconds), floor.peak_kb / 1024
    floor_cpu = statistics.median(floor.cpu_seconds)
    lines = ["| command | wall, median (s) | × `python -c pass` | CPU, median (s) "
             "| × `python -c pass` | peak RSS (MB) | × `python -c pass` "
             "| aim (< 0.5 s, < 60 MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in samples:
        seconds, mb = statistics.median(s.seconds), s.peak_kb / 1024
        cpu = statistics.median(s.cpu_seconds)
        aim = "" if s is floor else ("met" if seconds < AIM_SECONDS and mb < AIM_MB
                                     else "not met")
        lines.append(f"| `{s.label}` | {seconds:.3f} | {seconds / floor_s:.1f}× | {cpu:.3f} "
                     f"| {cpu / floor_cpu:.1f}× | {mb:.1f} | {mb / floor_mb:.1f}× | {aim} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    args = parser.parse_args()
    deltahub = str(Path(sys.executable).with_name("deltahub"))
    with tempfile.TemporaryDirectory(prefix="cli-bench-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'deltahub.db'}"
        upgrade(database_url)
        token = issue_admin_token(database_url, "cli-bench")
        with serve(database_url, Path(tmp) / "server") as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAHUB_")}
            env.update(DELTAHUB_URL=server.url, DELTAHUB_TOKEN=token, COLUMNS="100")
            samples = [Samples("python -c pass", [sys.executable, "-c", "pass"]),
                       Samples("deltahub --help", [deltahub, "--help"]),
                       Samples("deltahub ls models", [deltahub, "ls", "models"])]
            for s in samples:  # warm the page cache and the bytecode once, unmeasured
                run_once(s, env)
                s.seconds.clear()
                s.cpu_seconds.clear()
            for _ in range(args.runs):
                for s in samples:
                    run_once(s, env)
    load = os.getloadavg()
    print(f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()} · "
          f"{args.runs} runs each · load average {load[0]:.1f} / {load[1]:.1f}")
    print()
    print(table(samples))


if __name__ == "__main__":
    main()
