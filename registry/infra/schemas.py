"""Response and request shapes shared by several domains."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.json_schema import SkipJsonSchema

T = TypeVar("T")


def created_or_existing(out: BaseModel, created: bool) -> JSONResponse:
    """201 for what this request created, 200 for what it found already there (a resumed
    draft, an identical version): clients tell a new push from a retried one by it."""
    return JSONResponse(out.model_dump(mode="json"),
                        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def _utc(value: datetime) -> str:
    # SQLite hands timestamps back without a zone; every stored time is UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UTCDateTime = Annotated[datetime, PlainSerializer(_utc, return_type=str)]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class FileOut(Schema):
    filename: str
    sha256: str
    size: int


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_page_token: str | None


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # absent, never null: a null default would contradict the type


# Only the OpenAPI document uses ErrorOut (registry/infra/openapi.py): it is the shape
# clients generated from /openapi.json parse an error into.
# registry/infra/error_handlers.py writes the bodies.
class ErrorOut(BaseModel):
    """Every error: a stable name to match on and a detail that says what to do."""

    # Forbid: the document then says no other field appears, so a test of the live API
    # against it catches a handler that adds one.
    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="the error's name, stable for programs to match on",
                       examples=["ModelNotFound"])
    detail: str = Field(description="what was wrong and what to do about it")
    mismatches: list[str] | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_no_default,
        description="present when shapes do not fit the base model: one entry per mismatch")
