"""`deltahub bitdelta` and `deltahub merge`: compress a fine-tune to a 1-bit delta and back.

Both run locally on files (no server), show a progress bar in bytes on stderr and end
with a summary table on stdout. Codec errors print their message and exit with status 1;
the output directory is then never created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compress.bitdelta import GB, BitDeltaReport, ScaleMode, compress_bitdelta, merge_bitdelta
from compress.errors import CodecError
from registry.cli.console import byte_progress, codec_failure, print_table
from registry.cli.options import Device, TargetRegex, Targets, resolve_targets

MaxShardGB = Annotated[float, typer.Option(help="start a new shard past this size (GB)")]


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
) -> None:
    """Compress FINETUNE into a 1-bit BitDelta delta over BASE."""
    targets = resolve_targets(target, target_regex)
    try:
        with byte_progress("compressing") as progress:
            report = compress_bitdelta(base, finetune, output, scale=scale, targets=targets,
                                       device=device, progress=progress, workers=workers,
                                       max_shard_bytes=_shard_bytes(max_shard_gb))
    except CodecError as exc:
        raise codec_failure(exc) from exc
    _print_report(report, output)


def merge(
    base: Annotated[Path, typer.Argument(help="the base the delta was made against")],
    delta: Annotated[Path, typer.Argument(help="BitDelta delta directory")],
    output: Annotated[Path, typer.Option("--output", "-o", help="new model directory")],
    device: Device = "cpu",
    max_shard_gb: MaxShardGB = 5.0,
) -> None:
    """Rebuild the fine-tune from BASE and DELTA as a safetensors model transformers loads."""
    try:
        with byte_progress("merging") as progress:
            report = merge_bitdelta(base, delta, output, device=device, progress=progress,
                                    max_shard_bytes=_shard_bytes(max_shard_gb))
    except CodecError as exc:
        raise codec_failure(exc) from exc
    print_table(f"Merged model: {output}", ["", "value"], [
        ["weights rebuilt from bits", report.reconstructed],
        ["tensors taken from the delta", report.replaced],
        ["tensors taken from the base", report.copied],
        ["size (GB)", report.bytes_out / GB],
        ["files", ", ".join(report.files)],
        ["seconds", report.seconds],
    ], fold=True)


def register(app: typer.Typer) -> None:
    app.command("bitdelta")(bitdelta)
    app.command("merge")(merge)


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
