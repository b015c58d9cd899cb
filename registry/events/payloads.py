"""One builder per payload, from the rows a service already holds."""

from __future__ import annotations

from sqlalchemy.orm import Session

from registry.events.schemas import (
    AdapterData,
    AliasData,
    DatasetData,
    JobAdapter,
    JobData,
    JobFailedData,
    JobSucceededData,
    ModelData,
    TokenData,
)
from registry.models.repository import ModelRepository
from registry.tables import Adapter, Dataset, Job, Model, Token


def _name(session: Session, model_id: int) -> str:
    return ModelRepository(session).names_of({model_id}).get(model_id, str(model_id))


def model_data(session: Session, model: Model) -> ModelData:
    base = _name(session, model.base_id) if model.base_id is not None else None
    return ModelData(id=model.id, name=model.name, kind=model.kind.value, base=base,
                     manifest_digest=model.manifest_digest, path=f"/models/{model.name}")


def adapter_data(session: Session, adapter: Adapter) -> AdapterData:
    assert adapter.version is not None  # finalized
    assert adapter.content_digest is not None
    return AdapterData(id=adapter.id, name=adapter.name, version=adapter.version,
                       kind=adapter.kind.value, base=_name(session, adapter.base_id),
                       content_digest=adapter.content_digest,
                       path=f"/adapters/{adapter.name}@{adapter.version}")


def alias_data(session: Session, name: str, alias: str, base_id: int,
               now: Adapter | None, previous_version: int | None) -> AliasData:
    """`now`: the version the alias points at after the change (None: removed)."""
    return AliasData(name=name, alias=alias, base=_name(session, base_id),
                     adapter_id=now.id if now else None,
                     version=now.version if now else None,
                     previous_version=previous_version, path=f"/adapters/{name}:{alias}")


def dataset_data(dataset: Dataset) -> DatasetData:
    assert dataset.content_digest is not None  # finalized
    return DatasetData(id=dataset.id, name=dataset.name, content_digest=dataset.content_digest,
                       path=f"/datasets/{dataset.name}")


def job_data(session: Session, job: Job) -> JobData:
    names = ModelRepository(session).names_of({job.model_id, job.base_id})
    return JobData(id=job.id, method=job.method.value,
                   model=names.get(job.model_id, str(job.model_id)),
                   base=names.get(job.base_id, str(job.base_id)), name=job.adapter_name,
                   attempt=job.attempt, path=f"/jobs/{job.id}")


def job_succeeded_data(session: Session, job: Job, adapter: Adapter) -> JobSucceededData:
    assert adapter.version is not None
    return JobSucceededData(**job_data(session, job).model_dump(), adapter=JobAdapter(
        id=adapter.id, name=adapter.name, version=adapter.version))


def job_failed_data(session: Session, job: Job, error: str) -> JobFailedData:
    return JobFailedData(**job_data(session, job).model_dump(), error=error)


def token_data(token: Token) -> TokenData:
    return TokenData(id=token.id, name=token.name)
