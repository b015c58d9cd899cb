"""`deltahub verify`: check a BitDelta delta's kernel and compression error against its fine-tune.

Runs locally on files (compress/bitdelta/verify.py): a progress bar in bytes on stderr, a summary
table and the worst layers on stdout (`--all`: every layer, in module order). The full
report as JSON is written only when asked, to `--json PATH`: a command that checks files
leaves no file behind unasked (and never writes into the delta directory, the artifact
that gets pushed).

Exit status: 0 when every kernel check agrees; 1 when a kernel check disagrees (the kernel
is wrong; the report is still written) or the inputs are refused (codec errors); 2 for
usage errors (click's); 3 when `--max-error` is given and some layer's compression error
exceeds it. The gate uses 3, not 2, so CI can tell a lossy delta from a bad command line.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from compress.bitdelta import DEFAULT_ROWS, VerifyReport, verify_delta
from compress.errors import CodecError
from registry.cli.console import (
    byte_progress,
    codec_failure,
    console,
    fail,
    print_table,
    stdout,
)

WORST_SHOWN = 10  # a 7B model has 224 compressed layers; the rest are in the JSON
EXIT_KERNEL = 1
EXIT_OVER_MAX_ERROR = 3


class BackendChoice(StrEnum):
    auto = "auto"
    torch = "torch"
    triton = "triton"


class DtypeChoice(StrEnum):
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


def verify(
    base: Annotated[Path, typer.Argument(help="the base the delta was made against")],
    finetune: Annotated[Path, typer.Argument(help="the uncompressed fine-tune")],
    delta: Annotated[Path, typer.Argument(help="BitDelta delta directory")],
    device: Annotated[str | None, typer.Option(
        help="cpu, cuda, cuda:1, ...  [default: cuda when there is one, else cpu]",
        show_default=False)] = None,
    rows: Annotated[int, typer.Option(help="random activation rows per layer")] = DEFAULT_ROWS,
    backend: Annotated[BackendChoice, typer.Option(
        help="kernel: auto (Triton on CUDA, torch on CPU), torch, or triton (on CPU only "
             "under TRITON_INTERPRET=1)")] = BackendChoice.auto,
    dtype: Annotated[DtypeChoice | None, typer.Option(
        help="compute dtype  [default: the base's fp16/bf16 on CUDA, else fp16; float32 on "
             "CPU]", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="seed of the random activations")] = 0,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="also write the full report, every layer, as JSON to this file",
        show_default=False)] = None,
    all_layers: Annotated[bool, typer.Option(
        "--all", help="list every layer, not only the worst")] = False,
    max_error: Annotated[float | None, typer.Option(
        help="exit with status 3 when a layer's ‖y − y_ft‖/‖y_ft‖ exceeds this",
        show_default=False)] = None,
) -> None:
    """Check every compressed layer of DELTA: kernel vs float32 reference, and vs FINETUNE."""
    if rows < 1:
        raise typer.BadParameter("--rows must be at least 1")
    if max_error is not None and not max_error >= 0:
        raise typer.BadParameter("--max-error must be a non-negative number")
    try:
        with byte_progress("verifying") as progress:
            report = verify_delta(base, finetune, delta, device, rows=rows,
                                  dtype=getattr(torch, dtype.value) if dtype else None,
                                  seed=seed, backend=backend.value, progress=progress)
    except CodecError as exc:
        raise codec_failure(exc) from exc
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n",
                                 encoding="utf-8")
        except OSError as exc:
            raise fail("cannot write the JSON report", str(exc)) from exc
    _print_summary(report, json_path)
    _print_layers(report, all_layers)
    raise typer.Exit(_verdict(report, max_error))


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)


def _print_summary(report: VerifyReport, out: Path | None) -> None:
    agreeing = len(report.layers) - len(report.kernel_failures)
    print_table(f"Verification of {report.delta}", ["", "value"], [
        ["layers verified", len(report.layers)],
        ["kernel agrees with fp32 reference", f"{agreeing} of {len(report.layers)} layers"],
        ["kernel max error (rel)", report.max_kernel_rel_error],
        ["kernel tolerance (rel)", report.layers[0].kernel_tolerance],
        ["‖y − y_ft‖/‖y_ft‖, mean over layers", report.mean_compression_error],
        ["‖y − y_ft‖/‖y_ft‖, max", report.max_compression_error],
        ["worst layer", report.worst_compression_layer],
        ["worst row, max", report.max_worst_row_error],
        ["share of ΔW's effect lost, mean", report.mean_effect_error],
        ["device / backend / dtype",
         f"{report.device} / {report.backend} / {str(report.dtype).removeprefix('torch.')}"],
        ["activations", f"{report.rows} rows, seed {report.seed}"],
        ["kernel checked at", ", ".join(f"{m} row{'s' * (m != 1)} ({k})"
                                        for m, k in report.kernel_batches.items())],
        ["seconds", report.seconds],
        ["JSON report", str(out) if out else "not written (--json PATH writes one)"],
    ], fold=True)


def _print_layers(report: VerifyReport, all_layers: bool) -> None:
    if all_layers:
        shown, title = report.layers, f"All {len(report.layers)} layers"
    else:
        # Every kernel failure is listed, whatever the count: those are the bugs.
        count = max(WORST_SHOWN, len(report.kernel_failures))
        shown = report.worst_layers[:count]
        title = (f"{len(shown)} worst layers by ‖y − y_ft‖/‖y_ft‖ "
                 f"(--all for all {len(report.layers)})")
    # Not print_table: module names must fold, not be cut to "model.…", on narrow terminals.
    table = Table(title=title, title_justify="left", caption_justify="left", caption=(
        "kernel err: max |y − y_ref|/max |y_ref|;  out err: ‖y − y_ft‖/‖y_ft‖ over the batch;  "
        "worst row: the same for the worst row;  ΔW lost: ‖y − y_ft‖/‖y_ft − y_base‖"))
    table.add_column("module", overflow="fold")
    table.add_column("[N, K]")
    for name in ("kernel err", "ok", "out err", "worst row", "ΔW lost"):
        table.add_column(name, justify="right")
    for r in shown:
        table.add_row(r.module, f"{r.shape[0]}×{r.shape[1]}", _cell(r.kernel_max_rel_error),
                      "yes" if r.kernel_agrees else "[red]NO[/red]",
                      _cell(r.compression_rel_error), _cell(r.worst_row_rel_error),
                      _cell(r.effect_rel_error))
    stdout.print(table)


def _cell(value: float) -> str:
    return f"{value:.3g}"


def _verdict(report: VerifyReport, max_error: float | None) -> int:
    if not report.ok:
        failures = report.kernel_failures
        console.print(f"[red]kernel check failed[/red] on {len(failures)} layers (first: "
                      f"{failures[0]}): the kernel disagrees with the float32 reference; "
                      "this is a kernel bug, not a compression error", highlight=False,
                      soft_wrap=True)
        return EXIT_KERNEL
    if max_error is not None and not report.max_compression_error <= max_error:
        console.print(f"[yellow]compression error[/yellow] {report.max_compression_error:.4g} "
                      f"of {report.worst_compression_layer} exceeds --max-error {max_error:g}",
                      highlight=False, soft_wrap=True)
        return EXIT_OVER_MAX_ERROR
    return 0

