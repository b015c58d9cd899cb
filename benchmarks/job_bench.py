"""Compression jobs through the API against the codec run directly, in one run (issue 10).

The same Llama-2-7B-shaped fp16 models as benchmarks/bitdelta_bench.py (q, k, v, o
4096×4096; gate, up 11008×4096; down 4096×11008; two RMSNorm vectors per layer; a base
and a fine-tune = base + small dense delta), plus a Llama config.json so the registry
accepts them. For each storage backend:

- `deltahub serve` runs as a process of its own (tests/registry/serverproc.py) on SQLite,
  with DELTAHUB_EMBEDDED_WORKERS=0; base and fine-tune are registered through the API
  (PUT per file, finalize), untimed: the issue's figure excludes the upload;
- job: one fresh `deltahub worker --cpu-only` process (tests/registry/workerproc.py) per
  measurement, started and idle (the POST goes half a JOB_POLL_SECONDS after it says it
  started, so the job waits in the queue for the mean wait of a job arriving at a random
  moment); then POST /models/<ft>/compress?method=bitdelta with {"verify": "off"}, and
  the time from sending the POST to the first GET /jobs/<id> (every 0.1 s) that answers
  `succeeded`, nothing subtracted. The worker's peak RSS is its VmHWM, read just before
  it is stopped; its CPU seconds are counted from the POST to `succeeded`;
- direct: `compress_bitdelta(base, finetune, out)` on the very same files (hard links
  of the generated models), in a fresh process (bitdelta_bench.py's child): its time,
  CPU seconds and VmHWM.

Job and direct runs alternate (direct first on even repeats, job first on odd ones) so
the shared machine's noise falls on both; the table shows the best of each. The aim: job
≤ 1.25 × direct in wall time, and worker peak RSS flat as layers are added. CPU seconds,
which other users of the cores disturb less than wall time, are shown beside. Two more
tables, for information: a verify=auto job (verification is a separate cost), and where
one job's time goes: queue wait, download, encode, verify, upload, database, from a
worker whose calls of those are wrapped with timers (`--timed-worker`; one more run per
cell, apart from the timed ones, which use the plain `deltahub worker`).

    python benchmarks/job_bench.py                                # 1, 2, 4 layers; local and S3
    python benchmarks/job_bench.py --layers 1 2 --repeats 3 --storage local
    python benchmarks/job_bench.py --tiny --layers 1 --repeats 1  # a smoke run, ~2 minutes
    python benchmarks/job_bench.py --markdown job_bench.md        # also write the tables

S3 is s3rver (`.s3rver/node_modules/.bin/s3rver`, which `make test` installs; objects on
disk) when present, else moto's server (objects in memory); `--s3-server` chooses. Both on
loopback, as the tests start them (tests/s3server.py). The models are generated once by
bitdelta_bench.py's generator under .bench/bitdelta/ (about 0.4 GB per layer per model)
and hard-linked with a config.json into .bench/jobs/models/; each backend's database,
blobs and worker folders live under .bench/jobs/run-* and are removed after it.
`--clean` also removes .bench/jobs/ and the generated models of the sizes run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# After the sys.path fix-up above.
from benchmarks import bitdelta_bench
from benchmarks.bitdelta_bench import LLAMA_7B, TINY, Shape, ensure_models, run_child
from benchmarks.load_bench import commit, machine
from compress.tensorio import CONFIG_FILE, is_model_file
from registry.client import DeltahubClient, sha256_of
from registry.infra.migrate import upgrade
from registry.settings import Settings
from tests.registry.serverproc import issue_admin_token, serve
from tests.registry.workerproc import (
    WorkerPool,
    WorkerProcess,
    deployment_settings,
    poll_until,
    process_environment,
)
from tests.s3server import S3RVER_BIN, running_s3_server, running_s3rver

GB = 10**9
MB = 10**6
ROOT = Path(__file__).resolve().parents[1] / ".bench" / "jobs"
RATIO_AIM = 1.25  # issue 10: the job within 1.25× of the codec run directly
FLAT_RSS_SPREAD = 0.10  # "flat": the largest worker peak within 10% of the smallest
JOB_POLL_EVERY_SECONDS = 0.1  # the issue's polling of GET /jobs/{id}
JOB_TIMEOUT_SECONDS = 120.0  # plus JOB_TIMEOUT_PER_LAYER_SECONDS per layer: a stuck job fails
JOB_TIMEOUT_PER_LAYER_SECONDS = 120.0
WORKER_START_TIMEOUT_SECONDS = 120.0  # importing torch + the app on a busy 2-core box
CLIENT_TIMEOUT_SECONDS = 600.0  # a finalize reads every header of a multi-GB model
TERMINAL = {"succeeded", "failed", "cancelled"}


# ---------------------------------------------------------------- the models


def llama_config(shape: Shape, layers: int) -> dict[str, Any]:
    """A Llama config.json for `layers` decoder layers of `shape` (the registry wants one)."""
    heads = max(shape.hidden // 128, 1)
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": heads, "rms_norm_eps": 1e-5, "vocab_size": 32000,
            "torch_dtype": "float16"}


def model_dirs(shape: Shape, layers: int, tag: str) -> tuple[Path, Path]:
    """Base and fine-tune directories: the generated shards, hard-linked, + config.json.

    Links, not copies: the job and the direct run read the same inodes, and the disk
    holds each model once.
    """
    root = ROOT / "models" / f"{tag}-{layers}L"
    base, finetune = root / "base", root / "finetune"
    if (root / "complete").exists():
        return base, finetune
    shutil.rmtree(root, ignore_errors=True)
    sources = ensure_models(shape, layers, tag)
    config = json.dumps(llama_config(shape, layers), indent=2) + "\n"
    for source, dest in zip(sources, (base, finetune), strict=True):
        dest.mkdir(parents=True)
        for path in source.iterdir():
            os.link(path, dest / path.name)
        (dest / CONFIG_FILE).write_text(config)
    (root / "complete").write_text("ok\n")
    return base, finetune


def register(client: DeltahubClient, name: str, directory: Path, base: str | None) -> None:
    """Create, upload every model file of `directory`, finalize: the untimed setup."""
    client.create_model(name, base)
    for path in sorted(p for p in directory.iterdir() if p.is_file() and is_model_file(p.name)):
        client.upload(f"/models/{name}", path, sha256_of(path))
    client.finalize_model(name)


# ---------------------------------------------------------------- storage backends


@dataclass(frozen=True)
class Backend:
    label: str  # as the table shows it
    settings: dict[str, str]  # DELTAHUB_* database and storage, shared by every process


@contextlib.contextmanager
def backend(storage: str, s3_server: str, workdir: Path, database_url: str
            ) -> Iterator[Backend]:
    if storage == "local":
        blobs = workdir / "blobs"
        blobs.mkdir(parents=True)
        yield Backend("local", {"DELTAHUB_DATABASE_URL": database_url,
                                "DELTAHUB_STORAGE_URL": f"file://{blobs}"})
        return
    running = running_s3rver if s3_server == "s3rver" else running_s3_server
    with running() as server:
        yield Backend(f"S3 ({s3_server})", deployment_settings(
            database_url, server, server.create_bucket(),
            DELTAHUB_S3_ACCESS_KEY_ID=server.access_key_id,
            DELTAHUB_S3_SECRET_ACCESS_KEY=server.secret_access_key))


# ---------------------------------------------------------------- one measured job


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" that ends the command name: state is field 3, utime 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_bytes(pid: int, field: str) -> int:
    """A size field of /proc/<pid>/status (VmHWM: peak resident, VmRSS: now) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field} (Linux only)")


@dataclass(frozen=True)
class JobRun:
    seconds: float  # POST sent → first GET /jobs/<id> answering succeeded
    posted_at: float  # time.monotonic() (CLOCK_MONOTONIC: the same clock in every process)
    seen_at: float
    rss_start: int  # worker VmHWM once started, idle
    rss_peak: int  # worker VmHWM after the job
    cpu_seconds: float  # the worker's, POST → succeeded (the server's is not counted)


def run_job(client: DeltahubClient, worker: WorkerProcess, model: str, options: dict[str, Any],
            poll_s: float, timeout_s: float) -> JobRun:
    """POST a compression for the started `worker`; poll it to `succeeded`.

    The POST goes half a poll interval (`poll_s`, the worker's JOB_POLL_SECONDS) after
    the worker said it started, when its first, empty claim is done: the job then waits
    in the queue for about poll_s / 2, the mean wait of a job arriving at a random moment.
    Posting at once would race that first claim (a wait of 0 or of poll_s).
    """
    time.sleep(poll_s / 2)
    rss_start = proc_status_bytes(worker.pid, "VmHWM")
    cpu_start = proc_cpu_seconds(worker.pid)
    posted_at = time.monotonic()
    job = client.compress(model, "bitdelta", options)
    deadline = posted_at + timeout_s
    while job["status"] not in TERMINAL and time.monotonic() < deadline:
        time.sleep(JOB_POLL_EVERY_SECONDS)
        job = client.get_job(job["id"])
    seen_at = time.monotonic()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']} after "
                           f"{seen_at - posted_at:.0f} s (limit {timeout_s:.0f} s): "
                           f"{job['error']}\n{worker.log_tail()}")
    return JobRun(seen_at - posted_at, posted_at, seen_at, rss_start,
                  proc_status_bytes(worker.pid, "VmHWM"), proc_cpu_seconds(worker.pid) - cpu_start)


@contextlib.contextmanager
def started(worker: WorkerProcess) -> Iterator[WorkerProcess]:
    """Wait for `worker` to say it started; stop it (SIGTERM) when the block ends."""
    try:
        poll_until(worker.settled, WORKER_START_TIMEOUT_SECONDS,
                   f"worker {worker.name} to start", every_s=0.1)
        if not worker.alive():
            raise RuntimeError(f"worker {worker.name} exited at start\n{worker.log_tail()}")
        yield worker
    finally:
        worker.stop()


# ---------------------------------------------------------------- where a job's time goes

# The timed worker (`--timed-worker`): the plain `deltahub worker`, with timers around
# what an attempt calls, each appending one JSON line per call to a file. Only the main
# thread (which runs the attempt) is timed; nested calls (a database write from the
# codec's progress callback) are subtracted from their caller, so the phases add up.
_TIMED_CALLS = {"fetch_model": "download", "open_model": "download",
                "compress_bitdelta": "encode", "verify_delta": "verify",
                "store_file": "upload"}
PHASES = ("download", "encode", "verify", "upload", "db")


def run_timed_worker(name: str, events_path: Path) -> None:
    """`deltahub worker --cpu-only --name <name>` with timers; runs until SIGTERM."""
    import registry.jobs.inputs as inputs
    import registry.jobs.runner as runner
    from registry.cli.app import main
    from registry.infra.database import Database
    from registry.jobs import queue

    main_thread = threading.main_thread()
    nested: list[float] = []  # main thread's open timers: seconds of their timed callees
    lock = threading.Lock()  # reads are recorded from the reader threads too
    with events_path.open("a", buffering=1) as events:

        def record(event: dict[str, Any]) -> None:
            with lock:
                events.write(json.dumps(event) + "\n")

        @contextlib.contextmanager
        def phase(label: str) -> Iterator[None]:
            if threading.current_thread() is not main_thread:
                yield
                return
            start = time.monotonic()
            nested.append(0.0)
            try:
                yield
            finally:
                inner, end = nested.pop(), time.monotonic()
                if nested:
                    nested[-1] += end - start
                record({"phase": label, "start": start, "end": end,
                        "exclusive": end - start - inner})

        def timed(label: str, call: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(call)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with phase(label):
                    return call(*args, **kwargs)
            return wrapper

        def timed_session(opened: Callable[[Database], Any]) -> Callable[[Database], Any]:
            @contextlib.contextmanager
            def wrapper(self: Database) -> Iterator[Any]:
                with phase("db"), opened(self) as session:
                    yield session
            return wrapper

        def marked(label: str, call: Callable[..., Any]) -> Callable[..., Any]:
            """Note when `call` returned a job (claim) or ended one (complete)."""
            @functools.wraps(call)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = call(*args, **kwargs)
                if result is not None:
                    now = time.monotonic()
                    record({"phase": label, "start": now, "end": now, "exclusive": 0.0})
                return result
            return wrapper

        def spanned(call: Callable[..., None]) -> Callable[..., None]:
            """A streamed read, on any thread: when it was in flight, and its bytes."""
            @functools.wraps(call)
            def wrapper(self: Any, file: str, offset: int, buffer: memoryview) -> None:
                start = time.monotonic()
                call(self, file, offset, buffer)
                record({"phase": "read", "start": start, "end": time.monotonic(),
                        "exclusive": 0.0, "bytes": len(buffer)})
            return wrapper

        # Whichever input function runner.py calls now: fetch_model downloads both
        # models before encoding; open_model (ranged reads) leaves the reading to the codec.
        for attribute, label in _TIMED_CALLS.items():
            if hasattr(runner, attribute):
                setattr(runner, attribute, timed(label, getattr(runner, attribute)))
        source = getattr(inputs, "BlobSource", None)  # what open_model returns
        if source is not None:
            source.read_into = spanned(source.read_into)
        for opener in ("reading", "writing"):
            setattr(Database, opener, timed_session(getattr(Database, opener)))
        queue.claim = marked("claimed", queue.claim)
        queue.complete = marked("completed", queue.complete)
        sys.argv = ["deltahub", "worker", "--cpu-only", "--name", name]
        main()


def start_timed_worker(settings: dict[str, str], folder: Path, name: str,
                       events_path: Path) -> WorkerProcess:
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "--timed-worker", name, "--events", str(events_path)],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT,
            env=process_environment(settings))
    return WorkerProcess(name, process, log_path)


def breakdown(events_path: Path, job: JobRun) -> dict[str, float]:
    """Split POST → seen-succeeded into queue wait, the attempt's phases, and the rest.

    queue: POST until the claiming transaction ended (the worker sleeps JOB_POLL_SECONDS
    between empty claims); phases: exclusive seconds in each, from the claim to the end
    of the transaction that completed the job; other: the rest of that span (Python
    between the timed calls); seen: from that commit to the GET that saw `succeeded`.
    """
    events = [json.loads(line) for line in events_path.read_text().splitlines()]

    def transaction_around(label: str) -> float:
        """End of the database transaction in which the `label` mark was made."""
        mark = min(e["end"] for e in events if e["phase"] == label)
        return float(min(e["end"] for e in events if e["phase"] == "db" and e["end"] >= mark))

    claimed_at, done_at = transaction_around("claimed"), transaction_around("completed")
    attempt = [e for e in events if e["start"] >= claimed_at and e["end"] <= done_at]
    spans = {p: sum(e["exclusive"] for e in attempt if e["phase"] == p) for p in PHASES}
    reads = [e for e in attempt if e["phase"] == "read"]
    return {"total": job.seconds, "queue": claimed_at - job.posted_at, **spans,
            "other": done_at - claimed_at - sum(spans.values()),
            "seen": job.seen_at - done_at, "reads": covered(reads),
            "read_gb": sum(e["bytes"] for e in reads) / GB}


def covered(events: list[dict[str, Any]]) -> float:
    """Seconds during which at least one of `events` was in progress (reads overlap)."""
    total, reach = 0.0, float("-inf")
    for e in sorted(events, key=lambda e: e["start"]):
        if e["end"] > reach:
            total += e["end"] - max(e["start"], reach)
            reach = e["end"]
    return total


# ---------------------------------------------------------------- one size on one backend


@dataclass
class Row:
    layers: int
    storage: str
    direct: list[dict[str, float]] = field(default_factory=list)  # bitdelta_bench children
    jobs: list[JobRun] = field(default_factory=list)  # verify=off
    verify_auto: JobRun | None = None
    phases: dict[str, float] | None = None

    @property
    def gb_in(self) -> float:
        return self.direct[0]["bytes_in"] / GB

    @property
    def direct_s(self) -> float:
        return min(r["seconds"] for r in self.direct)

    @property
    def job_s(self) -> float:
        return min(j.seconds for j in self.jobs)

    @property
    def ratio(self) -> float:
        return self.job_s / self.direct_s

    @property
    def direct_cpu(self) -> float:
        return min(r["cpu_seconds"] for r in self.direct)

    @property
    def job_cpu(self) -> float:
        return min(j.cpu_seconds for j in self.jobs)

    @property
    def direct_rss(self) -> float:
        return max(r["rss_peak"] for r in self.direct)

    @property
    def worker_rss(self) -> int:
        return max(j.rss_peak for j in self.jobs)

    @property
    def worker_rss_start(self) -> int:
        return max(j.rss_start for j in self.jobs)


@dataclass(frozen=True)
class Deployment:
    client: DeltahubClient
    settings: dict[str, str]  # DELTAHUB_* for a worker
    folder: Path
    poll_s: float  # the workers' JOB_POLL_SECONDS


def measure(deployment: Deployment, row: Row, base: Path, finetune: Path,
            args: argparse.Namespace) -> Row:
    model, base_name = f"ft-{row.layers}l", f"base-{row.layers}l"
    register(deployment.client, base_name, base, None)
    register(deployment.client, model, finetune, base_name)
    timeout = JOB_TIMEOUT_SECONDS + JOB_TIMEOUT_PER_LAYER_SECONDS * row.layers
    pool = WorkerPool(deployment.settings, deployment.folder / "workers")

    def job(verify: str, timed: bool = False) -> JobRun:
        """One job on a fresh worker (`timed`: the timers' one, into row.phases)."""
        name = f"{'t' if timed else 'w'}{row.layers}l-{uuid.uuid4().hex[:6]}"
        events = deployment.folder / f"{name}.events.jsonl"
        worker = (start_timed_worker(deployment.settings, deployment.folder / "workers", name,
                                     events) if timed else pool.start(name))
        with started(worker):
            # A new adapter name per run: identical output under one name is one version.
            run = run_job(deployment.client, worker, model,
                          {"verify": verify, "name": f"{model}-{name}"}, deployment.poll_s,
                          timeout)
        if timed:
            row.phases = breakdown(events, run)
        return run

    def direct() -> None:
        try:
            row.direct.append(run_child("compress", base, finetune, False))
        except subprocess.CalledProcessError as exc:  # its output was captured: show it
            raise RuntimeError(f"the direct compress_bitdelta run failed:\n"
                               f"{(exc.stderr or '')[-4000:]}") from exc

    def queued() -> None:
        row.jobs.append(job("off"))

    for repeat in range(args.repeats):
        for step in (direct, queued) if repeat % 2 == 0 else (queued, direct):
            step()
        print(f"  {row.storage}, {row.layers} layers, repeat {repeat + 1}: direct "
              f"{row.direct[-1]['seconds']:.2f} s, job {row.jobs[-1].seconds:.2f} s",
              flush=True)
    if not args.no_verify_auto:
        row.verify_auto = job("auto")
    if not args.no_breakdown:
        job("off", timed=True)
    return row


def bench_storage(storage: str, args: argparse.Namespace,
                  models: dict[int, tuple[Path, Path]]) -> list[Row]:
    workdir = ROOT / f"run-{storage}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    url = f"sqlite:///{workdir / 'deltahub.db'}"
    try:
        upgrade(url)
        token = issue_admin_token(url, "job-bench")
        with backend(storage, args.s3_server, workdir, url) as store:
            poll_s = args.poll_seconds or Settings.model_fields["JOB_POLL_SECONDS"].default
            workers = {**store.settings, "DELTAHUB_JOB_POLL_SECONDS": str(poll_s)}
            with serve(url, workdir / "server",
                       {**store.settings, "DELTAHUB_EMBEDDED_WORKERS": "0"}) as server:
                client = DeltahubClient(server.url, token, timeout_seconds=CLIENT_TIMEOUT_SECONDS)
                try:
                    deployment = Deployment(client, workers, workdir, poll_s)
                    return [measure(deployment, Row(n, store.label), *models[n], args)
                            for n in args.layers]
                finally:
                    client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- the tables


def main_table(rows: list[Row]) -> str:
    lines = ["| layers | storage | fine-tune GB | direct s | job s | job/direct | "
             f"≤ {RATIO_AIM}× | CPU s direct / job | direct peak RSS MB | "
             "worker RSS idle → peak MB |",
             "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.layers} | {r.storage} | {r.gb_in:.2f} | {r.direct_s:.2f} | {r.job_s:.2f} | "
            f"{r.ratio:.2f}× | {'yes' if r.ratio <= RATIO_AIM else '**no**'} | "
            f"{r.direct_cpu:.1f} / {r.job_cpu:.1f} | {r.direct_rss / MB:.0f} | "
            f"{r.worker_rss_start / MB:.0f} → {r.worker_rss / MB:.0f} |")
    return "\n".join(lines)


def verify_table(rows: list[Row]) -> str:
    lines = ["| layers | storage | job s, verify=auto | ÷ direct s | ÷ job s, verify=off | "
             "worker peak RSS MB |", "|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.verify_auto is not None:
            v = r.verify_auto
            lines.append(f"| {r.layers} | {r.storage} | {v.seconds:.2f} | "
                         f"{v.seconds / r.direct_s:.2f}× | {v.seconds / r.job_s:.2f}× | "
                         f"{v.rss_peak / MB:.0f} |")
    return "\n".join(lines)


def breakdown_table(rows: list[Row]) -> str:
    columns = ("total", "queue", "download", "encode", "upload", "db", "other", "seen")
    lines = ["| layers | storage | direct s (best) | job s | queue wait | download | encode | "
             "upload | DB | other | seen after commit | streamed reads in flight s (GB/s) |",
             "|---:|---|" + "---:|" * (len(columns) + 2)]
    for r in rows:
        if r.phases is not None:
            cells = " | ".join(f"{r.phases[c]:.2f}" for c in columns)
            reads = r.phases["reads"]
            rate = f"{reads:.2f} ({r.phases['read_gb'] / reads:.2f})" if reads else "none"
            lines.append(f"| {r.layers} | {r.storage} | {r.direct_s:.2f} | {cells} | {rate} |")
    return "\n".join(lines)


def fit(layers: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares (fixed, per layer) seconds."""
    n = len(layers)
    mean_x, mean_y = sum(layers) / n, sum(seconds) / n
    sxx = sum((x - mean_x) ** 2 for x in layers)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(layers, seconds, strict=True)) / sxx
    return mean_y - slope * mean_x, slope


def summary(rows: list[Row], storage_labels: list[str]) -> list[str]:
    """Per backend: whether peak RSS is flat, and the fixed + per-layer split of the times."""
    lines = []
    for label in storage_labels:
        mine = [r for r in rows if r.storage == label]
        peaks = [r.worker_rss for r in mine]
        flat = max(peaks) <= min(peaks) * (1 + FLAT_RSS_SPREAD)
        lines.append(f"- {label}: worker peak RSS {min(peaks) / MB:.0f}–{max(peaks) / MB:.0f} MB "
                     f"over {mine[0].layers}–{mine[-1].layers} layers: "
                     f"{'flat' if flat else '**not flat**'} (aim: spread ≤ "
                     f"{FLAT_RSS_SPREAD:.0%}).")
        if len(mine) >= 2:
            xs = [r.layers for r in mine]
            job_fixed, job_per = fit(xs, [r.job_s for r in mine])
            direct_fixed, direct_per = fit(xs, [r.direct_s for r in mine])
            if job_per <= 0 or direct_per <= 0:  # fixed costs and noise swamp the sizes
                lines.append("  (no per-layer cost to fit: the times do not grow with size)")
                continue
            at_32 = (job_fixed + 32 * job_per) / (direct_fixed + 32 * direct_per)
            lines.append(f"  Least-squares over the sizes: job {job_fixed:.2f} s + "
                         f"{job_per:.2f} s/layer, direct {direct_fixed:.2f} s + "
                         f"{direct_per:.2f} s/layer; per-layer ratio {job_per / direct_per:.2f}×"
                         f" (extrapolated to 32 layers, Llama-2-7B's: {at_32:.2f}×).")
    return lines


def inputs_in_place() -> str:
    import registry.jobs.runner as runner

    if hasattr(runner, "open_model"):
        return "open_model (inputs streamed with ranged reads)"
    if hasattr(runner, "fetch_model"):
        return "fetch_model (both models downloaded to the worker's disk before encoding)"
    return "unknown (runner.py has neither fetch_model nor open_model)"


def code_fingerprint() -> str:
    """A digest of the code a worker and the codec run, to see whether it changed mid-run:
    each worker imports the working tree afresh, and others may be editing it."""
    digest = hashlib.sha256()
    repo = ROOT.parents[1]
    for path in sorted([*(repo / "compress").rglob("*.py"), *(repo / "registry").rglob("*.py")]):
        digest.update(str(path.relative_to(repo)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def report(rows: list[Row], args: argparse.Namespace, started_at: datetime,
           load_before: float, inputs: str, code: tuple[str, str]) -> str:
    labels = list(dict.fromkeys(r.storage for r in rows))
    parts = [
        f"Run {started_at:%Y-%m-%d %H:%M} UTC, commit {commit()}, {machine()}, "
        f"{'a GPU unused (--cpu-only)' if torch.cuda.is_available() else 'no GPU'}; "
        f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. "
        f"SQLite; best of {args.repeats} per cell, job and direct alternating; warm page "
        f"cache; the worker's inputs at the start: {inputs}; code (compress/, registry/) "
        + (f"{code[0]}, unchanged during the run." if code[0] == code[1] else
           f"**changed during the run** ({code[0]} → {code[1]}): rows may mix versions."),
        main_table(rows), "\n".join(summary(rows, labels))]
    if not args.no_verify_auto:
        parts += ["verify=auto (information: verification is a separate cost; one run):",
                  verify_table(rows)]
    if not args.no_breakdown:
        parts += ["Where one job's time goes (seconds; a separate verify=off run on a timed "
                  "worker; queue wait + phases + other + seen = job s; streamed reads "
                  "(open_model) happen on the codec's reader threads during encode, and the "
                  "last column is the time at least one was in flight):",
                  breakdown_table(rows)]
    return "\n\n".join(parts)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--storage", nargs="+", choices=["local", "s3"], default=["local", "s3"])
    parser.add_argument("--s3-server", choices=["s3rver", "moto"],
                        default="s3rver" if S3RVER_BIN.exists() and shutil.which("node")
                        else "moto", help="default: s3rver when installed, else moto")
    parser.add_argument("--poll-seconds", type=float,
                        help="DELTAHUB_JOB_POLL_SECONDS for the workers (default: the setting's)")
    parser.add_argument("--no-verify-auto", action="store_true",
                        help="skip the verify=auto row")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the timed worker's run")
    parser.add_argument("--tiny", action="store_true", help="small layers: a quick smoke run")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--clean", action="store_true",
                        help="delete .bench/jobs and the generated models afterwards")
    parser.add_argument("--timed-worker", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timed_worker:
        run_timed_worker(args.timed_worker, args.events)
        return
    if args.repeats < 1 or min(args.layers) < 1:
        parser.error("--repeats and every --layers value must be at least 1")

    shape, tag = (TINY, "tiny") if args.tiny else (LLAMA_7B, "llama7b")
    started_at, load_before = datetime.now(UTC), os.getloadavg()[0]
    inputs, code_before = inputs_in_place(), code_fingerprint()
    try:
        models = {n: model_dirs(shape, n, tag) for n in args.layers}
        rows = [row for storage in args.storage for row in bench_storage(storage, args, models)]
        text = report(rows, args, started_at, load_before, inputs,
                      (code_before, code_fingerprint()))
        print("\n" + text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
    finally:
        if args.clean:
            shutil.rmtree(ROOT, ignore_errors=True)
            for n in args.layers:
                shutil.rmtree(bitdelta_bench.ROOT / f"{tag}-{n}L", ignore_errors=True)


if __name__ == "__main__":
    main()
