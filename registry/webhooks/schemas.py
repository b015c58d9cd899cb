"""Request and response bodies of /webhooks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from registry.events.schemas import EventType
from registry.infra.schemas import UTCDateTime
from registry.names import NAME_PATTERN

# What the document can say of a target; where it resolves to (a private address is
# refused) only DNS can (registry/webhooks/target.py).
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+([/?#]\S*)?$"
# Stated in the document (json_schema_extra) but checked by the service, whose refusals
# say what to do rather than quote a regular expression.
_NAME = f"^{NAME_PATTERN}$"

TEST_EVENT = "webhook.test"


class WebhookFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(default=None, max_length=128, json_schema_extra={"pattern": _NAME},
                             description="only events about this base model's objects")
    name: str | None = Field(default=None, max_length=128, json_schema_extra={"pattern": _NAME},
                             description="only events about this name")
    alias: str | None = Field(default=None, max_length=128, json_schema_extra={"pattern": _NAME},
                              description="only alias.set / alias.removed of this alias")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, json_schema_extra={"pattern": URL_PATTERN},
                     description="http:// or https:// URL to POST to")
    events: list[EventType] = Field(default_factory=list, max_length=64, description=(
        "event types to deliver; empty (the default): all of them"))
    filters: WebhookFilters = Field(default_factory=WebhookFilters)
    enabled: bool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048,
                            json_schema_extra={"pattern": URL_PATTERN})
    events: list[EventType] | None = Field(default=None, max_length=64)
    filters: WebhookFilters | None = None
    enabled: bool | None = Field(default=None, description=(
        "true re-enables a webhook disabled after failures (its pending deliveries resume)"))


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    filters: WebhookFilters
    enabled: bool
    disabled_reason: str | None
    previous_secret_valid_until: UTCDateTime | None = Field(description=(
        "after a rotation: until when deliveries also carry the old secret's signature"))
    created_at: UTCDateTime
    updated_at: UTCDateTime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="whsec_...: shown this once; keep it to verify "
                                    "signatures")


class WebhookList(BaseModel):
    items: list[WebhookOut]


class SecretRotated(BaseModel):
    secret: str = Field(description="the new whsec_ secret, shown this once")
    previous_secret_valid_until: UTCDateTime


class DeliveryOut(BaseModel):
    id: int
    webhook_id: int
    event_id: int | None = Field(description="null for a test ping")
    event_type: str
    message_id: str = Field(description="the webhook-id header, the same on every attempt")
    status: str = Field(description="pending, delivered or failed")
    attempt: int = Field(description="attempts made so far")
    status_code: int | None
    latency_ms: float | None
    error: str | None
    response_excerpt: str | None
    next_attempt_at: UTCDateTime | None = Field(description="when pending")
    attempted_at: UTCDateTime | None
    delivered_at: UTCDateTime | None
    created_at: UTCDateTime


class AttemptOut(BaseModel):
    """One attempt at a delivery, and where that delivery stands now."""

    id: int = Field(description="the attempt's id (the log pages by it, newest first)")
    delivery_id: int
    event_id: int | None = Field(description="null for a test ping")
    event_type: str
    message_id: str = Field(description="the webhook-id header, the same on every attempt")
    attempt: int = Field(description="1 for the first try of this delivery, 2 for the "
                                     "first retry, ...; a redelivery starts again at 1")
    outcome: str = Field(description="what this attempt led to: delivered, retrying "
                                     "(another attempt is scheduled) or failed (no more)")
    status_code: int | None = Field(description="the receiver's HTTP status; null when "
                                                "none came (network error, timeout, refused)")
    latency_ms: float | None = Field(description="milliseconds from connecting to the "
                                                 "answer's status line")
    error: str | None
    response_excerpt: str | None = Field(description="the start of the receiver's answer")
    attempted_at: UTCDateTime
    status: str = Field(description="the delivery's state now: pending, delivered or failed")
    next_attempt_at: UTCDateTime | None = Field(description="the delivery's next try, "
                                                            "when pending")


class AttemptList(BaseModel):
    items: list[AttemptOut]
    next_page_token: str | None = Field(description="pass as page_token for older "
                                                    "attempts; null on the last page")
