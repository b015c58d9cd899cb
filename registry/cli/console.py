"""Shared terminal output: progress bars for long codec work and summary tables."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from compress.errors import CodecError
from compress.progress import ProgressFn

console = Console(stderr=True)
stdout = Console()


def transfer_progress() -> Progress:
    """Progress bars counted in bytes (GB = 10⁹ bytes), on stderr; add tasks to it."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=False),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[item]}", style="dim"),
    )
    return Progress(*columns, console=console, transient=False)


@contextlib.contextmanager
def byte_progress(description: str) -> Iterator[ProgressFn]:
    """A progress bar in bytes, driven by a codec's `progress(done, total, item)` callback."""
    with transfer_progress() as bar:
        task = bar.add_task(description, total=None, item="")

        def update(done: int, total: int, item: str) -> None:
            bar.update(task, completed=done, total=total, item=item)

        yield update


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a table to stdout; numbers right-aligned."""
    table = Table(title=title, title_justify="left")
    first = rows[0] if rows else [""] * len(columns)
    for name, sample in zip(columns, first, strict=True):
        numeric = isinstance(sample, int | float) and not isinstance(sample, bool)
        # Text folds rather than being cut to "model.…": module names are long.
        table.add_column(name, justify="right" if numeric else "left",
                         overflow="ellipsis" if numeric else "fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    stdout.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fail(name: str, detail: str, code: int = 1) -> typer.Exit:
    """Print `<name>: <detail>` to stderr and return the Exit to raise."""
    console.print(f"[red]{name}[/red]: {detail}", soft_wrap=True, highlight=False,
                  markup=True)
    return typer.Exit(code)


def codec_failure(exc: CodecError) -> typer.Exit:
    """A codec refused its input: say why, exit 1 (the codec wrote nothing)."""
    return fail(type(exc).__name__, exc.detail)
