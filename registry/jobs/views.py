"""Jobs as the API and the pages show them: models by name, and the adapter each made."""

from __future__ import annotations

from sqlalchemy.orm import Session

from registry.adapters.repository import AdapterRepository
from registry.jobs.schemas import JobAdapter, JobOut
from registry.models.service import model_names
from registry.tables import Job


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
