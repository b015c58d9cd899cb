"""`deltahub extract-lora`: distill a full fine-tune into a PEFT LoRA adapter, locally.

Like `deltahub bitdelta`: a progress bar in bytes on stderr, a summary table on stdout,
codec errors (bad ranks included) print their message and exit with status 1, and the
output directory is then never created. Modules that miss --target-error at the rank
cap are marked MISSED in the table and named in a warning. Changed norms, embeddings and
lm_head are carried through modules_to_save unless --targets-only; `--save-modules`,
which used to ask for that, is kept as an accepted no-op.
"""

from __future__ import annotations

from collections import defaultdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from compress.errors import CodecError
from compress.lora import (
    DEFAULT_MAX_RANK,
    REPORT_FILE,
    SPECTRA_FILE,
    ChangedTensor,
    LoraReport,
    ModuleResult,
    extract_lora,
)
from compress.targets import layer_pattern
from registry.cli.console import byte_progress, codec_failure, console, print_table, stdout
from registry.cli.options import TargetRegex, Targets, resolve_targets


class FactorDtypeChoice(StrEnum):
    float32 = "float32"
    finetune = "finetune"


def register(app: typer.Typer) -> None:
    app.command("extract-lora")(extract_lora_command)


def extract_lora_command(
    base: Annotated[Path, typer.Argument(help="base model: directory or .safetensors file")],
    finetune: Annotated[Path, typer.Argument(help="full fine-tune of BASE, same layout")],
    output: Annotated[Path, typer.Option("--output", "-o", help="new adapter directory")],
    rank: Annotated[int | None, typer.Option(help="the same rank for every module",
                                             show_default=False)] = None,
    target_error: Annotated[float | None, typer.Option(
        help="per module, the smallest rank with ‖ΔW − B·A‖/‖ΔW‖ ≤ this (0 < E < 1)",
        show_default=False)] = None,
    max_rank: Annotated[int | None, typer.Option(
        help=f"rank cap for --target-error [default: {DEFAULT_MAX_RANK}]",
        show_default=False)] = None,
    targets_only: Annotated[bool, typer.Option(
        help="adapt the targets only; leave changed norms, embeddings and lm_head out "
             "(smaller adapter, less of the fine-tune kept)")] = False,
    save_modules: Annotated[bool, typer.Option(
        help="no-op: carrying changed non-target modules through modules_to_save is "
             "now the default; accepted so older scripts keep working")] = False,
    target: Targets = None,
    target_regex: TargetRegex = None,
    dtype: Annotated[FactorDtypeChoice, typer.Option(
        help="dtype of lora_A/lora_B")] = FactorDtypeChoice.float32,
    base_name: Annotated[str | None, typer.Option(
        help="base_model_name_or_path to record [default: BASE]", show_default=False)] = None,
    device: Annotated[str, typer.Option(
        help="where the SVD arithmetic runs: cpu, cuda, cuda:1, ...")] = "cpu",
    seed: Annotated[int, typer.Option(help="seed of the randomized SVD")] = 0,
) -> None:
    """Distill FINETUNE into a PEFT LoRA adapter over BASE (randomized truncated SVD)."""
    targets = resolve_targets(target, target_regex)
    if save_modules and targets_only:
        raise typer.BadParameter("--save-modules (the default) contradicts --targets-only; "
                                 "pass one of them", param_hint="--targets-only")
    try:
        with byte_progress("extracting LoRA") as progress:
            report = extract_lora(
                base, finetune, output, rank=rank, target_error=target_error,
                max_rank=max_rank, targets=targets, targets_only=targets_only,
                factor_dtype=dtype.value, base_model_name_or_path=base_name, seed=seed,
                device=device, progress=progress)
    except CodecError as exc:
        raise codec_failure(exc) from exc
    print_summary(report, output)


def print_summary(report: LoraReport, out: Path) -> None:
    """Per module kind, then the changed non-targets carried and left out, with their size
    and change so the size/quality choice is visible; every number is in report.json."""
    print_table(f"LoRA adapter: {out}", ["module", "n", "rank", "max error", "min energy",
                                         "MB in", "MB out", "target met"],
                [_kind_row(kind, group) for kind, group in report.modules_by_kind().items()],
                fold=True)
    if report.saved:
        _print_changed("Changed and carried through modules_to_save", report.saved)
        stdout.print(f"saved through modules_to_save: {len(report.saved)} tensor(s), "
                     f"{_mb(sum(c.nbytes for c in report.saved)):.3f} MB; --targets-only "
                     "leaves them out", soft_wrap=True)
    if report.left_out:
        _print_changed("Changed but left out", report.left_out)
        if any("--targets-only" in c.reason for c in report.left_out):
            stdout.print("drop --targets-only to carry changed non-target modules through "
                         "modules_to_save", soft_wrap=True)
    if report.unchanged:
        stdout.print(f"unchanged, not adapted: {len(report.unchanged)} target module(s)")
    _warn_missed(report)
    stdout.print(f"adapter: {_mb(report.adapter_bytes):.3f} MB from a "
                 f"{_mb(report.finetune_bytes):.3f} MB fine-tune; details in "
                 f"{REPORT_FILE} and {SPECTRA_FILE}")


def _print_changed(title: str, changed: list[ChangedTensor]) -> None:
    """One row per tensor name across layers (and per reason): its count, size and change."""
    groups: dict[tuple[str, str], list[ChangedTensor]] = defaultdict(list)
    for c in changed:
        groups[(layer_pattern(c.name), c.reason.split(";")[0])].append(c)
    columns = ["tensor", "n", "max rel. change", "MB"] + (["why"] if changed[0].reason else [])
    rows = [(name, len(g), max(c.relative_change for c in g), _mb(sum(c.nbytes for c in g)),
             *([why] if why else [])) for (name, why), g in groups.items()]
    print_table(title, columns, rows, fold=True)


def _kind_row(kind: str, group: list[ModuleResult]) -> tuple[object, ...]:
    low, high = min(m.rank for m in group), max(m.rank for m in group)
    met = [m.target_met for m in group if m.target_met is not None]
    return (kind, len(group), str(low) if low == high else f"{low}-{high}",
            max(m.error for m in group), min(m.energy for m in group),
            _mb(sum(m.bytes_in for m in group)), _mb(sum(m.bytes_out for m in group)),
            f"{sum(met)}/{len(met)}" if met else "-")


def _warn_missed(report: LoraReport) -> None:
    missed = report.missed_target
    if not missed:
        return
    names = ", ".join(m.module for m in missed[:5]) + (" ..." if len(missed) > 5 else "")
    console.print(f"[yellow]warning[/yellow]: {len(missed)} module(s) miss the target error "
                  f"{report.settings['target_error']} at the rank cap "
                  f"{report.settings['max_rank']} (worst {max(m.error for m in missed):.4g}): "
                  f"{names}; raise --max-rank to meet it", soft_wrap=True, highlight=False)


def _mb(nbytes: int) -> float:
    return nbytes / 1e6
