from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from registry.infra.schemas import FileOut, Schema, UTCDateTime
from registry.tables import Model

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
# What a push declares it will upload, file name -> sha256 (hex).
DECLARED_FILES_DESCRIPTION = (
    "the files this push will upload, name -> sha256. A re-run of a push by the same token "
    "resumes the draft started for the same files (200, with the files already uploaded); "
    "see docs/architecture.md, \"Drafts\"")


class ModelCreate(Schema):
    name: str = Field(examples=["llama2-7b"])
    kind: Literal["base", "finetune"]
    base: str | None = Field(default=None, description="the base model, for a finetune")
    files: dict[str, Sha256Hex] | None = Field(default=None,
                                               description=DECLARED_FILES_DESCRIPTION)


class FinalizeRequest(Schema):
    """The optional body of a finalize (models and adapters alike)."""

    files: dict[str, Sha256Hex] | None = Field(
        default=None, examples=[{"config.json": "0" * 64}],
        description="the files this push uploaded, name -> sha256; when given, a draft "
                    "holding other files (missing, extra or changed) is not finalized "
                    "(409 `DraftChanged`)")


class ModelOut(Schema):
    id: int
    name: str
    kind: str
    base: str | None
    status: str
    manifest_digest: str | None
    tensor_count: int | None
    parameter_count: int | None
    dtypes: dict[str, int] | None
    total_bytes: int
    files: list[FileOut]
    created_at: UTCDateTime
    finalized_at: UTCDateTime | None

    @classmethod
    def of(cls, model: Model, base_name: str | None) -> ModelOut:
        files = [FileOut(filename=f.filename, sha256=f.sha256, size=f.size) for f in model.files]
        return cls(
            id=model.id, name=model.name, kind=model.kind.value, base=base_name,
            status=model.status.value, manifest_digest=model.manifest_digest,
            tensor_count=model.tensor_count, parameter_count=model.parameter_count,
            dtypes=model.dtypes, total_bytes=sum(f.size for f in files), files=files,
            created_at=model.created_at, finalized_at=model.finalized_at,
        )
