"""Response and request shapes shared by several domains."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer

T = TypeVar("T")


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


class ErrorOut(BaseModel):
    error: str
    detail: str
