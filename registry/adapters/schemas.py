from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from registry.schemas import FileOut, Schema, UTCDateTime
from registry.tables import Adapter


class AdapterCreate(Schema):
    name: str = Field(examples=["support-bot"])
    base: str = Field(examples=["llama2-7b"], description="the model this adapter applies to")
    kind: Literal["lora", "bitdelta"]
    source_model: str | None = Field(
        default=None, description="the full fine-tune this adapter was compressed from, if any")


class AdapterOut(Schema):
    id: int
    name: str
    version: int | None
    kind: str
    status: str
    base: str
    source_model: str | None
    params: dict[str, Any]
    size_bytes: int
    compression_ratio: float | None
    quality: dict[str, Any] | None
    content_digest: str | None
    aliases: list[str]
    files: list[FileOut]
    created_at: UTCDateTime
    finalized_at: UTCDateTime | None

    @classmethod
    def of(cls, adapter: Adapter, model_names: dict[int, str]) -> AdapterOut:
        source = adapter.source_model_id
        return cls(
            id=adapter.id, name=adapter.name, version=adapter.version, kind=adapter.kind.value,
            status=adapter.status.value, base=model_names[adapter.base_id],
            source_model=model_names.get(source) if source else None, params=adapter.params,
            size_bytes=adapter.size_bytes, compression_ratio=adapter.compression_ratio,
            quality=adapter.quality, content_digest=adapter.content_digest,
            aliases=[a.alias for a in adapter.aliases],
            files=[FileOut(filename=f.filename, sha256=f.sha256, size=f.size)
                   for f in adapter.files],
            created_at=adapter.created_at, finalized_at=adapter.finalized_at,
        )
