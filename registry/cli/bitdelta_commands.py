"""`deltahub bitdelta`: compress a fine-tune to a 1-bit delta (`deltahub merge`, in
merge_commands.py, rebuilds it).

It runs locally on files (no server), shows a progress bar in bytes on stderr and ends
with a summary table on stdout. Codec errors print their message and exit with status 1;
the output directory is then never created.

`bitdelta --distill DATA` then distils α on DATA (compress/bitdelta/distill.py): the
delta is compressed into a scratch directory beside OUTPUT, distilled into OUTPUT, and
the scratch removed, so OUTPUT appears only once both stages have succeeded.
"""

from __future__ import annotations

import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from compress.bitdelta import (
    GB,
    BitDeltaReport,
    DistillConfig,
    DistillReport,
    ScaleMode,
    compress_bitdelta,
    distill_bitdelta,
)
from compress.errors import CodecError, OutputExists
from compress.targets import TargetSpec
from registry.cli.console import byte_progress, codec_failure, print_table
from registry.cli.evaluate_commands import batch_progress
from registry.cli.options import Device, TargetRegex, Targets, resolve_targets

MaxShardGB = Annotated[float, typer.Option(help="start a new shard past this size (GB)")]
_DEFAULTS = DistillConfig()


class DistillLoss(StrEnum):
    kl = "kl"
    mse = "mse"


_DEFAULT_LOSS = DistillLoss(_DEFAULTS.loss)
Distill = Annotated[list[Path] | None, typer.Option(
    "--distill", exists=True, dir_okay=False, help="then distil α on this calibration data "
    "(.txt, .jsonl or .safetensors input_ids; repeat for more files)", show_default=False)]
Steps = Annotated[int, typer.Option(min=1, help="distillation steps")]
Lr = Annotated[float, typer.Option(help="distillation's peak learning rate (AdamW, cosine)")]
BatchSize = Annotated[int, typer.Option(min=1, help="calibration rows per distillation step")]
SeqLen = Annotated[int, typer.Option(min=2, help="tokens per calibration row of text")]
Seed = Annotated[int, typer.Option(help="seed of the calibration batches' order")]
Loss = Annotated[DistillLoss, typer.Option(
    help="kl: KL divergence of the next-token distributions; mse: the paper's squared error "
    "of the logits")]


def bitdelta(
    base: Annotated[Path, typer.Argument(help="base model: directory or .safetensors file")],
    finetune: Annotated[Path, typer.Argument(help="fine-tuned model with the same layout")],
    output: Annotated[Path, typer.Option("--output", "-o", help="new delta directory")],
    scale: Annotated[ScaleMode, typer.Option(
        help="one α per output row, or per matrix (the paper's choice)")] = ScaleMode.ROW,
    target: Targets = None,
    target_regex: TargetRegex = None,
    device: Device = "cpu",
    max_shard_gb: MaxShardGB = 5.0,
    workers: Annotated[int | None, typer.Option(
        min=1, help="CPU encoder threads (default: cores - 1, one is left to the reader)",
        show_default=False)] = None,
    distill: Distill = None,
    steps: Steps = _DEFAULTS.steps,
    lr: Lr = _DEFAULTS.lr,
    batch_size: BatchSize = _DEFAULTS.batch_size,
    seq_len: SeqLen = _DEFAULTS.seq_len,
    seed: Seed = _DEFAULTS.seed,
    loss: Loss = _DEFAULT_LOSS,
) -> None:
    """Compress FINETUNE into a 1-bit BitDelta delta over BASE.

    With --distill DATA, then train the delta's α on DATA so that its predictions match
    FINETUNE's (BitDelta's scale distillation); OUTPUT appears only if both stages succeed.
    """
    targets = resolve_targets(target, target_regex)
    shard_bytes = _shard_bytes(max_shard_gb)
    config = DistillConfig(steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len,
                           seed=seed, loss=loss.value)
    try:
        if not distill:
            report = _compress(base, finetune, output, scale, targets, device, workers,
                               shard_bytes)
            _print_report(report, output)
            return
        config.check()  # bad settings fail before the compression, not after it
        _refuse_existing(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{output.name}.", suffix=".undistilled",
                                         dir=output.parent) as scratch:
            undistilled = Path(scratch) / "delta"
            report = _compress(base, finetune, undistilled, scale, targets, device, workers,
                               shard_bytes)
            with batch_progress("distilling") as progress:
                distilled = distill_bitdelta(base, finetune, undistilled, distill, output,
                                             config=config, device=device, progress=progress)
    except CodecError as exc:
        raise codec_failure(exc) from exc
    _print_report(report, output)
    _print_distillation(distilled)


def register(app: typer.Typer) -> None:
    app.command("bitdelta")(bitdelta)


def _compress(base: Path, finetune: Path, output: Path, scale: ScaleMode, targets: TargetSpec,
              device: str, workers: int | None, shard_bytes: int) -> BitDeltaReport:
    with byte_progress("compressing") as progress:
        return compress_bitdelta(base, finetune, output, scale=scale, targets=targets,
                                 device=device, progress=progress, workers=workers,
                                 max_shard_bytes=shard_bytes)


def _refuse_existing(output: Path) -> None:
    """Before compressing, the check distillation's output would make only at the end."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputExists(f"{output} already exists and is not empty; choose a new output "
                           "path")


def _shard_bytes(gb: float) -> int:
    if gb <= 0:
        raise typer.BadParameter("--max-shard-gb must be positive")
    return int(gb * GB)


def _print_report(report: BitDeltaReport, output: Path) -> None:
    print_table(f"BitDelta delta: {output}", ["", "value"], [
        ["scale mode", report.scale_mode.value],
        ["weights compressed", len(report.compressed)],
        ["tensors stored whole", len(report.tensors) - len(report.compressed)],
        ["tensors unchanged (omitted)", len(report.omitted)],
        ["fine-tune (GB)", report.bytes_in / GB],
        ["delta (GB)", report.bytes_out / GB],
        ["compression ratio", report.ratio],
        ["‖ΔW − α·sign‖/‖ΔW‖", report.delta_rel_error],
        ["‖W_ft − Ŵ_ft‖/‖W_ft‖", report.weight_rel_error],
        ["seconds", report.seconds],
        ["fine-tune read (GB/s)", report.throughput_gb_s],
    ], fold=True)
    print_table("Relative error by projection", ["module", "‖ΔW − α·sign‖/‖ΔW‖",
                                                 "‖W_ft − Ŵ_ft‖/‖W_ft‖"],
                [[kind, errors.delta_rel_error, errors.weight_rel_error]
                 for kind, errors in report.errors_by_kind().items()], fold=True)


def _print_distillation(report: DistillReport) -> None:
    data = ", ".join(f"{s.name}: {s.rows} rows × {s.seq_len}" for s in report.calibration)
    print_table("Distillation of α", ["", "value"], [
        ["loss", report.config.loss],
        ["loss before → after (probe batches)",
         f"{report.initial_loss:.4g} → {report.final_loss:.4g}"],
        ["steps × rows × tokens", f"{len(report.losses)} × {report.config.batch_size} × "
                                  f"{report.calibration[0].seq_len}"],
        ["peak learning rate", report.config.lr],
        ["α trained (tensors, values)", f"{report.trained_scales}, {report.trained_values}"],
        ["calibration data", data],
        ["resident (GB)", report.resident_bytes / GB],
        ["fine-tune logits on disk (GB)", report.teacher_file_bytes / GB],
        ["seconds (of which fine-tune logits)",
         f"{report.seconds:.1f} ({report.teacher_seconds:.1f})"],
    ], fold=True)
