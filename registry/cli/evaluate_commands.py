"""`deltahub evaluate`: how much of a fine-tune a compressed model keeps, on local files.

Scores the base, the fine-tune and the compressed model (a BitDelta delta, a LoRA
adapter, or a whole model) on each data file, one model in memory at a time, and prints
loss, perplexity and gain kept per data set (compress/quality). A progress bar counts
batches on stderr. Codec errors (bad data, a delta for another base, no tokenizer for
text) print their message and exit with status 1; a missing transformers exits 7.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from compress.errors import CodecError
from compress.progress import ProgressFn
from compress.quality import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SEQ_LEN,
    MissingDependency,
    QualityReport,
    TextTokenizer,
    evaluate_quality,
)
from registry.adapters.quality import Evaluation
from registry.cli.console import console, fail, print_json, stdout
from registry.cli.failures import EXIT_FAILED, EXIT_NOT_INSTALLED
from registry.cli.options import Device
from registry.cli.quality_table import print_evaluation


class DtypeChoice(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    base: Annotated[Path, typer.Argument(exists=True, help="base model directory")],
    finetune: Annotated[Path, typer.Argument(exists=True, help="full fine-tune of BASE")],
    compressed: Annotated[Path, typer.Argument(
        exists=True, help="BitDelta delta, LoRA adapter, or model directory to judge")],
    data: Annotated[list[Path], typer.Option(
        "--data", exists=True, help="evaluation data: .txt, .jsonl (a \"text\" field per line) or "
        ".safetensors (integer input_ids, n rows × seq); repeat for a second data set",
        show_default=False)],
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="also write the report as JSON to this file ('-': print it to stdout "
        "instead of the table)", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="rows per forward pass")
                          ] = DEFAULT_BATCH_SIZE,
    seq_len: Annotated[int, typer.Option(
        min=2, help="tokens per row for text (pre-tokenized rows keep theirs)")
                       ] = DEFAULT_SEQ_LEN,
    max_batches: Annotated[int | None, typer.Option(
        min=1, help="batches scored per data set at most (default: all, within "
        "--max-tokens)", show_default=False)] = None,
    tokenizer: Annotated[Path | None, typer.Option(
        help="tokenizer.json for text data (default: BASE's, else FINETUNE's)",
        show_default=False)] = None,
    dtype: Annotated[DtypeChoice, typer.Option(help="what the models compute in")
                     ] = DtypeChoice.float32,
    device: Device = "cpu",
    max_tokens: Annotated[int, typer.Option(
        min=1, help="the token budget: predicted tokens scored per data set at most; each "
        "set is scored whole up to it")] = DEFAULT_MAX_TOKENS,
) -> None:
    """Measure how much of FINETUNE's gain over BASE a compressed model keeps, on data."""
    try:
        text_tokenizer = TextTokenizer.from_file(tokenizer) if tokenizer else None
        with batch_progress("evaluating") as progress:
            report = evaluate_quality(
                base, finetune, compressed, data, tokenizer=text_tokenizer,
                batch_size=batch_size, seq_len=seq_len, max_batches=max_batches,
                dtype=dtype.value, device=device, progress=progress, max_tokens=max_tokens)
    except MissingDependency as exc:
        raise fail("deltahub evaluate is not installed", exc.detail, EXIT_NOT_INSTALLED
                      ) from exc
    except CodecError as exc:
        raise fail(type(exc).__name__, exc.detail, EXIT_FAILED) from exc
    if json_path == Path("-"):
        print_json(report.to_dict())
        return
    if json_path is not None:
        json_path.write_text(report.to_json())
    print_report(report)


def print_report(report: QualityReport) -> None:
    evaluation = Evaluation.parse(report.to_dict())
    assert evaluation is not None  # the report's own dict
    print_evaluation(f"Quality of {report.compressed}", evaluation)
    sizes = ", ".join(f"{d.name}: {d.rows} rows × {d.seq_len} = {d.tokens:,} tokens"
                      f"{' (cut short)' if d.truncated else ' (all)'}" for d in report.datasets)
    budget = ("no token budget" if report.max_tokens is None
              else f"token budget {report.max_tokens:,} per data set")
    stdout.print(f"scored {sizes}; {budget}; {report.dtype} on {report.device}; one model of "
                  f"{report.resident_bytes / 1e9:.3g} GB resident at a time; "
                  f"{report.seconds:.1f} s", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def batch_progress(description: str) -> Iterator[ProgressFn]:
    """A progress bar counting batches, on stderr."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[item]}", style="dim"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None, item="")

        def update(done: int, total: int, item: str) -> None:
            bar.update(task, completed=done, total=total, item=item)

        yield update
