"""SQL for jobs: the registry's own database is the queue (as Solid Queue, Oban, River).

Claiming takes `FOR UPDATE SKIP LOCKED` on PostgreSQL, so N workers never wait on each
other's candidates; on SQLite the write transaction (BEGIN IMMEDIATE) serialises claims.
Every write a worker makes afterwards is fenced by (id, lease_owner, attempt): a write
that matches no row means the lease was lost (expired and taken over, or the job was
deleted), and the worker must leave the job alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from registry.infra.listing import newest_first
from registry.tables import CompressMethod, Job, JobStatus, Token, utcnow

# Candidates looked at per claim: enough to skip jobs this worker cannot run (a GPU job
# on a CPU worker) without scanning the whole queue.
_CLAIM_CANDIDATES = 16


@dataclass(frozen=True)
class Lease:
    """Proof of ownership that every worker write carries."""

    job_id: int
    owner: str
    attempt: int


class JobRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, job: Job) -> Job:
        self.session.add(job)
        self.session.flush()
        return job

    def by_id(self, job_id: int, lock: bool = False) -> Job | None:
        query = select(Job).where(Job.id == job_id)
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).first()

    def by_idempotency_key(self, token_id: int, key: str) -> Job | None:
        return self.session.scalars(select(Job).where(
            Job.token_id == token_id, Job.idempotency_key == key)).first()

    def lock_token(self, token_id: int) -> None:
        """Take the token's row lock until commit: one enqueue per token at a time, so its
        key lookup and its count of active jobs each see the one before (PostgreSQL;
        SQLite's single writer serialises them anyway)."""
        self.session.execute(select(Token.id).where(Token.id == token_id).with_for_update())

    def active_count(self, token_id: int) -> int:
        """The token's jobs that are queued or running."""
        return int(self.session.scalar(select(func.count()).select_from(Job).where(
            Job.token_id == token_id,
            Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))) or 0)

    def page(self, *, status: JobStatus | None, model_id: int | None,
             method: CompressMethod | None, after_id: int | None, limit: int) -> list[Job]:
        return newest_first(self.session, select(Job), Job.id,
                            equal={Job.status: status, Job.model_id: model_id,
                                   Job.method: method},
                            after_id=after_id, limit=limit)

    def claimable(self, now: datetime) -> list[Job]:
        """Jobs due to run, and running jobs whose worker stopped renewing its lease."""
        query = (select(Job)
                 .where(or_(
                     (Job.status == JobStatus.QUEUED) & (Job.next_run_at <= now),
                     (Job.status == JobStatus.RUNNING) & (Job.lease_expires_at < now)))
                 .order_by(Job.next_run_at, Job.id)
                 .limit(_CLAIM_CANDIDATES)
                 .with_for_update(skip_locked=True))
        return list(self.session.scalars(query))

    def fenced_update(self, lease: Lease, **values: Any) -> bool | None:
        """Apply `values` if the lease still holds: whether cancellation was asked for, or
        None when the lease is gone. One statement (UPDATE ... RETURNING): workers call it
        twice a second."""
        return self.session.execute(
            update(Job)
            .where(Job.id == lease.job_id, Job.lease_owner == lease.owner,
                   Job.attempt == lease.attempt, Job.status == JobStatus.RUNNING)
            .values(updated_at=utcnow(), **values)
            .returning(Job.cancel_requested)
            .execution_options(synchronize_session=False)).scalar_one_or_none()

    def renew(self, lease: Lease, lease_seconds: float) -> bool | None:
        """Extend the lease; as `fenced_update`."""
        now = utcnow()
        return self.fenced_update(lease, heartbeat_at=now,
                                  lease_expires_at=now + timedelta(seconds=lease_seconds))

    # What /metrics reads at each scrape (registry/infra/metrics.py).
    def counts_by_status(self) -> dict[JobStatus, int]:
        rows = self.session.execute(select(Job.status, func.count()).group_by(Job.status))
        return {status: int(count) for status, count in rows}

    def finished_runs(self) -> list[tuple[CompressMethod, datetime, datetime]]:
        """(method, started, finished) of every job that ran to success or failure."""
        rows = self.session.execute(
            select(Job.method, Job.started_at, Job.finished_at)
            .where(Job.status.in_((JobStatus.SUCCEEDED, JobStatus.FAILED)),
                   Job.started_at.is_not(None), Job.finished_at.is_not(None)))
        return [(method, started, finished) for method, started, finished in rows
                if started is not None and finished is not None]
