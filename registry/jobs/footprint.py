"""What a job's distillation and evaluation will ask of a worker, estimated when it is queued.

The one place that sizes a job. A request whose estimate is over a limit (settings
`JOB_MAX_*`) is refused with a 422 naming the limit, before a worker fills its disk or
memory hours in. The figures follow what the codecs hold (compress/bitdelta/distill.py,
distill_logits.py, compress/quality/evaluation.py), with the row length asked for (the
data may give shorter rows, never longer), so they are upper bounds but for one thing:
activations inside the model, which at a batch's scale are small next to its logits
(batch × seq_len × vocab), are not counted.

Scratch disk counts what the data-set stages add to the codec's output, which every job
writes: the data sets fetched, the fine-tune's logits for every distillation step, and
the distilled copy of the delta written beside the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from compress.bitdelta.distill import COMPUTE_DTYPES, DistillConfig
from compress.bitdelta.distill_logits import TEACHER_DTYPES
from compress.errors import CodecError
from compress.targets import select_linear_weights
from compress.tensorio import Manifest, strictjson
from compress.tensorio.header import DTYPE_BYTES
from registry.errors import InvalidJobParameters, JobTooLarge, SequenceTooLong, from_codec_error
from registry.jobs.params import DistillStage, EvaluateStage
from registry.models.service import CONFIG_FILE
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import Model

# How the job's stages run (registry/jobs/quality_stage.py passes no dtype, so the
# codecs' defaults apply): models compute in float32, teacher logits are kept in float16.
_COMPUTE_BYTES = torch.empty((), dtype=COMPUTE_DTYPES[DistillConfig.dtype]).element_size()
_TEACHER_BYTES = torch.empty((), dtype=TEACHER_DTYPES[DistillConfig.teacher_dtype]
                             ).element_size()
_LOGIT_BYTES = 4  # logits are compared in float32
_TOKEN_BYTES = 8  # data rows are int64 token ids
_ALPHA_COPIES = 4  # α, its gradient and AdamW's two moments, float32 each


@dataclass(frozen=True)
class FinetuneShape:
    """What the estimate needs of the fine-tune: from its manifest and config.json."""

    parameters: int
    target_parameters: int  # of the weights BitDelta compresses (one sign bit each)
    target_rows: int  # α values, at most one per output row
    other_bytes: int  # every other tensor, carried whole in a delta
    vocab_size: int | None
    max_positions: int | None  # config.json's max_position_embeddings (n_positions)


@dataclass(frozen=True)
class Footprint:
    scratch_bytes: int
    memory_bytes: int


def finetune_shape(store: BlobStore, finetune: Model, manifest: Manifest,
                   targets: list[str]) -> FinetuneShape:
    targeted = set(select_linear_weights(manifest, targets))
    specs = list(manifest)
    config = _config(store, finetune)
    return FinetuneShape(
        parameters=sum(s.numel for s in specs),
        target_parameters=sum(s.numel for s in specs if s.name in targeted),
        target_rows=sum(s.shape[0] for s in specs if s.name in targeted),
        other_bytes=sum(s.numel * DTYPE_BYTES.get(s.dtype, 4) for s in specs
                        if s.name not in targeted),
        vocab_size=_positive_int(config, "vocab_size"),
        max_positions=(_positive_int(config, "max_position_embeddings")
                       or _positive_int(config, "n_positions")))


def estimate(shape: FinetuneShape, distill: DistillStage | None,
             evaluate: EvaluateStage | None, data_bytes: int) -> Footprint:
    """The most scratch disk and memory the data-set stages hold at once."""
    model = shape.parameters * _COMPUTE_BYTES
    vocab = shape.vocab_size or 0
    scratch, memory = data_bytes, 0
    if distill is not None:
        batch = distill.batch_size * distill.seq_len * vocab
        rows = min(distill.steps * distill.batch_size * distill.seq_len, data_bytes)
        delta = shape.target_parameters // 8 + shape.target_rows * 4 + shape.other_bytes
        scratch += distill.steps * batch * _TEACHER_BYTES + delta
        # The second phase (the student) holds more than the first (the teacher).
        memory = (model + shape.target_parameters // 8 + _ALPHA_COPIES * 4 * shape.target_rows
                  + 2 * batch * _LOGIT_BYTES + batch * _TEACHER_BYTES + rows * _TOKEN_BYTES)
    if evaluate is not None:
        batch = evaluate.batch_size * evaluate.seq_len * vocab
        per_set = _evaluated_tokens(evaluate, data_bytes)
        rows = min(per_set * len(evaluate.datasets), data_bytes)
        memory = max(memory, model + 2 * batch * _LOGIT_BYTES + rows * _TOKEN_BYTES)
    return Footprint(scratch, memory)


def _evaluated_tokens(evaluate: EvaluateStage, data_bytes: int) -> int:
    """Tokens held per data set at most: its bounds, else all of the data."""
    bounds = [data_bytes]
    if evaluate.max_batches is not None:
        bounds.append(evaluate.max_batches * evaluate.batch_size * evaluate.seq_len)
    if evaluate.max_tokens is not None:
        rows = max(1, evaluate.max_tokens // (evaluate.seq_len - 1))
        bounds.append(rows * evaluate.seq_len)
    return min(bounds)


def check(settings: Settings, shape: FinetuneShape, distill: DistillStage | None,
          evaluate: EvaluateStage | None, data_bytes: int) -> None:
    """Refuse a job that cannot run on the fine-tune or does not fit the limits."""
    for stage, params in (("distill", distill), ("evaluate", evaluate)):
        if params is not None and shape.max_positions is not None \
                and params.seq_len > shape.max_positions:
            raise SequenceTooLong(
                f"{stage}.seq_len is {params.seq_len}, over the fine-tune's "
                f"max_position_embeddings of {shape.max_positions} (its config.json); ask "
                f"for at most {shape.max_positions} tokens per row")
    if distill is not None:
        _check_distill(settings, shape, distill)
    footprint = estimate(shape, distill, evaluate, data_bytes)
    for quantity, need, limit, setting in (
            ("scratch disk", footprint.scratch_bytes, settings.JOB_MAX_SCRATCH_BYTES,
             "DELTAHUB_JOB_MAX_SCRATCH_BYTES"),
            ("memory", footprint.memory_bytes, settings.JOB_MAX_MEMORY_BYTES,
             "DELTAHUB_JOB_MAX_MEMORY_BYTES")):
        if need > limit:
            raise JobTooLarge(
                f"this job would need about {_gb(need)} of {quantity} on its worker, over "
                f"the limit of {_gb(limit)} ({setting}); ask for fewer steps, a smaller "
                "batch_size or seq_len, or fewer evaluation batches")


def _check_distill(settings: Settings, shape: FinetuneShape, distill: DistillStage) -> None:
    if distill.steps > settings.JOB_MAX_DISTILL_STEPS:
        raise JobTooLarge(
            f"distill.steps is {distill.steps}, over the limit of "
            f"{settings.JOB_MAX_DISTILL_STEPS} (DELTAHUB_JOB_MAX_DISTILL_STEPS); the paper's "
            "200 is usually enough")
    if shape.vocab_size is None:
        raise InvalidJobParameters(
            "the fine-tune's config.json has no vocab_size; distillation needs it to size "
            "the fine-tune's logits. Push a config.json that states it")


def _config(store: BlobStore, finetune: Model) -> dict[str, Any]:
    stored = next((f for f in finetune.files if f.filename == CONFIG_FILE), None)
    if stored is None:
        return {}
    try:
        config = strictjson.loads(store.read_bytes(stored.sha256), CONFIG_FILE)
    except CodecError as exc:
        raise from_codec_error(exc) from exc
    return config if isinstance(config, dict) else {}


def _positive_int(config: dict[str, Any], key: str) -> int | None:
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


def _gb(size: int) -> str:
    return f"{size / 1e9:.3g} GB" if size >= 10**7 else f"{math.ceil(size / 1e6)} MB"
