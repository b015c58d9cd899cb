from __future__ import annotations

from pydantic import Field

from registry.infra.schemas import FileOut, Schema, UTCDateTime
from registry.models.schemas import DECLARED_FILES_DESCRIPTION, Sha256Hex
from registry.tables import Dataset

DESCRIPTION_LENGTH = 2000


class DatasetCreate(Schema):
    name: str = Field(examples=["wikitext-calibration"])
    description: str | None = Field(default=None, max_length=DESCRIPTION_LENGTH,
                                    description="what the data is and where it came from")
    files: dict[str, Sha256Hex] | None = Field(
        default=None, description=DECLARED_FILES_DESCRIPTION + ". Declaring the files of "
        "a data set already finalized under the name returns it (200), unchanged")


class DatasetOut(Schema):
    id: int
    name: str
    description: str | None
    status: str = Field(description="`pending` (a draft taking files) or `ready` "
                                    "(finalized: immutable)")
    content_digest: str | None = Field(
        description="once ready: sha256 over the files' names and sha256, its identity")
    needs_tokenizer: bool = Field(description="some file is text (.txt, .jsonl), which a "
                                              "model's tokenizer turns into token ids")
    total_bytes: int
    files: list[FileOut]
    created_at: UTCDateTime
    finalized_at: UTCDateTime | None

    @classmethod
    def of(cls, dataset: Dataset, needs_tokenizer: bool) -> DatasetOut:
        files = [FileOut(filename=f.filename, sha256=f.sha256, size=f.size)
                 for f in dataset.files]
        return cls(id=dataset.id, name=dataset.name, description=dataset.description,
                   status=dataset.status.value, content_digest=dataset.content_digest,
                   needs_tokenizer=needs_tokenizer, total_bytes=sum(f.size for f in files),
                   files=files, created_at=dataset.created_at,
                   finalized_at=dataset.finalized_at)
