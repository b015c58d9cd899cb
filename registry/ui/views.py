"""What the pages show, gathered through the domain services in one transaction each.

Each function takes the request's session and returns plain view objects (the API's
own output schemas where one fits), so templates never touch ORM rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from compress.tensorio import strictjson
from registry.adapters import service as adapters
from registry.adapters import views as adapter_views
from registry.adapters.quality import Quality
from registry.adapters.schemas import AdapterOut
from registry.datasets import service as datasets
from registry.datasets.schemas import DatasetOut
from registry.errors import JobNotFound
from registry.jobs import service as jobs
from registry.jobs import views as jobs_views
from registry.jobs.schemas import JobOut
from registry.models import service as models
from registry.models.repository import ModelRepository
from registry.models.schemas import ModelOut
from registry.models.views import model_outs
from registry.settings import Settings
from registry.tables import Adapter, AdapterKind, Dataset, JobStatus, ModelKind, Status

# A base's fine-tunes are listed whole on its page, a page of the service at a time;
# beyond this many the page says so rather than grow without bound.
MAX_FINETUNES_SHOWN = 500
JOBS_PER_FINETUNE = 20
# The compress form offers every finalized data set, up to this many (newest first).
MAX_DATASETS_OFFERED = 500


@dataclass(frozen=True)
class BaseRow:
    model: ModelOut
    finetunes: int
    adapters: int


@dataclass(frozen=True)
class Branch:
    """A fine-tune of the base, and the adapters (on this page) compressed from it."""

    finetune: ModelOut
    adapters: list[AdapterOut] = field(default_factory=list)


@dataclass(frozen=True)
class Lineage:
    base: ModelOut
    branches: list[Branch]
    direct: list[AdapterOut]  # pushed against the base with no source fine-tune
    next_page_token: str | None
    finetunes_truncated: bool


def adapter_outs(session: Session, found: list[Adapter], summary: bool = True
                 ) -> list[AdapterOut]:
    return bounded(adapter_views.adapter_outs(session, found, summary=summary))


def bounded(outs: list[AdapterOut]) -> list[AdapterOut]:
    # A row stored before reports were checked may hold a number no float holds (a
    # 400-digit integer): pages show it as missing rather than fail on it.
    return [out.model_copy(update={"quality": _bounded(out.quality)}) for out in outs]


def _bounded(quality: Quality | None) -> Quality | None:
    return None if quality is None else Quality.parse(strictjson.within_bounds(quality.document))


def base_models(session: Session, settings: Settings, page_token: str | None
                ) -> tuple[list[BaseRow], str | None]:
    found = models.list_models(session, settings, ModelKind.BASE, None, None, page_token)
    repo = ModelRepository(session)
    rows = []
    for out in model_outs(session, found.items):
        finetunes, adapter_count = repo.dependents(out.id)
        rows.append(BaseRow(out, finetunes, adapter_count))
    return rows, found.next_page_token


def _finetunes(session: Session, settings: Settings, base: str) -> tuple[list[ModelOut], bool]:
    shown: list[ModelOut] = []
    token: str | None = None
    while True:
        found = models.list_models(session, settings, ModelKind.FINETUNE, base,
                                   settings.MAX_PAGE_SIZE, token)
        shown += model_outs(session, found.items)
        token = found.next_page_token
        if token is None:
            return shown, False
        if len(shown) >= MAX_FINETUNES_SHOWN:
            return shown, True


def lineage(session: Session, settings: Settings, base_ref: str, kind: AdapterKind | None,
            alias: str | None, page_token: str | None) -> Lineage:
    """The base's fine-tunes, each with its adapters; then adapters pushed directly.

    Adapters are paged (newest first, keyset); fine-tunes are all shown on the first
    page, and on later pages only those with adapters there.
    """
    model = models.get_model(session, base_ref)
    base = model_outs(session, [model])[0]
    if model.kind is not ModelKind.BASE:
        raise models.not_found(session, base_ref, "base model", kind=ModelKind.BASE)
    finetunes, truncated = _finetunes(session, settings, model.name)
    found = adapters.list_adapters(session, settings, base=model.name, kind=kind, name=None,
                                   alias=alias, limit=None, page_token=page_token)
    outs = bounded(adapter_views.row_outs(found.items, summary=True))
    branches = {f.name: Branch(f) for f in finetunes}
    direct = []
    for out in outs:
        branch = branches.get(out.source_model) if out.source_model else None
        if branch is None:
            direct.append(out)
        else:
            branch.adapters.append(out)
    first_page = page_token is None
    shown = [b for b in branches.values() if b.adapters or (first_page and not (kind or alias))]
    return Lineage(base, shown, direct, found.next_page_token, truncated)


@dataclass(frozen=True)
class FinetuneView:
    model: ModelOut
    jobs: list[JobOut]
    datasets: list[DatasetOut]  # finalized: what distillation and evaluation may read
    datasets_truncated: bool


def dataset_outs(found: list[Dataset]) -> list[DatasetOut]:
    return [DatasetOut.of(d, datasets.needs_tokenizer(d)) for d in found]


def ready_datasets(session: Session, settings: Settings) -> tuple[list[DatasetOut], bool]:
    """Every finalized data set, newest first, up to MAX_DATASETS_OFFERED (and whether
    there were more)."""
    shown: list[DatasetOut] = []
    token: str | None = None
    while True:
        found = datasets.list_datasets(session, settings, Status.READY,
                                       settings.MAX_PAGE_SIZE, token)
        shown += dataset_outs(found.items)
        token = found.next_page_token
        if token is None:
            return shown, False
        if len(shown) >= MAX_DATASETS_OFFERED:
            return shown, True


def dataset_page(session: Session, settings: Settings, status: Status | None,
                 page_token: str | None) -> tuple[list[DatasetOut], str | None]:
    found = datasets.list_datasets(session, settings, status, None, page_token)
    return dataset_outs(found.items), found.next_page_token


def finetune(session: Session, settings: Settings, ref: str) -> FinetuneView:
    model = models.get_model(session, ref)
    if model.kind is not ModelKind.FINETUNE:
        raise models.not_found(session, ref, "fine-tune", kind=ModelKind.FINETUNE)
    found = jobs.list_jobs(session, settings, status=None, model=model.name, method=None,
                           limit=JOBS_PER_FINETUNE, page_token=None)
    offered, truncated = ready_datasets(session, settings)
    return FinetuneView(model_outs(session, [model])[0], jobs_views.job_views(session, found.items),
                        offered, truncated)


def job_page(session: Session, settings: Settings, status: JobStatus | None,
             page_token: str | None) -> tuple[list[JobOut], str | None]:
    found = jobs.list_jobs(session, settings, status=status, model=None, method=None,
                           limit=None, page_token=page_token)
    return jobs_views.job_views(session, found.items), found.next_page_token


def job_views(session: Session, ids: list[int]) -> list[JobOut]:
    """The jobs with these ids that exist (the progress poll asks for several)."""
    found = []
    for job_id in ids:
        try:
            found.append(jobs.get_job(session, job_id))
        except JobNotFound:
            continue
    return jobs_views.job_views(session, found)
