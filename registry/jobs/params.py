"""A queued job's options as the worker runs them: one typed document per method.

Built once when the job is queued (registry/jobs/service.py) and parsed once when its row
is read (`parse_params`); the row's JSON column holds `to_json()`. Rows written before a
field changed name still parse: the legacy keys are handled here, in the validators, and
nowhere else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.tables import CompressMethod

VerifyMode = Literal["auto", "gpu", "cpu", "off"]

# A section a job only carries when asked for: absent from the JSON, not null.
_ABSENT = Field(default=None, exclude_if=lambda value: value is None)


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


class PinnedDataset(_Document):
    """A data set as the job was asked for it: its name and the content digest it had."""

    name: str
    digest: str


class DistillStage(_Document):
    """BitDelta's scale distillation, as compress.bitdelta.DistillConfig takes it."""

    dataset: PinnedDataset
    steps: int
    lr: float
    batch_size: int
    seq_len: int
    seed: int


class EvaluateStage(_Document):
    """The gain-kept evaluation on each data set (the first is the headline). A job queued
    before the token budget has max_batches and no max_tokens: it runs as it was asked."""

    datasets: list[PinnedDataset]
    batch_size: int
    seq_len: int
    max_batches: int | None = None  # None: every row, within max_tokens
    max_tokens: int | None = _ABSENT  # predicted tokens per data set at most


class _Params(_Document):
    targets: list[str]
    verify: VerifyMode
    max_error: float | None = None

    def to_json(self) -> dict[str, object]:
        """What the job row's `params` column holds (and GET /jobs/{id} shows)."""
        return self.model_dump(mode="json")


class BitDeltaParams(_Params):
    scale_mode: Literal["row", "tensor"] = "row"
    # Declared in each variant, after its own fields: the JSON keeps the order it had.
    distill: DistillStage | None = _ABSENT
    evaluate: EvaluateStage | None = _ABSENT


class LoraParams(_Params):
    rank: int | None = None
    target_error: float | None = None
    max_rank: int | None = None
    targets_only: bool
    evaluate: EvaluateStage | None = _ABSENT

    @model_validator(mode="before")
    @classmethod
    def _legacy_save_modules(cls, data: Any) -> Any:
        """A job queued before carrying non-targets became the default recorded
        save_modules instead; it runs as it was asked to."""
        if isinstance(data, dict) and "targets_only" not in data:
            legacy = bool(data.get("save_modules", False))
            data = {k: v for k, v in data.items() if k != "save_modules"}
            data["targets_only"] = not legacy
        return data


JobParams = BitDeltaParams | LoraParams
_VARIANTS: dict[CompressMethod, type[BitDeltaParams] | type[LoraParams]] = {
    CompressMethod.BITDELTA: BitDeltaParams, CompressMethod.LORA: LoraParams}


def parse_params(method: CompressMethod, stored: Any) -> JobParams:
    """A job row's `params` column, as its method's document."""
    return _VARIANTS[method].model_validate(stored)
