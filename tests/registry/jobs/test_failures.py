"""Compression jobs survive real process failures (issue 10).

Everything runs as deployed: PostgreSQL, an S3 server over HTTP, `deltahub serve` without
embedded workers, and `deltahub worker` processes, all on loopback and configured only by
`DELTAHUB_*` variables. Workers are SIGKILLed at every stage of a job, paused with SIGSTOP
past their lease and resumed, and run four at a time; afterwards every job must have made
exactly one adapter, a paused worker must not have touched its successor's result, and
garbage collection must leave the bucket holding exactly the blobs the database names.

Points inside an attempt that no outside timing can hit (between the blob commit and the
database commit) use the fault hook in registry/jobs/runner.py; the window between a
staged upload and its commit is held open by a relay in front of S3 (tests/registry/
s3gate.py). The tiny models make a job take about a second.

On failure, the server's and every worker's log and the jobs table are printed.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from registry.blobs.repository import BlobRepository
from registry.client import DeltahubClient, sha256_of
from registry.infra.engines import make_engine
from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX
from registry.tables import Adapter, Job, JobStatus, Status
from tests.registry.conftest import TinyModels
from tests.registry.s3gate import S3Gate
from tests.registry.serverproc import ServerProcess, issue_admin_token, serve
from tests.registry.workerproc import (
    WorkerPool,
    WorkerProcess,
    deployment_settings,
    poll_until,
    run_cli,
)
from tests.s3server import S3Server

# PostgreSQL, emptied for each test (tests/conftest.py `database_url`): SKIP LOCKED
# claims and row locks are what the workers share.
pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3,
              pytest.mark.parametrize("database_url", ["postgres"], indirect=True)]

JOBS = 20
LEASE_SECONDS = 2
JOB_SETTINGS = {
    "DELTAHUB_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    "DELTAHUB_JOB_RETRY_BASE_SECONDS": "0.2",
    # Every crash costs its job an attempt; ten leaves room for the crashes a test makes.
    "DELTAHUB_JOB_MAX_ATTEMPTS": "10",
    "DELTAHUB_JOB_POLL_SECONDS": "0.2",
}
# Bounds on waits. A job takes under a second; starting a worker (importing torch) about
# four seconds of CPU, which several workers starting at once share on two cores.
START_SECONDS = 90.0
JOBS_SECONDS = 150.0
LEASE_LOST_SECONDS = 30.0

# Each fault point of registry/jobs/runner.py, and the stages its job may show when the
# worker dies there ("committed" is after the uploads, before the completing write).
# Codec progress is written at most every 0.5 s, so a tiny job may still show an earlier
# stage in the codec's stages.
CRASH_POINTS = {"reading": {"reading"}, "compressing": {"reading", "compressing"},
                "verifying": {"reading", "compressing", "verifying"},
                "uploading": {"uploading"}, "committed": {"uploading"}}
# Where a job is in the middle of its work: inputs fetched or being fetched, codec running.
MID_RUN_STAGES = {"reading", "compressing", "verifying"}
FAULT_LINE = re.compile(r"fault injection: (SIGKILL|SIGSTOP) at '(\w+)' in job (\d+)")
SUCCESS_LINE = re.compile(r"job (\d+) succeeded: adapter (\d+)")
LEASE_LOST_LINE = re.compile(r"job (\d+): lease lost")


@dataclass
class Deployment:
    """One deployment's processes, and views of its database and bucket."""

    server: ServerProcess
    env: dict[str, str]  # its DELTAHUB_* settings and the CLI's server and token
    workers: WorkerPool
    client: DeltahubClient
    engine: Engine
    s3: Any  # a boto3 S3 client
    bucket: str
    folder: Path

    def register(self, models: TinyModels) -> None:
        """The tiny base and its fine-tune, over HTTP."""
        for name, directory, base in (("tiny-base", models.base, None),
                                      ("tiny-ft", models.finetune, "tiny-base")):
            self.client.create_model(name, base)
            for path in sorted(p for p in directory.iterdir() if p.is_file()):
                self.client.upload(f"/models/{name}", path, sha256_of(path))
            self.client.finalize_model(name)

    def enqueue(self, names: Sequence[str]) -> list[int]:
        """A BitDelta job per adapter name; their ids."""
        return [self.client.compress("tiny-ft", "bitdelta", {"name": name})["id"]
                for name in names]

    def jobs(self) -> dict[int, Job]:
        with Session(self.engine) as session:
            return {job.id: job for job in session.scalars(select(Job).order_by(Job.id))}

    def job(self, job_id: int) -> Job:
        with Session(self.engine) as session:
            job = session.get(Job, job_id)
            assert job is not None, f"no job {job_id}"
            return job

    def adapters(self) -> list[Adapter]:
        """Every adapter row, drafts included."""
        with Session(self.engine) as session:
            return list(session.scalars(select(Adapter).order_by(Adapter.id)))

    def referenced_blobs(self) -> set[str]:
        with Session(self.engine) as session:
            return BlobRepository(session).referenced()

    def row_unlocked(self, job_id: int) -> bool:
        """Whether no transaction holds the job's row lock (a claim would not skip it)."""
        try:
            with self.engine.connect() as conn, conn.begin():
                conn.execute(select(Job.id).where(Job.id == job_id)
                             .with_for_update(nowait=True))
        except OperationalError:  # lock_not_available
            return False
        return True

    def wait_succeeded(self, job_ids: Sequence[int]) -> dict[int, Job]:
        poll_until(lambda: _all_succeeded(self, job_ids), JOBS_SECONDS,
                   f"jobs {list(job_ids)} to succeed", every_s=0.2, diagnose=self.jobs_table)
        return self.jobs()

    def bucket_keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                 Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def multipart_uploads(self) -> list[str]:
        listed = self.s3.list_multipart_uploads(Bucket=self.bucket)
        return [upload["Key"] for upload in listed.get("Uploads", [])]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, self.folder / "cli", *args)

    def jobs_table(self) -> str:
        return "jobs:\n" + "\n".join(_describe(j) for j in self.jobs().values())

    def diagnostics(self) -> str:
        try:
            jobs = self.jobs_table()
        except Exception as exc:  # the database may be what failed
            jobs = f"(jobs unreadable: {exc})"
        return (f"--- server ---\n{self.server.log_tail()}\n{self.workers.log_tails()}\n"
                f"{jobs}")


def _describe(job: Job) -> str:
    return (f"job {job.id} {job.adapter_name}: {job.status.value} at {job.stage}, attempt "
            f"{job.attempt}, owner {job.lease_owner}, error {job.error_name} "
            f"{job.error_detail or ''}")


@pytest.fixture
def deployment(database_url: str, s3_server: S3Server, s3_bucket: str,
               tmp_path: Path) -> Iterator[Deployment]:
    """An empty database, a new bucket, and `deltahub serve` without embedded workers;
    workers are started by the test."""
    env = deployment_settings(database_url, s3_server, s3_bucket,
                              DELTAHUB_WORK_DIR=str(tmp_path / "work"), **JOB_SETTINGS)
    with serve(database_url, tmp_path / "server",
               env={**env, "DELTAHUB_EMBEDDED_WORKERS": "0"}) as server:
        token = issue_admin_token(database_url, "job-failures")
        env.update(DELTAHUB_URL=server.url, DELTAHUB_TOKEN=token,
                   COLUMNS="200")  # CLI tables unwrapped
        workers = WorkerPool(env, tmp_path / "workers")
        engine = make_engine(database_url)
        found = Deployment(server, env, workers, DeltahubClient(server.url, token),
                           engine, s3_server.client, s3_bucket, tmp_path)
        try:
            yield found
        finally:
            workers.stop_all()
            # pytest shows what a test printed only when it fails.
            print(found.diagnostics())
            found.client.close()
            engine.dispose()


def _names(count: int) -> list[str]:
    return [f"job-{i}" for i in range(count)]


def _fault_job(worker: WorkerProcess, signal_name: str, point: str) -> int:
    """The job a worker's fault hook fired in, from its log."""
    found = [(s, p, int(j)) for s, p, j in FAULT_LINE.findall(worker.log_text())]
    assert [f[:2] for f in found] == [(signal_name, point)], worker.log_tail()
    return found[0][2]


def _leased_by(d: Deployment, worker: WorkerProcess) -> Job | None:
    return next((j for j in d.jobs().values()
                 if j.status is JobStatus.RUNNING and j.lease_owner == worker.name), None)


# -- 1. crash recovery -------------------------------------------------------------------

def test_jobs_survive_workers_killed_at_every_stage(deployment: Deployment,
                                                    tiny_models: TinyModels) -> None:
    """Twenty jobs; workers SIGKILLed while reading, compressing, verifying, uploading,
    between the blob commit and the database commit, inside a commit (staged object left
    behind) and at random moments; fresh workers drain the queue. Each job then made one
    adapter with one attempt per interruption, and gc leaves only referenced blobs."""
    d = deployment
    d.register(tiny_models)
    hooked = {p: d.workers.start(f"crash-{p}", {"DELTAHUB_FAULT_CRASH_AT": p})
              for p in CRASH_POINTS}
    with S3Gate(d.env["DELTAHUB_S3_ENDPOINT_URL"]) as gate:
        gated = d.workers.start("crash-mid-commit",
                                {"DELTAHUB_S3_ENDPOINT_URL": gate.url})
        # Jobs only once every worker polls: each then claims a fresh job of its own,
        # not one a crashed worker left (its lease runs out only 2 s later).
        d.workers.wait_started([*hooked.values(), gated], START_SECONDS)
        job_ids = d.enqueue(_names(JOBS))
        interrupted = Counter(_crash_at_hooks(d, hooked))
        poll_until(gate.held.is_set, START_SECONDS, "a commit request to hold",
                   diagnose=d.diagnostics)
        leftovers = d.bucket_keys(STAGING_PREFIX)
        held = _leased_by(d, gated)
        assert gated.kill() == -signal.SIGKILL
    assert leftovers, "the held commit's staged object should be in the bucket"
    assert held is not None, d.jobs_table()
    assert held.stage == "uploading", _describe(held)
    interrupted[held.id] += 1
    assert len(interrupted) == len(CRASH_POINTS) + 1, "each crash should hold its own job"

    interrupted.update(_drain_with_random_kills(d, job_ids, kills=2, rng=random.Random(10)))
    rows = d.wait_succeeded(job_ids)
    _assert_one_adapter_per_job(d, rows)
    attempts = {j: rows[j].attempt for j in job_ids}
    assert attempts == {j: 1 + interrupted[j] for j in job_ids}, d.jobs_table()

    d.workers.stop_all()
    _assert_gc_leaves_only_referenced_blobs(d)


def _crash_at_hooks(d: Deployment, hooked: dict[str, WorkerProcess]) -> list[int]:
    """Wait for each hooked worker to kill itself at its point; the jobs they held."""
    crashed = []
    for point, worker in hooked.items():
        assert worker.wait_exit(JOBS_SECONDS) == -signal.SIGKILL, worker.log_tail()
        job = d.job(_fault_job(worker, "SIGKILL", point))
        # Still its worker's: nobody else has run since (the lease expired unseen).
        assert (job.status, job.lease_owner, job.attempt) == (
            JobStatus.RUNNING, worker.name, 1), _describe(job)
        assert job.stage in CRASH_POINTS[point], _describe(job)
        crashed.append(job.id)
    return crashed


def _drain_with_random_kills(d: Deployment, job_ids: Sequence[int], kills: int,
                             rng: random.Random) -> list[int]:
    """Run two workers until every job succeeded, SIGKILLing one `kills` times at a random
    moment after it claimed a job and starting a fresh one instead; the jobs those kills
    interrupted (the kill can land after that job ended, or in the next one)."""
    serial = itertools.count()

    def fresh() -> WorkerProcess:
        return d.workers.start(f"drain-{next(serial)}")

    active, interrupted, kills_done = [fresh(), fresh()], [], 0
    deadline = time.monotonic() + JOBS_SECONDS
    while not _all_succeeded(d, job_ids):
        assert time.monotonic() < deadline, f"the queue did not drain\n{d.jobs_table()}"
        for worker in active:
            assert worker.alive(), f"{worker.name} exited on its own\n{worker.log_tail()}"
        if kills_done < kills and (victim := next((w for w in active if _leased_by(d, w)),
                                                  None)):
            time.sleep(rng.uniform(0.0, 0.4))
            assert victim.kill() == -signal.SIGKILL
            kills_done += 1
            left = _left_running(d, victim)
            print(f"killed {victim.name}: it left {[_describe(j) for j in left]}")
            interrupted += [j.id for j in left]
            active[active.index(victim)] = fresh()
        time.sleep(0.05)
    assert kills_done == kills, f"only {kills_done} of {kills} kills found a job to hit"
    return interrupted


def _left_running(d: Deployment, dead: WorkerProcess) -> list[Job]:
    """The jobs a killed worker held. PostgreSQL ends the dead connection's transaction
    (a claim or a completion in flight) as soon as it sees the socket closed; once no
    job row is locked, every job's state is final for this question."""
    time.sleep(0.2)
    poll_until(lambda: all(d.row_unlocked(j) for j in d.jobs()), 10,
               "the killed worker's transactions to end", every_s=0.01)
    return [j for j in d.jobs().values()
            if j.status is JobStatus.RUNNING and j.lease_owner == dead.name]


def _all_succeeded(d: Deployment, job_ids: Sequence[int]) -> bool:
    rows = d.jobs()
    ended = [rows[j] for j in job_ids
             if rows[j].status in (JobStatus.FAILED, JobStatus.CANCELLED)]
    assert not ended, f"jobs ended without success: {[_describe(j) for j in ended]}"
    return all(rows[j].status is JobStatus.SUCCEEDED for j in job_ids)


def _assert_one_adapter_per_job(d: Deployment, rows: dict[int, Job]) -> None:
    """Each job points at an adapter of its own, version 1 of its name; no other row."""
    adapters = {a.id: a for a in d.adapters()}
    assert sorted(a.name for a in adapters.values()) == sorted(_names(len(rows)))
    assert {(a.status, a.version) for a in adapters.values()} == {(Status.READY, 1)}
    assert {j.adapter_name: adapters[j.adapter_id].name for j in rows.values()
            if j.adapter_id is not None} == {n: n for n in _names(len(rows))}
    listed = list(d.client.list_adapters(base="tiny-base"))
    assert sorted((a["name"], a["version"]) for a in listed) == sorted(
        (name, 1) for name in _names(len(rows)))


def _assert_gc_leaves_only_referenced_blobs(d: Deployment) -> None:
    gc = d.cli("gc", "--grace-seconds", "0")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    keys = d.bucket_keys()
    assert [k for k in keys if not k.startswith(BLOB_PREFIX)] == [], gc.stdout
    assert {k.removeprefix(BLOB_PREFIX) for k in keys} == d.referenced_blobs(), gc.stdout
    assert d.multipart_uploads() == []


# -- 2. many workers, and fencing ----------------------------------------------------------

def test_four_workers_complete_each_job_exactly_once(deployment: Deployment,
                                                     tiny_models: TinyModels) -> None:
    """Four workers polling one queue of twenty jobs: each job is claimed and completed
    once (one attempt, one success in one worker's log, one adapter)."""
    d = deployment
    d.register(tiny_models)
    pool = [d.workers.start(f"pool-{i}") for i in range(4)]
    d.workers.wait_started(pool, START_SECONDS)
    job_ids = d.enqueue(_names(JOBS))
    rows = d.wait_succeeded(job_ids)
    _assert_one_adapter_per_job(d, rows)
    # The completing transaction committed once per job: one success line each, across
    # all workers, naming the adapter the job points at.
    successes = [(w.name, int(j), int(a)) for w in pool
                 for j, a in SUCCESS_LINE.findall(w.log_text())]
    assert sorted((j, a) for _, j, a in successes) == sorted(
        (j, rows[j].adapter_id) for j in job_ids)
    assert not [w.name for w in pool if LEASE_LOST_LINE.search(w.log_text())]
    assert {j: rows[j].attempt for j in job_ids} == dict.fromkeys(job_ids, 1)
    by_worker = Counter(name for name, _, _ in successes)
    print(f"jobs per worker: {dict(by_worker)}")
    assert len(by_worker) >= 2, "four polling workers should share twenty jobs"


def test_a_paused_worker_cannot_overwrite_the_new_owner(deployment: Deployment,
                                                        tiny_models: TinyModels) -> None:
    """A worker paused past its lease (SIGSTOP), its job taken over and finished by
    another, then resumed (SIGCONT) must find its lease lost and change nothing: first
    paused between its blob commit and its completing write, then in mid-run."""
    d = deployment
    d.register(tiny_models)
    first = d.workers.start("fence-a", {"DELTAHUB_FAULT_STOP_AT": "committed"})
    d.workers.wait_started([first], START_SECONDS)
    [job_id] = d.enqueue(["fenced-at-commit"])
    poll_until(first.paused, JOBS_SECONDS, "fence-a to pause itself", diagnose=d.diagnostics)
    assert _fault_job(first, "SIGSTOP", "committed") == job_id
    paused = d.job(job_id)
    assert (paused.status, paused.lease_owner, paused.attempt) == (
        JobStatus.RUNNING, first.name, 1), _describe(paused)
    # A pause inside the heartbeat's transaction would keep the row locked, and every
    # claim (SKIP LOCKED) away from the job until fence-a resumes.
    assert d.row_unlocked(job_id), "fence-a paused holding the job's row lock"
    second = d.workers.start("fence-b")
    _takeover_then_resume(d, job_id, paused=first, successor=second)

    second.pause()  # idle: so the next job is fence-a's
    poll_until(second.paused, 10, "fence-b to pause")
    job_id, stage = _pause_while_holding(d, first)
    print(f"fence-a paused holding job {job_id} at stage {stage}")
    second.resume()
    _takeover_then_resume(d, job_id, paused=first, successor=second)
    jobs = d.jobs().values()
    assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}
    assert sorted(a.name for a in d.adapters()) == sorted(j.adapter_name for j in jobs)


def _takeover_then_resume(d: Deployment, job_id: int, paused: WorkerProcess,
                          successor: WorkerProcess) -> None:
    """The successor takes the paused worker's job once its lease ends and finishes it;
    the paused worker, resumed, must report its lease lost and leave the job as it is."""
    d.wait_succeeded([job_id])
    finished = d.client.get_job(job_id)
    assert finished["attempt"] == 2, finished
    assert re.search(rf"job {job_id} succeeded: adapter {finished['adapter']['id']}\b",
                     successor.log_text()), successor.log_tail()
    paused.resume()
    poll_until(lambda: re.search(rf"job {job_id}: lease lost", paused.log_text()),
               LEASE_LOST_SECONDS, f"{paused.name} to find its lease lost",
               diagnose=d.diagnostics)
    assert d.client.get_job(job_id) == finished  # not a field rewritten, updated_at included
    assert f"job {job_id} succeeded" not in paused.log_text()
    same_name = [a for a in d.adapters() if a.name == finished["adapter_name"]]
    assert [(a.id, a.version) for a in same_name] == [(finished["adapter"]["id"], 1)]


def _pause_while_holding(d: Deployment, worker: WorkerProcess,
                         tries: int = 5) -> tuple[int, str]:
    """SIGSTOP `worker` in the middle of a job, outside any transaction; (job id, stage).

    Polled from outside, the pause can land after the job ended (a new job is then
    queued) or inside one of the worker's short transactions, whose row lock would keep
    any other worker from claiming the job until it resumes (then it is resumed and
    paused again a moment later).
    """
    for attempt in range(tries):
        [job_id] = d.enqueue([f"fenced-mid-run-{attempt}"])
        for _ in range(tries):
            job = poll_until(functools.partial(_mid_run_or_ended, d, job_id), JOBS_SECONDS,
                             f"job {job_id} to reach {sorted(MID_RUN_STAGES)}",
                             every_s=0.005)
            if job.status is not JobStatus.RUNNING:
                break  # it ended before the pause: try again with another job
            worker.pause()
            poll_until(worker.paused, 10, f"{worker.name} to pause")
            job = d.job(job_id)
            if job.status is JobStatus.RUNNING and d.row_unlocked(job_id):
                assert job.lease_owner == worker.name, _describe(job)
                return job_id, job.stage
            worker.resume()
            time.sleep(0.02)
        d.wait_succeeded([job_id])
    raise AssertionError(f"could not pause {worker.name} while it held a job\n"
                         f"{d.jobs_table()}")


def _mid_run_or_ended(d: Deployment, job_id: int) -> Job | None:
    """The job once it is in the middle of its work, or has ended; None before."""
    job = d.job(job_id)
    if job.status is JobStatus.RUNNING:
        return job if job.stage in MID_RUN_STAGES else None
    return None if job.status is JobStatus.QUEUED else job


# -- 3. the deployment shape, driven by the CLI ----------------------------------------------

def test_the_deployment_shape_without_docker(deployment: Deployment, tiny_models: TinyModels,
                                             tmp_path: Path) -> None:
    """docker-compose's shape as plain processes: push, compress (BitDelta and LoRA) with
    --wait, list and pull through the CLI, the jobs run by two `deltahub worker`s."""
    d = deployment
    workers = [d.workers.start(f"worker-{i}") for i in range(2)]
    for args in (("push-model", str(tiny_models.base), "--name", "tiny-base"),
                 ("push-model", str(tiny_models.finetune), "--name", "tiny-ft",
                  "--base", "tiny-base")):
        _run_ok(d, *args)
    d.workers.wait_started(workers, START_SECONDS)
    job_ids = []
    for method, extra in (("bitdelta", ()), ("lora", ("--rank", "4"))):
        done = _run_ok(d, "compress", "tiny-ft", "--method", method, *extra, "--wait")
        found = re.search(rf"job (\d+): succeeded -> tiny-ft-{method}@1\b", done)
        assert found, done
        job_ids.append(int(found[1]))
    listed = _run_ok(d, "ls", "adapters", "--base", "tiny-base")
    assert "tiny-ft-bitdelta" in listed
    assert "tiny-ft-lora" in listed
    for name in ("tiny-ft-bitdelta", "tiny-ft-lora"):
        out = tmp_path / "pulled" / name
        _run_ok(d, "pull", name, "-o", str(out))
        adapter = d.client.get_adapter(name)
        assert sorted(p.name for p in out.iterdir()) == sorted(
            f["filename"] for f in adapter["files"])
        for f in adapter["files"]:
            assert sha256_of(out / f["filename"]) == f["sha256"], f["filename"]
    successes = [int(j) for w in workers for j, _ in SUCCESS_LINE.findall(w.log_text())]
    assert sorted(successes) == sorted(job_ids), "the worker processes ran both jobs"


def _run_ok(d: Deployment, *args: str) -> str:
    result = d.cli(*args)
    assert result.returncode == 0, (f"deltahub {' '.join(args)}: exit {result.returncode}\n"
                                    f"{result.stdout}\n{result.stderr}")
    return result.stdout
