"""BitDelta scale distillation: train α alone, so the compressed model predicts like the fine-tune.

`distill_bitdelta(base, finetune, delta_dir, calibration, out)` runs the fine-tune first and
keeps its logits on disk (distill_logits.py), then trains the student's α with AdamW
(distill_models.py), so one model is resident at a time. Loss KL by default, `loss="mse"`
for the paper's. Deterministic from `seed`; a failed run leaves no output.
See docs/codecs.md, "Scale distillation"; gain kept per loss is in docs/benchmarks.md.
"""

from __future__ import annotations

import itertools
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from compress.bitdelta.distill_data import (
    BatchSchedule,
    Calibration,
    CalibrationSet,
    batch_schedule,
    load_calibration,
)
from compress.bitdelta.distill_logits import TEACHER_DTYPES, TeacherLogits, teacher_file
from compress.bitdelta.distill_models import BitDeltaLinear, build_student, build_teacher
from compress.bitdelta.distill_output import LOSS_PLOT, plot_losses, write_distilled, write_report
from compress.bitdelta.format import BitDeltaSummary, ScaleMode, inspect_bitdelta, scale_key
from compress.bitdelta.report import json_float
from compress.errors import IncompatibleModels, InvalidDelta, InvalidParameter, NonFiniteLoss
from compress.modeling.model import model_bytes
from compress.modeling.tokenizer import TextTokenizer
from compress.progress import ProgressFn, no_progress
from compress.tensorio import (
    Checkpoint,
    ModelInput,
    atomic_output_dir,
    describe_model,
    shape_mismatches,
)

LOSSES = ("mse", "kl")  # why KL by default: docs/codecs.md, "Scale distillation"
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                  "float16": torch.float16}
PROBE_BATCHES = 4  # batches scored before and after training, for initial and final loss


@dataclass(frozen=True)
class DistillConfig:
    """How α is trained. The defaults are the BitDelta paper's, but for the loss."""

    steps: int = 200
    lr: float = 1e-4  # AdamW's peak learning rate, decayed to 0 on a cosine
    batch_size: int = 4  # rows per step
    seq_len: int = 128  # tokens per row of text (pre-tokenized rows are cut to it)
    seed: int = 0  # the order of the calibration rows
    # 0: decay would pull α towards 0, i.e. towards the base, a prior the paper has no use for.
    weight_decay: float = 0.0
    dtype: str = "float32"  # what both models compute in
    teacher_dtype: str = "float16"  # how the fine-tune's logits are stored (distill_logits.py)
    loss: str = "kl"  # KL(fine-tune ‖ ours), or "mse": the paper's (docs/codecs.md)

    def check(self) -> None:
        problems = [f"{name} must be positive, got {value}" for name, value in
                    (("steps", self.steps), ("batch_size", self.batch_size))
                    if value < 1]
        if self.seq_len < 2:
            problems.append(f"seq_len must be at least 2, got {self.seq_len}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if self.dtype not in COMPUTE_DTYPES:
            problems.append(f"dtype must be one of {', '.join(COMPUTE_DTYPES)}, got "
                            f"{self.dtype!r}")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.teacher_dtype not in TEACHER_DTYPES:
            problems.append(f"teacher_dtype must be one of {', '.join(TEACHER_DTYPES)}, got "
                            f"{self.teacher_dtype!r}")
        if problems:
            raise InvalidParameter("distillation settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "optimizer": "AdamW", "schedule": "cosine"}


@dataclass
class DistillReport:
    config: DistillConfig
    scale_mode: ScaleMode
    trained_scales: int  # α tensors trained (one per compressed weight)
    trained_values: int  # α values in all
    calibration: list[CalibrationSet]
    losses: list[float] = field(default_factory=list)  # per step, before its update
    initial_loss: float = math.nan  # mean over the probe batches, α as compressed
    final_loss: float = math.nan  # the same batches, α distilled
    seconds: float = 0.0
    teacher_seconds: float = 0.0  # phase 1: the fine-tune's logits
    resident_bytes: int = 0  # the most held at once (see `distill_bitdelta`)
    teacher_file_bytes: int = 0
    peak_rss_bytes: int = 0  # the process's high-water mark, whatever ran before
    device_peak_bytes: int | None = None  # torch.cuda.max_memory_allocated on a GPU

    @property
    def tokens_per_step(self) -> int:
        return self.config.batch_size * (self.calibration[0].seq_len if self.calibration else 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(), "loss": self.config.loss,
            "scale_mode": self.scale_mode.value,
            "trained_scales": self.trained_scales, "trained_values": self.trained_values,
            "steps": len(self.losses), "lr": self.config.lr,
            "initial_loss": json_float(self.initial_loss),
            "final_loss": json_float(self.final_loss),
            "losses": [json_float(v) for v in self.losses],
            "calibration": [s.to_dict() for s in self.calibration],
            "calibration_rows": sum(s.rows for s in self.calibration),
            "calibration_tokens": sum(s.rows * s.seq_len for s in self.calibration),
            "tokens_trained": self.tokens_per_step * len(self.losses),
            "data": [s.name for s in self.calibration],
            "seconds": self.seconds, "teacher_seconds": self.teacher_seconds,
            "resident_bytes": self.resident_bytes,
            "teacher_file_bytes": self.teacher_file_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "device_peak_bytes": self.device_peak_bytes,
        }


def distill_bitdelta(
    base: ModelInput, finetune: ModelInput, delta_dir: str | os.PathLike[str],
    calibration: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
    config: DistillConfig = DistillConfig(), tokenizer: TextTokenizer | None = None,
    device: str | torch.device = "cpu", progress: ProgressFn = no_progress,
) -> DistillReport:
    """Distil the α of the delta at `delta_dir` and write the result to the new `out`.

    `base` and `finetune` are paths or TensorSources (the delta must have been made from
    them); `calibration` are data files (.txt, .jsonl, pre-tokenized .safetensors), text
    tokenized with `tokenizer`, by default the base's tokenizer.json, else the
    fine-tune's. `progress(done, total, item)` counts teacher batches, then steps; it is
    also called, without advancing, for each tensor read and each probe batch, so that a
    caller can stop the run (by raising) within one batch or one tensor of any phase.
    Returns the report, also saved in `out/report.json` under "distillation".
    """
    config.check()
    started = time.perf_counter()
    target = _device(device)
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    out_path = Path(out)
    with Checkpoint.open(base) as base_ckpt, Checkpoint.open(finetune) as ft_ckpt, \
            Checkpoint.open(delta_dir) as delta, atomic_output_dir(out_path) as scratch:
        summary = _check_inputs(base_ckpt, ft_ckpt, delta)
        data = load_calibration(calibration, base_ckpt, ft_ckpt, tokenizer,
                                seq_len=config.seq_len,
                                max_rows=config.steps * config.batch_size)
        report = DistillReport(config, summary.scale_mode, len(summary.compressed),
                               _scale_values(summary), data.sets)
        schedule = batch_schedule(int(data.rows.shape[0]), config.steps, config.batch_size,
                                  config.seed)
        vocab = _vocab_size(base_ckpt, delta)
        shape = (config.batch_size, data.seq_len, vocab)
        with teacher_file(out_path.parent, shape, config.teacher_dtype,
                          config.steps) as teacher:
            _teacher_phase(ft_ckpt, data, schedule, teacher, report, target, progress)
            scales = _student_phase(base_ckpt, delta, summary, data, schedule, teacher,
                                    report, target, progress)
            report.teacher_file_bytes = teacher.nbytes
        report.seconds = time.perf_counter() - started
        _measure_peaks(report, target)
        write_distilled(delta, scales, scratch, config.to_dict())
        write_report(delta, scratch, report.to_dict())
        plot_losses(report.losses, report.initial_loss, report.final_loss, scratch / LOSS_PLOT,
                    f"BitDelta α distillation: {describe_model(finetune)}", config.loss)
    return report


def _check_inputs(base: Checkpoint, finetune: Checkpoint, delta: Checkpoint) -> BitDeltaSummary:
    """The delta was made from this base and this fine-tune (digests, shapes)."""
    summary = inspect_bitdelta(delta.headers, None, base.manifest)
    mismatches = shape_mismatches(base.manifest, finetune.manifest)
    if mismatches:
        raise IncompatibleModels("the fine-tune", mismatches)
    if finetune.manifest.digest() != summary.finetune_manifest_digest:
        raise InvalidDelta(
            f"the delta was made from a fine-tune with manifest digest "
            f"{summary.finetune_manifest_digest[:12]}…, not this one "
            f"({finetune.manifest.digest()[:12]}…); distil against the fine-tune it was "
            "compressed from")
    return summary


def _teacher_phase(finetune: Checkpoint, data: Calibration, schedule: BatchSchedule,
                   teacher: TeacherLogits, report: DistillReport, device: torch.device,
                   progress: ProgressFn) -> None:
    """Phase 1: the fine-tune's logits for every step's batch, to the scratch file."""
    started = time.perf_counter()
    steps = schedule.steps
    model = build_teacher(finetune, dtype=COMPUTE_DTYPES[report.config.dtype], device=device,
                          on_tensor=_stay(progress, 0, 2 * steps, "reading the fine-tune"))
    batch_logits = math.prod(teacher.shape) * 4  # float32 logits of one batch
    report.resident_bytes = max(report.resident_bytes, model_bytes(model) + batch_logits)
    with torch.inference_mode():
        for step, batch in enumerate(schedule):
            rows = data.rows[batch].to(device)
            logits = model(input_ids=rows, use_cache=False).logits
            teacher.append(logits.float(), f"the calibration batch of step {step + 1}")
            progress(step + 1, 2 * steps, f"fine-tune logits, batch {step + 1}/{steps}")
    del model  # freed before the student is built: one model at a time
    report.teacher_seconds = time.perf_counter() - started


def _student_phase(base: Checkpoint, delta: Checkpoint, summary: BitDeltaSummary,
                   data: Calibration, schedule: BatchSchedule, teacher: TeacherLogits,
                   report: DistillReport, device: torch.device, progress: ProgressFn
                   ) -> dict[str, torch.Tensor]:
    """Phase 2: train α; returns the distilled α by tensor name, on the CPU."""
    config = report.config
    total = 2 * config.steps
    model, layers = build_student(
        base, delta, summary, dtype=COMPUTE_DTYPES[config.dtype], device=device,
        on_tensor=_stay(progress, config.steps, total, "reading the compressed model"))
    alphas = [layer.scale for layer in layers.values()]
    optimizer = torch.optim.AdamW(alphas, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / config.steps)))
    buffer = torch.empty(teacher.shape, dtype=teacher.dtype)
    probe = _Probe(model, data, schedule, teacher, buffer, device, config.loss)
    report.initial_loss = probe.loss(_stay(progress, config.steps, total, "initial loss"))
    for step, batch in enumerate(schedule):
        target = teacher.read(step, buffer).to(device=device, dtype=torch.float32)
        logits = model(input_ids=data.rows[batch].to(device), use_cache=False).logits
        loss = distillation_loss(config.loss, logits, target)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"the distillation loss is {value} at step {step + 1}: α diverged or the "
                f"compressed model overflows; lower the learning rate (lr={config.lr:g}) or "
                "compute in float32. Nothing was written")
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        report.losses.append(value)
        progress(config.steps + step + 1, total,
                 f"step {step + 1}/{config.steps}: loss {value:.4g}")
    report.final_loss = probe.loss(_stay(progress, total, total, "final loss"))
    report.resident_bytes = max(report.resident_bytes, _student_bytes(model, alphas, teacher))
    return _distilled_scales(layers)


@dataclass(frozen=True)
class _Probe:
    """The mean loss over the first PROBE_BATCHES steps' batches, for initial and final."""

    model: torch.nn.Module
    data: Calibration
    schedule: BatchSchedule
    teacher: TeacherLogits
    buffer: torch.Tensor
    device: torch.device
    kind: str

    def loss(self, on_batch: Callable[[str], None]) -> float:
        total, batches = 0.0, itertools.islice(self.schedule, PROBE_BATCHES)
        with torch.no_grad():
            for step, batch in enumerate(batches):
                on_batch(f"batch {step + 1}")
                target = self.teacher.read(step, self.buffer).to(device=self.device,
                                                                 dtype=torch.float32)
                logits = self.model(input_ids=self.data.rows[batch].to(self.device),
                                    use_cache=False).logits
                total += float(distillation_loss(self.kind, logits, target))
        return total / min(PROBE_BATCHES, self.schedule.steps)


def _stay(progress: ProgressFn, done: int, total: int, what: str) -> Callable[[str], None]:
    """A callback reporting `what` at `done` of `total` without advancing: a point where
    the caller can stop the run between two tensors or two probe batches."""
    return lambda item: progress(done, total, f"{what}: {item}")


def distillation_loss(kind: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over every position (and, for "mse", every logit) of the batch, in float32."""
    student = logits.float()
    if kind == "mse":
        return torch.nn.functional.mse_loss(student, target)
    vocab = student.shape[-1]
    return torch.nn.functional.kl_div(
        torch.log_softmax(student.view(-1, vocab), dim=-1),
        torch.log_softmax(target.view(-1, vocab), dim=-1), reduction="batchmean",
        log_target=True)


def _distilled_scales(layers: dict[str, BitDeltaLinear]) -> dict[str, torch.Tensor]:
    scales = {}
    for module, layer in layers.items():
        alpha = layer.scale.detach().float().cpu().contiguous()
        if not bool(torch.isfinite(alpha).all()):
            raise NonFiniteLoss(f"the distilled α of {module!r} is not finite; lower the "
                                "learning rate. Nothing was written")
        scales[scale_key(module)] = alpha
    return scales


def _student_bytes(model: torch.nn.Module, alphas: list[torch.nn.Parameter],
                   teacher: TeacherLogits) -> int:
    """The model (its bits included), α's gradient and two AdamW moments, two batches of
    float32 logits (the student's and the teacher's) and the teacher batch as read."""
    alpha_bytes = sum(a.numel() * 4 for a in alphas)
    logits = math.prod(teacher.shape) * 4
    return model_bytes(model) + 3 * alpha_bytes + 2 * logits + teacher.batch_bytes


def _scale_values(summary: BitDeltaSummary) -> int:
    if summary.scale_mode is ScaleMode.ROW:
        return sum(spec.shape[0] for spec in summary.compressed.values())
    return len(summary.compressed)


def _vocab_size(base: Checkpoint, delta: Checkpoint) -> int:
    config = delta.config or base.config or {}
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or vocab < 1:
        raise InvalidDelta("the model's config.json has no vocab_size; distillation needs it "
                           "to size the fine-tune's logits")
    return vocab


def _measure_peaks(report: DistillReport, device: torch.device) -> None:
    # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report.peak_rss_bytes = rss if sys.platform == "darwin" else rss * 1024
    if device.type == "cuda":
        report.device_peak_bytes = torch.cuda.max_memory_allocated(device)


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise InvalidParameter(f"unknown device {device!r} ({exc})") from exc
