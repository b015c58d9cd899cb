"""The SQL schema (SQLAlchemy 2.0, typed). Alembic migrations are generated from this."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from registry.adapters.quality import Quality
from registry.infra.engines import Base

NAME_LENGTH = 128
SHA256_LENGTH = 64
PEFT_TYPE_LENGTH = 64


def utcnow() -> datetime:
    return datetime.now(UTC)


class ModelKind(StrEnum):
    BASE = "base"
    FINETUNE = "finetune"


class AdapterKind(StrEnum):
    LORA = "lora"
    BITDELTA = "bitdelta"
    PEFT = "peft"  # every PEFT type but LoRA (IA3, VeRA, prompt tuning, ...)


class Status(StrEnum):
    PENDING = "pending"  # created; files may be uploaded or replaced
    READY = "ready"  # finalized: validated and immutable


def _enum(enum: type[StrEnum], name: str) -> Enum:
    # Store the values ("base"), not the member names ("BASE"); a CHECK constraint
    # instead of a native PostgreSQL enum keeps later additions a plain migration.
    return Enum(enum, name=name, native_enum=False, length=16, create_constraint=True,
                values_callable=lambda e: [m.value for m in e])


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Blob(Base, Timestamped):
    """A content-addressed object in storage at `blobs/sha256/<sha256>`."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)


class Model(Base, Timestamped):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    kind: Mapped[ModelKind] = mapped_column(_enum(ModelKind, "model_kind"))
    base_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[Status] = mapped_column(_enum(Status, "model_status"), default=Status.PENDING)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    manifest_digest: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    tensor_count: Mapped[int | None] = mapped_column(Integer)
    parameter_count: Mapped[int | None] = mapped_column(BigInteger)
    dtypes: Mapped[dict[str, int] | None] = mapped_column(JSON)
    finalized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who started a draft, so that the same token re-running its push resumes it, and when
    # a push last touched it, so that an abandoned draft can be told from one being
    # uploaded to (registry/uploads/drafts.py). Nullable because SQLite can only add a NOT
    # NULL column by rebuilding the table, and a rebuild with foreign keys on would cascade.
    # Tokens are revoked, never deleted, so the reference needs no ON DELETE rule.
    created_by_token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))
    touched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                        default=utcnow)
    # The digest of the files the push that started the draft said it would upload
    # (name -> sha256, digested as adapters' content_digest); a re-run resumes only a
    # draft started for the same files.
    declared_digest: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    # A bitsandbytes 4-bit base: how it is quantized ({"method", "quant_type",
    # "double_quant", "blocksize", "compute_dtype"}) and the full-precision base it was
    # quantized from, whose adapters it serves (no ON DELETE rule: see bc460c14b59f).
    quantization: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    quantized_from_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"),
                                                          index=True)

    base: Mapped[Model | None] = relationship(remote_side=[id], lazy="raise",
                                              foreign_keys=[base_id])
    files: Mapped[list[ModelFile]] = relationship(
        back_populates="model", lazy="raise", cascade="all, delete-orphan",
        order_by="ModelFile.filename",
    )


class ModelFile(Base, Timestamped):
    __tablename__ = "model_files"
    __table_args__ = (UniqueConstraint("model_id", "filename"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256", ondelete="RESTRICT"),
                                        index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # For safetensors files: the validated header ({"tensors": ..., "metadata": ...}),
    # so finalize can build the manifest without reading the blob back.
    header: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    model: Mapped[Model] = relationship(back_populates="files", lazy="raise")


class Adapter(Base, Timestamped):
    """One immutable adapter version (or a pending push that has no version yet)."""

    __tablename__ = "adapters"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        # Pushing identical content under a name again must find the existing version,
        # even when two pushes race: the database enforces it.
        UniqueConstraint("name", "content_digest"),
        # GET /adapters?base=...&sort=gain_kept: a base's versions, best first.
        Index("ix_adapters_base_id_gain_kept_id", "base_id", "gain_kept", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[AdapterKind] = mapped_column(_enum(AdapterKind, "adapter_kind"))
    status: Mapped[Status] = mapped_column(_enum(Status, "adapter_status"),
                                           default=Status.PENDING)
    base_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"),
                                         index=True)
    source_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", ondelete="RESTRICT"), index=True
    )
    content_digest: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    compression_ratio: Mapped[float | None] = mapped_column(Float)
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # quality["gain_kept"] as a column: listings sort by it, keyset-paged and indexed.
    gain_kept: Mapped[float | None] = mapped_column(Float)
    finalized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # As on models: the draft's creator, its last touch and its declared files.
    created_by_token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))
    touched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                        default=utcnow)
    declared_digest: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    # adapter_config.json's peft_type (LORA, IA3, ...); None for BitDelta. Listings filter by it.
    peft_type: Mapped[str | None] = mapped_column(String(PEFT_TYPE_LENGTH), index=True)

    base: Mapped[Model] = relationship(foreign_keys=[base_id], lazy="raise")
    source_model: Mapped[Model | None] = relationship(foreign_keys=[source_model_id],
                                                      lazy="raise")
    files: Mapped[list[AdapterFile]] = relationship(
        back_populates="adapter", lazy="raise", cascade="all, delete-orphan",
        order_by="AdapterFile.filename",
    )
    aliases: Mapped[list[AdapterAlias]] = relationship(
        back_populates="adapter", lazy="raise", cascade="all, delete-orphan",
        order_by="AdapterAlias.alias",
    )

    def set_quality(self, quality: Quality | None) -> None:
        """The quality's document, and its headline gain kept as a column."""
        self.quality = None if quality is None else quality.document
        self.gain_kept = None if quality is None else quality.gain_kept


class AdapterFile(Base, Timestamped):
    __tablename__ = "adapter_files"
    __table_args__ = (UniqueConstraint("adapter_id", "filename"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256", ondelete="RESTRICT"),
                                        index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    header: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    adapter: Mapped[Adapter] = relationship(back_populates="files", lazy="raise")


class AdapterAlias(Base):
    """A movable name (`prod`, `latest`) for one version of an adapter name."""

    __tablename__ = "adapter_aliases"
    __table_args__ = (
        UniqueConstraint("adapter_name", "alias"),
        # GET /adapters?alias=prod: every adapter carrying an alias, whatever its name.
        Index("ix_adapter_aliases_alias_adapter_id", "alias", "adapter_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    alias: Mapped[str] = mapped_column(String(NAME_LENGTH))
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"),
                                            index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    adapter: Mapped[Adapter] = relationship(back_populates="aliases", lazy="raise")


class Dataset(Base, Timestamped):
    """Calibration or evaluation data: text, JSON lines or token ids, content-addressed.

    A pending draft takes files like a model's; once finalized (READY) its files are
    immutable and `content_digest` (their names and sha256, as an adapter's) is its
    identity: pushing the same files under the name again finds it.
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[Status] = mapped_column(_enum(Status, "dataset_status"),
                                           default=Status.PENDING)
    content_digest: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    finalized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # As on models: the draft's creator, its last touch and its declared files.
    created_by_token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))
    touched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                        default=utcnow)
    declared_digest: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))

    files: Mapped[list[DatasetFile]] = relationship(
        back_populates="dataset", lazy="raise", cascade="all, delete-orphan",
        order_by="DatasetFile.filename",
    )


class DatasetFile(Base, Timestamped):
    __tablename__ = "dataset_files"
    __table_args__ = (UniqueConstraint("dataset_id", "filename"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256", ondelete="RESTRICT"),
                                        index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    header: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # token ids' safetensors

    dataset: Mapped[Dataset] = relationship(back_populates="files", lazy="raise")


class Token(Base, Timestamped):
    """An API token; only the sha256 of the secret is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    token_hash: Mapped[str] = mapped_column(String(SHA256_LENGTH), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell tokens apart
    scopes: Mapped[list[str]] = mapped_column(JSON)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for a worker (or for its retry time, next_run_at)
    RUNNING = "running"  # leased by a worker until lease_expires_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CompressMethod(StrEnum):
    BITDELTA = "bitdelta"
    LORA = "lora"


class Job(Base, Timestamped):
    """A compression job: the database is the queue (see registry/jobs/repository.py).

    Every write a worker makes is fenced by (id, lease_owner, attempt), so a worker that
    lost its lease can never overwrite the new owner's work.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # The claim query: queued jobs due to run, oldest first.
        Index("ix_jobs_status_next_run_at", "status", "next_run_at"),
        # A key is the client's own name for a request: two tokens never share one.
        UniqueConstraint("token_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[CompressMethod] = mapped_column(_enum(CompressMethod, "compress_method"))
    # A job goes with its models: deleting a fine-tune deletes its job history, and a
    # worker still running one finds its fenced writes match nothing, and stops.
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"),
                                          index=True)  # the fine-tune
    base_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    adapter_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    alias: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # validated codec + verify options
    requirements: Mapped[list[str]] = mapped_column(JSON, default=list)  # e.g. ["gpu"]
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"),
                                              default=JobStatus.QUEUED)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    stage: Mapped[str] = mapped_column(String(32), default="queued")
    message: Mapped[str | None] = mapped_column(String(500))
    error_name: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    adapter_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapters.id", ondelete="SET NULL"))
    idempotency_key: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    # sha256 of the request a key was first sent with (registry/jobs/service.py): a retry
    # must send the same one. Null for jobs queued before it was recorded.
    request_digest: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id", ondelete="SET NULL"))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PageSession(Base):
    """A signed-in web-page session (registry/ui/sessions.py): its cookie names `id`.

    Signing out deletes the row, so a copy of the cookie kept from before names nothing.
    """

    __tablename__ = "page_sessions"

    id: Mapped[str] = mapped_column(String(SHA256_LENGTH), primary_key=True)  # random
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"),
                                          index=True)
    # Indexed for the sweep of expired sessions at each sign-in.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)


class Event(Base):
    """One change a consumer cares about, written in the transaction that made it (the
    outbox: registry/events/outbox.py). `id` is the feed's cursor: ids are never reused
    (AUTOINCREMENT on SQLite) and commit in order (see docs/architecture.md, "Events").

    Webhooks fan events out into `webhook_deliveries` past a per-webhook high-water mark
    over this id (registry/webhooks/queue.py).
    """

    __tablename__ = "events"
    __table_args__ = (
        # The feed's filters: a base's or a name's events after a cursor.
        Index("ix_events_base_id", "base", "id"),
        Index("ix_events_name_id", "name", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(32))
    # Indexed for retention: `deltahub gc` deletes the oldest.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                 index=True)
    base: Mapped[str | None] = mapped_column(String(NAME_LENGTH))  # the base model's name
    name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))  # the object's name
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class EventHorizon(Base):
    """One row: the highest event id `deltahub gc` has pruned. A cursor below it may have
    missed events (the feed answers 410); ids can have gaps, so the oldest id left cannot
    tell that alone."""

    __tablename__ = "event_horizon"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    pruned_through: Mapped[int] = mapped_column(BigInteger, default=0)


class Webhook(Base, Timestamped):
    """A signed-webhook subscription (registry/webhooks/). `secret` is kept as given
    (`whsec_...`) because signing needs it: only admin-scope requests see this table, and
    the API shows a secret once, at creation or rotation.

    `last_event_id` is the fan-out's high-water mark: events up to it have their delivery
    rows. The lease makes one dispatcher at a time the webhook's sender, which keeps its
    deliveries in event order (registry/webhooks/queue.py)."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    filter_base: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    filter_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    filter_alias: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base, Timestamped):
    """One event (or test ping) for one webhook: the body it sends, where its retries
    stand, and its last attempt. `message_id` is the `webhook-id` header, the same on
    every attempt: the receiver's idempotency key."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        # The sender's query: a webhook's pending deliveries, oldest first.
        Index("ix_webhook_deliveries_pending", "webhook_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(BigInteger)  # null: a test ping
    event_type: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # delivered, failed
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDeliveryAttempt(Base):
    """One try at sending a delivery, written in the transaction that records its outcome
    (registry/webhooks/queue.py `record`): the delivery log keeps every attempt, while
    `webhook_deliveries` keeps only where the retries stand. `webhook_id` and `event_id`
    are copied from the delivery so the log pages and filters without a join, and
    retention (registry/gc/deliveries.py) finds a pruned event's attempts."""

    __tablename__ = "webhook_delivery_attempts"
    __table_args__ = (
        # The log: a webhook's attempts, newest first, keyset-paged by id.
        Index("ix_webhook_delivery_attempts_webhook_id", "webhook_id", "id"),
        Index("ix_webhook_delivery_attempts_event", "webhook_id", "event_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(BigInteger)  # null: a test ping
    attempt: Mapped[int] = mapped_column(Integer)  # 1 for the first try
    # What this attempt led to: delivered, retrying (another attempt is scheduled) or
    # failed (no more: not retryable, 410, or the schedule ran out).
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
