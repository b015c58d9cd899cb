from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, PlainSerializer, PlainValidator, WithJsonSchema

from registry.adapters.quality import JSONObject, Quality, summary_of
from registry.adapters.rows import AdapterRow
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


def _parse_quality(value: object) -> Quality:
    if isinstance(value, Quality):
        return value
    if isinstance(value, dict):
        return Quality.parse(value)
    raise ValueError("quality must be a JSON object")


def _quality_document(quality: Quality) -> JSONObject:
    return quality.document


# In JSON, the quality's document as it was built (typed readers use its attributes).
QualityDocument = Annotated[
    Quality, PlainValidator(_parse_quality), PlainSerializer(_quality_document),
    WithJsonSchema({"additionalProperties": True, "type": "object"})]


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
    quality: QualityDocument | None = Field(
        description="how much of the fine-tune the adapter keeps; in listings only the "
                    "top-level figures, in full on GET /adapters/{ref}")
    content_digest: str | None
    aliases: list[str]
    files: list[FileOut]
    created_at: UTCDateTime
    finalized_at: UTCDateTime | None
    compatible_via: str | None = Field(
        default=None, description="in a `compatible=1` listing: how the base this adapter "
        "was registered against (`base`) relates to the one asked for: \"same base\", "
        "\"quantized from\" (the full-precision base it was quantized from) or "
        "\"4-bit variant\" (a 4-bit base quantized from it)")
    peft: dict[str, Any] | None = Field(
        default=None, description="a PEFT adapter's type and the options that change how it "
                                  "is served (use_dora, use_rslora, modules_to_save, rank, "
                                  "target modules); validated false for a type deltahub does "
                                  "not check")
    serving: dict[str, Any] = Field(
        default_factory=dict, description="per engine (vllm, peft, deltahub), whether it "
                                          "loads the adapter as is, and what to do otherwise")

    @classmethod
    def of(cls, adapter: Adapter | AdapterRow, base: str, source_model: str | None,
           summary: bool = False) -> AdapterOut:
        """`base`, `source_model`: those models' names. `summary`: quality cut to its
        top-level figures, as listings show it."""
        quality = (Quality.parse_optional(adapter.quality) if not summary
                   else None if adapter.quality is None
                   else summary_of(adapter.quality, adapter.gain_kept, _SUMMARY_STRING_CHARS))
        peft = peft_record(adapter)
        return cls(
            id=adapter.id, name=adapter.name, version=adapter.version, kind=adapter.kind.value,
            status=adapter.status.value, base=base, source_model=source_model,
            params=adapter.params, size_bytes=adapter.size_bytes,
            compression_ratio=adapter.compression_ratio,
            quality=quality, content_digest=adapter.content_digest,
            aliases=[a.alias for a in adapter.aliases],
            files=[FileOut(filename=f.filename, sha256=f.sha256, size=f.size)
                   for f in adapter.files],
            created_at=adapter.created_at, finalized_at=adapter.finalized_at,
            peft=peft, serving=adapter_serving(adapter, peft),
        )
