"""Request and response shapes of compression jobs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from registry.infra.schemas import Schema, UTCDateTime
from registry.jobs.params import BitDeltaParams, LoraParams, VerifyMode, parse_params
from registry.names import NAME_PATTERN
from registry.tables import Job

# Module names as PEFT's target_modules list takes them ("q_proj", "model.layers.0.mlp").
# Only literal names: a regular expression from a client would run on our workers.
TargetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,199}$")]

DatasetName = Annotated[str, Field(pattern=f"^{NAME_PATTERN}$")]
# What an Idempotency-Key may be: 1-128 printable ASCII characters (a UUID fits).
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,128}$"


class _Finite(Schema):
    """Every float a client sends is finite: JSON parsers read `Infinity` and `1e999`,
    and neither the job's params column (PostgreSQL refuses them) nor its responses
    (they render as null) can hold one."""

    model_config = ConfigDict(allow_inf_nan=False)


class DistillParams(_Finite):
    """BitDelta's second stage: train only the scales α so that the compressed model's
    logits match the fine-tune's on calibration text. Defaults are the paper's."""

    dataset: DatasetName = Field(description="a finalized data set (POST /datasets)")
    steps: int = Field(default=200, ge=1, le=100_000)
    lr: float = Field(default=1e-4, gt=0, le=1)
    batch_size: int = Field(default=4, ge=1, le=256)
    seq_len: int = Field(default=128, ge=2, le=8192)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


# compress.quality.DEFAULT_MAX_TOKENS, restated: the API does not import torch.
EVALUATE_MAX_TOKENS = 262_144

class EvaluateParams(_Finite):
    """Held-out next-token loss of base, fine-tune and the result on each data set; the
    adapter's gain kept is measured on the first."""

    datasets: list[DatasetName] = Field(min_length=1, max_length=8)
    batch_size: int = Field(default=4, ge=1, le=256)
    seq_len: int = Field(default=128, ge=2, le=8192)
    max_batches: int | None = Field(
        default=None, ge=1, le=10_000,
        description="batches of batch_size rows scored per data set at most (default: all, "
                    "within max_tokens)")
    max_tokens: int = Field(
        default=EVALUATE_MAX_TOKENS, ge=1, le=2**24,
        description=f"the token budget: predicted tokens scored per data set at most "
                    f"(default {EVALUATE_MAX_TOKENS:,}); each set is scored whole up to it, "
                    "and the report states the budget and the rows and tokens each set used")


class CompressRequest(_Finite):
    """What to make of the fine-tune. Codec options not used by the method are refused."""

    name: str | None = Field(default=None, pattern=f"^{NAME_PATTERN}$",
                             description="adapter name (default: <model>-<method>)")
    alias: str | None = Field(default=None, pattern=f"^{NAME_PATTERN}$",
                              description="an alias to point at the new version")
    targets: list[TargetName] | None = Field(
        default=None, min_length=1, max_length=256,
        description="module names to compress (PEFT target_modules list semantics); "
                    "default: the attention and MLP projections")
    # BitDelta
    scale_mode: Literal["row", "tensor"] | None = Field(
        default=None, description="bitdelta: one α per output row (default) or per matrix")
    # LoRA
    rank: int | None = Field(default=None, ge=1, le=4096, description="lora: one rank for all")
    target_error: float | None = Field(
        default=None, gt=0, lt=1, description="lora: per-module ‖ΔW − BA‖/‖ΔW‖ to reach")
    max_rank: int | None = Field(default=None, ge=1, le=4096,
                                 description="lora: rank cap with target_error (default 256)")
    targets_only: bool | None = Field(
        default=None, description="lora: adapt the targets only; by default changed norms, "
                                  "embeddings and lm_head are carried (modules_to_save)")
    save_modules: bool | None = Field(
        default=None, deprecated=True,
        description="lora: no-op, carrying changed non-target modules is the default; "
                    "contradicts targets_only=true")
    verify: VerifyMode = Field(
        default="auto", description="check the result against the fine-tune: on a GPU "
                                    "worker with the Triton kernel (gpu), on any worker "
                                    "(cpu), whichever runs it (auto), or not at all (off)")
    max_error: float | None = Field(
        default=None, gt=0, description="fail the job when the measured relative error of "
                                        "the layer outputs exceeds this")
    distill: DistillParams | None = Field(
        default=None, description="bitdelta: distill the scales on a calibration data set")
    evaluate: EvaluateParams | None = Field(
        default=None, description="measure the gain kept on evaluation data sets")
    base: str | None = Field(
        default=None, pattern=f"^{NAME_PATTERN}$",
        description="the base to take the delta against, and to register the adapter on "
                    "(default: the fine-tune's base): a 4-bit base quantized from it, so "
                    "the delta is taken against the dequantized weights you serve")


class JobProgress(Schema):
    fraction: float
    stage: str
    message: str | None


class JobError(Schema):
    name: str
    detail: str


class JobAdapter(Schema):
    id: int
    name: str
    version: int | None


class JobOut(Schema):
    id: int
    status: str
    method: str
    model: str
    base: str
    adapter_name: str
    alias: str | None
    params: BitDeltaParams | LoraParams
    requirements: list[str]
    progress: JobProgress
    attempt: int
    max_attempts: int
    cancel_requested: bool
    error: JobError | None
    adapter: JobAdapter | None
    created_at: UTCDateTime
    started_at: UTCDateTime | None
    finished_at: UTCDateTime | None
    next_run_at: UTCDateTime
    updated_at: UTCDateTime

    @classmethod
    def of(cls, job: Job, model_names: dict[int, str],
           adapter: JobAdapter | None) -> JobOut:
        error = (JobError(name=job.error_name, detail=job.error_detail or "")
                 if job.error_name else None)
        return cls(
            id=job.id, status=job.status.value, method=job.method.value,
            model=model_names.get(job.model_id, str(job.model_id)),
            base=model_names.get(job.base_id, str(job.base_id)),
            adapter_name=job.adapter_name, alias=job.alias,
            params=parse_params(job.method, job.params),
            requirements=job.requirements,
            progress=JobProgress(fraction=job.progress, stage=job.stage, message=job.message),
            attempt=job.attempt, max_attempts=job.max_attempts,
            cancel_requested=job.cancel_requested, error=error, adapter=adapter,
            created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at, next_run_at=job.next_run_at,
            updated_at=job.updated_at,
        )
