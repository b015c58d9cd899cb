"""Rules for compression jobs, as clients see them: enqueue (checked first), look, cancel.

Everything that can be checked before a worker spends an hour is checked here, with a
4xx that says what to do; a job only enters the queue when it can run.
"""

from __future__ import annotations

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
)
from registry.jobs.quality_params import quality_params
from registry.jobs.repository import JobRepository
from registry.jobs.schemas import CompressRequest, JobAdapter, JobOut
from registry.models.service import get_model, model_id, model_names
from registry.names import MAX_ID, check_name
from registry.pagination import Page, page_request
from registry.settings import Settings
from registry.tables import CompressMethod, Job, JobStatus, ModelKind, Status, utcnow

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


def enqueue(session: Session, settings: Settings, model_ref: str, method: CompressMethod,
            request: CompressRequest, *, token_id: int | None,
            idempotency_key: str | None) -> tuple[Job, bool]:
    """The job for this request, and whether it is new (False: an idempotent retry)."""
    repo = JobRepository(session)
    if idempotency_key is not None:
        existing = repo.by_idempotency_key(_check_key(idempotency_key))
        if existing is not None:
            return _same_request(session, existing, model_ref, method, request), False
    model = get_model(session, model_ref, full=True)
    if model.kind is not ModelKind.FINETUNE or model.base_id is None:
        raise NotAFinetune(
            f"{model.name!r} is a base model; compress a fine-tune of it instead (register "
            "one with kind 'finetune' and base " f"{model.name!r})")
    if model.status is not Status.READY:
        raise NotReady(f"fine-tune {model.name!r} is not finalized yet; POST "
                       f"/models/{model.name}/finalize first")
    assert model.manifest is not None
    params = job_params(method, request, Manifest.from_dict(model.manifest))
    params.update(quality_params(session, method, request, model))
    name = check_name(request.name or f"{model.name}-{method.value}", "adapter name")
    job = repo.add(Job(
        method=method, model_id=model.id, base_id=model.base_id, adapter_name=name,
        alias=request.alias, params=params,
        requirements=["gpu"] if request.verify == "gpu" else [],
        status=JobStatus.QUEUED, attempt=0, max_attempts=settings.JOB_MAX_ATTEMPTS,
        next_run_at=utcnow(), stage="queued", progress=0.0, cancel_requested=False,
        idempotency_key=idempotency_key, token_id=token_id, updated_at=utcnow()))
    return job, True


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
    if not 1 <= len(key) <= 128 or not key.isascii() or not key.isprintable():
        raise InvalidRequest("Idempotency-Key must be 1-128 printable ASCII characters, e.g. "
                             "a UUID", name="InvalidIdempotencyKey")
    return key


def _same_request(session: Session, job: Job, model_ref: str, method: CompressMethod,
                  request: CompressRequest) -> Job:
    model = get_model(session, model_ref)
    if job.model_id != model.id or job.method is not method or (
            request.name and request.name != job.adapter_name):
        raise IdempotencyKeyReused(
            f"this Idempotency-Key was used for job {job.id} ({job.method.value} of another "
            "request); use a new key for a new request")
    return job


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
