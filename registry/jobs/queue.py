"""The worker's side of the queue: claim a job, report on it, and end it, all fenced.

Each function is one short transaction's worth of work on a session the caller opens.
Any write after the claim carries the `Lease`; when it matches no row the lease was
lost, and `LeaseLost` tells the worker to abandon the attempt and touch nothing more.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from registry.adapters import service as adapters
from registry.adapters.quality import Quality
from registry.blobs.repository import BlobRepository
from registry.events.outbox import record_event
from registry.events.payloads import job_data, job_failed_data, job_succeeded_data
from registry.events.schemas import EventType
from registry.jobs.params import JobParams, parse_params
from registry.jobs.repository import JobRepository, Lease
from registry.jobs.service import retry_delay
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import (
    Adapter,
    AdapterFile,
    AdapterKind,
    CompressMethod,
    Job,
    JobStatus,
    utcnow,
)
from registry.uploads.pipeline import UploadResult


class LeaseLost(Exception):
    """The job is no longer this worker's: it expired and moved on, or was deleted."""


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs of a job, detached from any session."""

    lease: Lease
    method: CompressMethod
    model_id: int
    base_id: int
    adapter_name: str
    alias: str | None
    params: JobParams



class JobCancelled(Exception):
    """Cancellation was asked for; the attempt stops at its next progress point, and a
    completion that finds it asked for publishes nothing."""

def claim(session: Session, owner: str, capabilities: Collection[str],
          settings: Settings) -> ClaimedJob | None:
    """Lease the oldest job due that this worker can run, or None."""
    repo, now = JobRepository(session), utcnow()
    for job in repo.claimable(now):
        if not set(job.requirements) <= set(capabilities):
            continue  # e.g. a GPU verification on a CPU worker: another worker's
        if job.status is JobStatus.RUNNING and job.attempt >= job.max_attempts:
            # Its worker died on the last attempt: nobody is left to finish it.
            _end(session, job, JobStatus.FAILED, "WorkerLost",
                 f"the worker running attempt {job.attempt} of {job.max_attempts} stopped "
                 "renewing its lease; no attempts are left. Start a new job")
            continue
        job.status, job.lease_owner, job.attempt = JobStatus.RUNNING, owner, job.attempt + 1
        job.lease_expires_at = now + timedelta(seconds=settings.JOB_LEASE_SECONDS)
        job.heartbeat_at = job.updated_at = now
        job.started_at = job.started_at or now
        job.stage, job.message = "starting", f"attempt {job.attempt} on {owner}"
        session.flush()
        record_event(session, EventType.JOB_RUNNING, job_data(session, job))
        return ClaimedJob(Lease(job.id, owner, job.attempt), job.method, job.model_id,
                          job.base_id, job.adapter_name, job.alias,
                          parse_params(job.method, job.params))
    return None


def report_progress(session: Session, lease: Lease, fraction: float, stage: str,
                    message: str | None = None) -> bool:
    """Record progress; whether cancellation was asked for. LeaseLost when it is gone."""
    cancel = JobRepository(session).fenced_update(
        lease, progress=min(max(fraction, 0.0), 1.0), stage=stage[:32],
        message=(message or "")[:500] or None)
    return _held(cancel, lease)


def renew(session: Session, lease: Lease, settings: Settings) -> bool:
    """Extend the lease; whether cancellation was asked for. LeaseLost when it is gone."""
    return _held(JobRepository(session).renew(lease, settings.JOB_LEASE_SECONDS), lease)


def _held(cancel: bool | None, lease: Lease) -> bool:
    if cancel is None:
        raise LeaseLost(f"job {lease.job_id}: lease lost")
    return cancel


def fail(session: Session, lease: Lease, settings: Settings, name: str, detail: str, *,
         transient: bool) -> JobStatus:
    """End the attempt: back to the queue after a backoff when transient and attempts are
    left, else failed. Returns the job's new status."""
    job = _leased(session, lease)
    if transient and job.attempt < job.max_attempts:
        job.status, job.lease_owner, job.lease_expires_at = JobStatus.QUEUED, None, None
        job.next_run_at = utcnow() + retry_delay(settings, job.attempt)
        job.error_name, job.error_detail = name, detail
        job.stage, job.message = "retrying", f"attempt {job.attempt} failed: {name}"
        job.updated_at = utcnow()
        record_event(session, EventType.JOB_QUEUED, job_data(session, job))
    else:
        _end(session, job, JobStatus.FAILED, name, detail)
    session.flush()
    return job.status


def cancelled(session: Session, lease: Lease) -> None:
    _end(session, _leased(session, lease), JobStatus.CANCELLED, None, None)
    session.flush()


def complete(session: Session, lease: Lease, claimed: ClaimedJob, store: BlobStore,
             settings: Settings, files: Sequence[tuple[str, UploadResult]],
             quality: Quality) -> int:
    """Register the output as an adapter and end the job, in this one transaction.

    However often the job ran, only the attempt holding the lease gets here, and the
    adapter row commits with the job's success or not at all. Identical output under
    the name returns the existing version, as a push does. Returns the adapter's id.

    A cancellation asked for since the attempt's last progress point wins: the job row
    is locked first, so a cancel either committed before this check (and nothing is
    published: JobCancelled, and the worker ends the job cancelled) or waits for this
    transaction and finds the job succeeded. Its committed blobs are left to `gc`.
    """
    job = _leased(session, lease)
    if job.cancel_requested:
        raise JobCancelled(f"job {job.id} was cancelled before it completed")
    kind = AdapterKind(claimed.method.value)
    draft = adapters.create_adapter(session, claimed.adapter_name, claimed.base_id, kind,
                                    claimed.model_id)
    blobs = BlobRepository(session)
    for filename, result in files:
        blobs.attach(AdapterFile, "adapter_id", draft.id, filename, result.sha256,
                     result.size, result.header)
    session.expire(draft)  # its files list was loaded before the attach
    adapter, created = adapters.finalize_adapter(session, store, settings, draft.id)
    if created:
        adapter.params = {**adapter.params, "job": job.id, "codec": claimed.params.to_json()}
        adapter.set_quality(quality)
        session.flush()  # before set_alias, which expires what the session holds
    if claimed.alias:
        adapters.set_alias(session, adapter, claimed.alias)
    job.adapter_id, job.progress = adapter.id, 1.0
    _end(session, job, JobStatus.SUCCEEDED, None, None, adapter)
    session.flush()
    return adapter.id


def _leased(session: Session, lease: Lease) -> Job:
    job = JobRepository(session).by_id(lease.job_id, lock=True)
    if (job is None or job.status is not JobStatus.RUNNING or job.lease_owner != lease.owner
            or job.attempt != lease.attempt):
        raise LeaseLost(f"job {lease.job_id}: lease lost")
    return job


def _end(session: Session, job: Job, status: JobStatus, error_name: str | None,
         detail: str | None, adapter: Adapter | None = None) -> None:
    """End the job, and record its event (`adapter`: what a success registered)."""
    now = utcnow()
    job.status, job.finished_at, job.updated_at = status, now, now
    job.lease_owner, job.lease_expires_at = None, None
    job.stage = status.value
    if status is not JobStatus.SUCCEEDED:
        job.error_name, job.error_detail = error_name, detail
    else:
        job.error_name = job.error_detail = None
        job.message = None
    if status is JobStatus.SUCCEEDED:
        assert adapter is not None
        record_event(session, EventType.JOB_SUCCEEDED, job_succeeded_data(session, job, adapter))
    elif status is JobStatus.FAILED:
        record_event(session, EventType.JOB_FAILED,
                     job_failed_data(session, job, error_name or "Failed"))
    else:
        record_event(session, EventType.JOB_CANCELLED, job_data(session, job))
