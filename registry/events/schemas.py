"""Event types and their payloads: one pydantic model per type, so the OpenAPI document
carries a JSON Schema for each, and `GET /events` answers a union discriminated on `type`.

Payloads are thin: names, versions, ids, base, kind, content digests and the object's
API path; never file bytes or secrets.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.infra.schemas import UTCDateTime


class EventType(StrEnum):
    MODEL_REGISTERED = "model.registered"
    MODEL_DELETED = "model.deleted"
    ADAPTER_REGISTERED = "adapter.registered"
    ADAPTER_DELETED = "adapter.deleted"
    ALIAS_SET = "alias.set"
    ALIAS_REMOVED = "alias.removed"
    DATASET_REGISTERED = "dataset.registered"
    DATASET_DELETED = "dataset.deleted"
    JOB_QUEUED = "job.queued"
    JOB_RUNNING = "job.running"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 (an event name, not a secret)


_ONE_TYPE = "|".join(t.value.replace(".", r"\.") for t in EventType)
# `types`: a comma-separated list of them (the document states it; the feed checks it).
TYPES_PATTERN = f"^({_ONE_TYPE})(,({_ONE_TYPE}))*$"


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelData(Payload):
    id: int
    name: str
    kind: Literal["base", "finetune"]
    base: str | None = Field(description="the base model's name; null for a base model")
    manifest_digest: str | None
    path: str = Field(description="the model's API path, e.g. /models/llama-3-8b")


class AdapterData(Payload):
    id: int
    name: str
    version: int
    kind: Literal["lora", "bitdelta", "peft"]
    base: str
    content_digest: str
    path: str = Field(description="the version's API path, e.g. /adapters/sql@3")


class AliasData(Payload):
    name: str = Field(description="the adapter name the alias belongs to")
    alias: str
    base: str
    adapter_id: int | None = Field(description="the version it points at now; null when "
                                               "removed")
    version: int | None = Field(description="null when removed")
    previous_version: int | None = Field(description="null for a new alias")
    path: str = Field(description="the alias's API path, e.g. /adapters/sql:prod")


class DatasetData(Payload):
    id: int
    name: str
    content_digest: str
    path: str


class JobData(Payload):
    id: int
    method: Literal["bitdelta", "lora"]
    model: str = Field(description="the fine-tune being compressed")
    base: str
    name: str = Field(description="the adapter name the job registers its output under")
    attempt: int = Field(description="attempts started so far (0 while first queued)")
    path: str


class JobAdapter(Payload):
    id: int
    name: str
    version: int


class JobSucceededData(JobData):
    adapter: JobAdapter


class JobFailedData(JobData):
    error: str = Field(description="the error's name, e.g. InvalidJobParameters, WorkerLost")


class TokenData(Payload):
    id: int
    name: str


EVENT_DATA: dict[EventType, type[Payload]] = {
    EventType.MODEL_REGISTERED: ModelData, EventType.MODEL_DELETED: ModelData,
    EventType.ADAPTER_REGISTERED: AdapterData, EventType.ADAPTER_DELETED: AdapterData,
    EventType.ALIAS_SET: AliasData, EventType.ALIAS_REMOVED: AliasData,
    EventType.DATASET_REGISTERED: DatasetData, EventType.DATASET_DELETED: DatasetData,
    EventType.JOB_QUEUED: JobData, EventType.JOB_RUNNING: JobData,
    EventType.JOB_SUCCEEDED: JobSucceededData, EventType.JOB_FAILED: JobFailedData,
    EventType.JOB_CANCELLED: JobData, EventType.TOKEN_REVOKED: TokenData,
}


class _Event(BaseModel):
    id: int = Field(description="the cursor: pass it as `after` to get what came next")
    created_at: UTCDateTime


class ModelRegistered(_Event):
    type: Literal["model.registered"]
    data: ModelData


class ModelDeleted(_Event):
    type: Literal["model.deleted"]
    data: ModelData


class AdapterRegistered(_Event):
    type: Literal["adapter.registered"]
    data: AdapterData


class AdapterDeleted(_Event):
    type: Literal["adapter.deleted"]
    data: AdapterData


class AliasSet(_Event):
    """An alias made or moved (`latest` moving to a new version is one too)."""

    type: Literal["alias.set"]
    data: AliasData


class AliasRemoved(_Event):
    """An alias removed, or gone with the version it pointed at."""

    type: Literal["alias.removed"]
    data: AliasData


class DatasetRegistered(_Event):
    type: Literal["dataset.registered"]
    data: DatasetData


class DatasetDeleted(_Event):
    type: Literal["dataset.deleted"]
    data: DatasetData


class JobQueued(_Event):
    """A job queued, or queued again after an attempt failed with a transient error."""

    type: Literal["job.queued"]
    data: JobData


class JobRunning(_Event):
    type: Literal["job.running"]
    data: JobData


class JobSucceeded(_Event):
    type: Literal["job.succeeded"]
    data: JobSucceededData


class JobFailed(_Event):
    type: Literal["job.failed"]
    data: JobFailedData


class JobCancelled(_Event):
    type: Literal["job.cancelled"]
    data: JobData


class TokenRevoked(_Event):
    type: Literal["token.revoked"]
    data: TokenData


EventOut = Annotated[
    ModelRegistered | ModelDeleted | AdapterRegistered | AdapterDeleted | AliasSet
    | AliasRemoved | DatasetRegistered | DatasetDeleted | JobQueued | JobRunning
    | JobSucceeded | JobFailed | JobCancelled | TokenRevoked,
    Field(discriminator="type")]


class EventsPage(BaseModel):
    items: list[EventOut]
    cursor: int = Field(description="pass as `after` next; the same as `after` when "
                                     "nothing came")
