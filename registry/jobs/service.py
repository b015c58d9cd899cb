"""Rules for compression jobs, as clients see them: enqueue (checked first), look, cancel.

Everything that can be checked before a worker spends an hour is checked here, with a
4xx that says what to do; a job only enters the queue when it can run.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from compress.errors import InvalidParameter
from compress.targets import DEFAULT_TARGET_MODULES, select_linear_weights
from compress.tensorio import Manifest
from registry.adapters.repository import AdapterRepository
from registry.errors import (
    IdempotencyKeyReused,
    InvalidJobParameters,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    NotAFinetune,
    NotReady,
    TooManyQueuedJobs,
)
from registry.events.outbox import record_event
from registry.events.payloads import job_data
from registry.events.schemas import EventType
from registry.infra.pagination import Page, page_request
from registry.jobs.quality_params import quality_params
from registry.jobs.repository import JobRepository
from registry.jobs.schemas import IDEMPOTENCY_KEY_PATTERN, CompressRequest, JobAdapter, JobOut
from registry.models.service import get_model, model_id, model_names
from registry.names import MAX_ID, check_name
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import CompressMethod, Job, JobStatus, Model, ModelKind, Status, utcnow

TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
_ONLY_FOR = {"scale_mode": CompressMethod.BITDELTA, "rank": CompressMethod.LORA,
             "target_error": CompressMethod.LORA, "max_rank": CompressMethod.LORA,
             "save_modules": CompressMethod.LORA, "targets_only": CompressMethod.LORA}


def parse_method(value: str) -> CompressMethod:
    try:
        return CompressMethod(value)
    except ValueError:
        raise InvalidJobParameters(
            f"unknown method {value!r}; use method=bitdelta (1-bit delta, ~10x smaller) or "
            "method=lora (low-rank PEFT adapter)", name="UnknownMethod") from None


def enqueue(session: Session, settings: Settings, store: BlobStore, model_ref: str,
            method: CompressMethod, request: CompressRequest, *, token_id: int,
            idempotency_key: str | None) -> tuple[Job, bool]:
    """The job for this request, and whether it is new (False: an idempotent retry).

    A key is the token's own: a retry (same token, key and request) gets the job the
    first request made, however concurrent the two; the same key with any other request
    is refused. A retry is answered before any other rule, so it never meets the quota.
    """
    repo = JobRepository(session)
    model = get_model(session, model_ref, full=True)
    digest = request_digest(model, method, request)
    key = None if idempotency_key is None else _check_key(idempotency_key)
    if key is not None and (existing := _retried(repo, token_id, key, digest)) is not None:
        return existing, False
    _check_compressible(model)
    assert model.manifest is not None
    manifest = Manifest.from_dict(model.manifest)
    params = job_params(method, request, manifest)
    params.update(quality_params(session, store, settings, method, request, model, manifest,
                                 params["targets"]))
    name = check_name(request.name or f"{model.name}-{method.value}", "adapter name")
    repo.lock_token(token_id)
    if key is not None and (existing := _retried(repo, token_id, key, digest)) is not None:
        return existing, False  # a concurrent first request with this key won the lock
    _check_quota(repo, settings, token_id)
    job = repo.add(Job(
        method=method, model_id=model.id, base_id=model.base_id, adapter_name=name,
        alias=request.alias, params=params,
        requirements=["gpu"] if request.verify == "gpu" else [],
        status=JobStatus.QUEUED, attempt=0, max_attempts=settings.JOB_MAX_ATTEMPTS,
        next_run_at=utcnow(), stage="queued", progress=0.0, cancel_requested=False,
        idempotency_key=key, request_digest=digest, token_id=token_id, updated_at=utcnow()))
    record_event(session, EventType.JOB_QUEUED, job_data(session, job))
    return job, True


def request_digest(model: Model, method: CompressMethod, request: CompressRequest) -> str:
    """What a retry must repeat: the fine-tune, the method and every field of the body as
    the schema reads it. A field omitted and sent with its schema default are the same
    request; a field whose default the server picks later (`scale_mode`, `targets`,
    `max_rank`: null in the schema) is not, when sent explicitly: repeat the request as
    it was first sent."""
    canonical = json.dumps({"model": model.id, "method": method.value,
                            "request": request.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _retried(repo: JobRepository, token_id: int, key: str, digest: str) -> Job | None:
    """The job this token made with `key` before, if the request is the same one."""
    job = repo.by_idempotency_key(token_id, key)
    if job is not None and job.request_digest != digest:
        raise IdempotencyKeyReused(
            f"this Idempotency-Key was used for job {job.id} with another request (another "
            "model, method or options); use a new key for a new request, or repeat that "
            "request exactly as it was first sent")
    return job


def _check_compressible(model: Model) -> None:
    if model.kind is not ModelKind.FINETUNE or model.base_id is None:
        raise NotAFinetune(
            f"{model.name!r} is a base model; compress a fine-tune of it instead (register "
            "one with kind 'finetune' and base " f"{model.name!r})")
    if model.status is not Status.READY:
        raise NotReady(f"fine-tune {model.name!r} is not finalized yet; POST "
                       f"/models/{model.name}/finalize first")


def _check_quota(repo: JobRepository, settings: Settings, token_id: int) -> None:
    limit = settings.MAX_QUEUED_JOBS_PER_TOKEN
    if repo.active_count(token_id) >= limit:
        raise TooManyQueuedJobs(
            f"this token already has {limit} jobs queued or running, its limit "
            "(DELTAHUB_MAX_QUEUED_JOBS_PER_TOKEN); wait for some to finish, or cancel some "
            "(POST /jobs/{id}/cancel)",
            retry_after_seconds=settings.QUEUE_FULL_RETRY_AFTER_SECONDS)


def job_params(method: CompressMethod, request: CompressRequest,
               manifest: Manifest) -> dict[str, Any]:
    """The codec options a worker will use, checked against the method and the model."""
    given = request.model_dump(exclude_none=True, exclude={"distill", "evaluate"})
    wrong = sorted(k for k, only in _ONLY_FOR.items() if k in given and only is not method)
    if wrong:
        verb, pronoun = ("does", "it") if len(wrong) == 1 else ("do", "them")
        raise InvalidJobParameters(f"{', '.join(wrong)} {verb} not apply to "
                                   f"method={method.value}; leave {pronoun} out or use the "
                                   "other method")
    targets = request.targets or list(DEFAULT_TARGET_MODULES)
    unknown = [t for t in targets if not _matches_any(manifest, t)]
    if unknown:
        raise InvalidJobParameters(
            f"targets {unknown} match no 2-D linear weight of this model; name module "
            "suffixes such as 'q_proj' or full module names", name="UnknownTargets")
    params: dict[str, Any] = {"targets": targets, "verify": request.verify,
                              "max_error": request.max_error}
    if method is CompressMethod.BITDELTA:
        params["scale_mode"] = request.scale_mode or "row"
        return params
    if (request.rank is None) == (request.target_error is None):
        raise InvalidJobParameters("method=lora takes exactly one of rank (every module "
                                   "gets it) and target_error (each module the smallest "
                                   "rank that reaches it)")
    if request.max_rank is not None and request.target_error is None:
        raise InvalidJobParameters("max_rank caps a target_error search; with a fixed rank, "
                                   "leave it out")
    # Read from the dump: the deprecated attribute warns on access.
    if given.get("save_modules") and request.targets_only:
        raise InvalidJobParameters("save_modules (the default) contradicts targets_only; "
                                   "leave save_modules out")
    params.update(rank=request.rank, target_error=request.target_error,
                  max_rank=request.max_rank, targets_only=bool(request.targets_only))
    return params


def _matches_any(manifest: Manifest, target: str) -> bool:
    try:
        select_linear_weights(manifest, [target])
    except InvalidParameter:
        return False
    return True


def _check_key(key: str) -> str:
    # The API's header is checked against the same pattern before it gets here; the web
    # form's hidden field is not.
    if re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key) is None:
        raise InvalidRequest("Idempotency-Key must be 1-128 printable ASCII characters, e.g. "
                             "a UUID", name="InvalidIdempotencyKey")
    return key


def get_job(session: Session, job_id: int, lock: bool = False) -> Job:
    job = JobRepository(session).by_id(job_id, lock=lock) if 0 < job_id <= MAX_ID else None
    if job is None:
        raise JobNotFound(f"no job {job_id}; list jobs with GET /jobs")
    return job


def list_jobs(session: Session, settings: Settings, *, status: JobStatus | None,
              model: str | None, method: CompressMethod | None, limit: int | None,
              page_token: str | None) -> Page[Job]:
    request = page_request(settings, limit, page_token,
                           {"status": status, "model": model, "method": method})
    model_filter = model_id(session, model) if model is not None else None
    rows = JobRepository(session).page(status=status, model_id=model_filter, method=method,
                                       after_id=request.after_id, limit=request.fetch)
    return request.page(rows, key=lambda j: j.id)


def cancel_job(session: Session, job_id: int) -> Job:
    """A queued job is cancelled at once; a running one at its worker's next progress point."""
    job = get_job(session, job_id, lock=True)
    if job.status in TERMINAL:
        raise JobFinished(f"job {job_id} has already {job.status.value}; nothing to cancel")
    now = utcnow()
    if job.status is JobStatus.QUEUED:
        job.status, job.finished_at, job.stage = JobStatus.CANCELLED, now, "cancelled"
        record_event(session, EventType.JOB_CANCELLED, job_data(session, job))
    job.cancel_requested = True
    job.updated_at = now
    session.flush()
    return job


def job_views(session: Session, jobs: list[Job]) -> list[JobOut]:
    names = model_names(session, [*(j.model_id for j in jobs), *(j.base_id for j in jobs)])
    adapters = AdapterRepository(session)
    views = []
    for job in jobs:
        adapter = adapters.by_id(job.adapter_id) if job.adapter_id else None
        ref = (JobAdapter(id=adapter.id, name=adapter.name, version=adapter.version)
               if adapter else None)
        views.append(JobOut.of(job, names, ref))
    return views


def retry_delay(settings: Settings, attempt: int) -> timedelta:
    """Exponential backoff: base, 2·base, 4·base, ... after attempts 1, 2, 3, ..."""
    return timedelta(seconds=settings.JOB_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1))
