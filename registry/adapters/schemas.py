from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, Field

from registry.adapters.serving import adapter_serving, peft_record
from registry.infra.schemas import FileOut, Schema, UTCDateTime
from registry.models.schemas import DECLARED_FILES_DESCRIPTION, Sha256Hex
from registry.tables import Adapter


class AdapterCreate(Schema):
    name: str = Field(examples=["support-bot"])
    base: str = Field(examples=["llama2-7b"], description="the model this adapter applies to")
    kind: Literal["lora", "bitdelta", "peft"] = Field(
        description="lora: peft_type LORA (DoRA, rsLoRA included); peft: every other PEFT "
                    "type; bitdelta: a BitDelta delta")
    # `source_model` was this field's first name; requests that use it still work.
    source: str | None = Field(
        default=None, validation_alias=AliasChoices("source", "source_model"),
        examples=["support-bot-ft"],
        description="the full fine-tune this adapter was made from (a finalized fine-tune of "
                    "`base`, by name or id), recorded as the adapter's `source_model`")
    files: dict[str, Sha256Hex] | None = Field(default=None,
                                               description=DECLARED_FILES_DESCRIPTION)


# A listing shows each adapter's headline figures; nested detail (per-tensor or
# per-module tables) is on the adapter's own route, so pages stay small.
_SUMMARY_STRING_CHARS = 200


def quality_summary(quality: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in quality.items()
            if v is None or isinstance(v, bool | int | float)
            or (isinstance(v, str) and len(v) <= _SUMMARY_STRING_CHARS)}


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
    quality: dict[str, Any] | None = Field(
        description="how much of the fine-tune the adapter keeps; in listings only the "
                    "top-level figures, in full on GET /adapters/{ref}")
    content_digest: str | None
    aliases: list[str]
    files: list[FileOut]
    created_at: UTCDateTime
    finalized_at: UTCDateTime | None
    peft: dict[str, Any] | None = Field(
        default=None, description="a PEFT adapter's type and the options that change how it "
                                  "is served (use_dora, use_rslora, modules_to_save, rank, "
                                  "target modules); validated false for a type deltahub does "
                                  "not check")
    serving: dict[str, Any] = Field(
        default_factory=dict, description="per engine (vllm, peft, deltahub), whether it "
                                          "loads the adapter as is, and what to do otherwise")

    @classmethod
    def of(cls, adapter: Adapter, model_names: dict[int, str],
           summary: bool = False) -> AdapterOut:
        """`summary`: quality cut to its top-level figures, as listings show it."""
        source = adapter.source_model_id
        quality = adapter.quality
        if summary and quality is not None:
            quality = quality_summary(quality)
        return cls(
            id=adapter.id, name=adapter.name, version=adapter.version, kind=adapter.kind.value,
            status=adapter.status.value, base=model_names[adapter.base_id],
            source_model=model_names.get(source) if source else None, params=adapter.params,
            size_bytes=adapter.size_bytes, compression_ratio=adapter.compression_ratio,
            quality=quality, content_digest=adapter.content_digest,
            aliases=[a.alias for a in adapter.aliases],
            files=[FileOut(filename=f.filename, sha256=f.sha256, size=f.size)
                   for f in adapter.files],
            created_at=adapter.created_at, finalized_at=adapter.finalized_at,
            peft=peft_record(adapter), serving=adapter_serving(adapter),
        )
