"""Shared terminal output: progress bars, tables, JSON for scripts, one-line failures.

Tables and progress go to the terminal (progress on stderr); `--json` output goes to
stdout as plain JSON, never through rich, so a script can parse it whatever the terminal.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from compress.errors import CodecError
from compress.progress import ProgressFn

if TYPE_CHECKING:
    from rich.progress import Progress

def _console(*, stderr: bool) -> Console:
    made = Console(stderr=stderr)
    # Rich freezes COLUMNS at construction; forgetting it makes each print read the width
    # again (the terminal's, or COLUMNS as it is now), so a console made before COLUMNS
    # changed (the CLI invoked in-process, as the tests do) follows the current value.
    made._width = None
    return made


console = _console(stderr=True)
stdout = _console(stderr=False)


def transfer_progress() -> Progress:
    """Progress bars counted in bytes (GB = 10⁹ bytes), on stderr; add tasks to it."""
    # Here, not at the top: listings and `--help` draw no progress bar.
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

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
    """A progress bar in bytes, driven by a codec's `progress(done, total, item)` callback.

    Drawn from the codec's first report on: a run refused before it starts (an output
    that exists, a model that does not) prints its error with no empty bar above it.
    """
    bar = transfer_progress()
    task = bar.add_task(description, total=None, item="")

    def update(done: int, total: int, item: str) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total, item=item)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], *,
                fold: bool = False) -> None:
    """Print a table to stdout; numbers right-aligned.

    A cell too wide for the terminal ends in "…" on one line, so each row stays one line
    (listings: `--json` has every name whole). `fold` wraps text instead, for reports
    whose long module names must be read whole.
    """
    table = Table(title=title, title_justify="left")
    cells = [[_cell(v) for v in row] for row in rows]
    first = rows[0] if rows else [""] * len(columns)
    numeric = [isinstance(v, int | float) and not isinstance(v, bool) for v in first]
    for i, name in enumerate(columns):
        if numeric[i]:
            # Numbers are never cut: the text columns give way.
            table.add_column(name, justify="right", no_wrap=True,
                             min_width=max([len(name), *(len(row[i]) for row in cells)]))
        else:
            table.add_column(name, overflow="fold" if fold else "ellipsis")
    for row in cells:
        # A text cell stays on its line and ends in "…" when its column is narrowed.
        table.add_row(*(c if numeric[i] or fold else Text(c, no_wrap=True, overflow="ellipsis")
                        for i, c in enumerate(row)))
    stdout.print(table)


def print_fitted_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]],
                       priority: Sequence[int]) -> None:
    """A listing that fits the terminal with every cell whole: columns are dropped, the
    highest `priority` number first, until the table fits; priority 0 is never dropped
    (a name: it is what the reader looks for, and wraps rather than being cut).
    The dropped columns are named on stderr (`--json` has them all)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([cell_len(name), *(cell_len(row[i]) for row in cells)])
              for i, name in enumerate(columns)]
    keep = list(range(len(columns)))
    # A column with nothing in it gives way first, whatever its priority: it tells nothing.
    empty = [bool(cells) and all(row[i] in _EMPTY_CELLS for row in cells)
             for i in range(len(columns))]
    for i in sorted(keep, key=lambda i: (priority[i] != 0 and empty[i], priority[i]),
                    reverse=True):
        if priority[i] == 0 or _table_width([widths[k] for k in keep]) <= stdout.width:
            break
        keep.remove(i)
    print_table(title, [columns[k] for k in keep], [[row[k] for k in keep] for row in rows],
                fold=True)
    dropped = [name for i, name in enumerate(columns) if i not in keep]
    if dropped and rows:
        console.print(f"(not shown at this width: {', '.join(dropped)}; --json has every "
                      "field)", style="dim", highlight=False)


_EMPTY_CELLS = ("", "–", "-")


def _table_width(widths: Sequence[int]) -> int:
    """How wide rich draws a table of columns this wide: one space of padding on each side
    of a cell, and a border between and around them."""
    return sum(widths) + 3 * len(widths) + 1


def print_fields(title: str, fields: Sequence[tuple[str, object]]) -> None:
    """One record as `field  value` lines; values fold, since this is where they are read
    whole (a digest, the parameters)."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True,
                     min_width=max((len(k) for k, _ in fields), default=0))
    table.add_column("value", overflow="fold")
    for key, value in fields:
        table.add_row(key, "" if value is None else _cell(value))
    stdout.print(table)


def print_json(data: Any) -> None:
    """`data` as JSON on stdout, for scripts (`--json`)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


class Size(int):
    """A number of bytes, shown as 17.4 kB, 13.5 GB (10³ steps, as the progress bars)."""


_SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def _cell(value: object) -> str:
    if isinstance(value, Size):
        amount, unit = float(value), 0
        while amount >= 1000 and unit < len(_SIZE_UNITS) - 1:
            amount, unit = amount / 1000, unit + 1
        return f"{int(amount)} B" if unit == 0 else f"{amount:.1f} {_SIZE_UNITS[unit]}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fail(name: str, detail: str, code: int = 1) -> typer.Exit:
    """Print `<name>: <detail>` to stderr and return the Exit to raise."""
    # Text, not markup: details quote brackets ("deltahub[compress]", "input_ids [n, seq]").
    console.print(Text.assemble((name, "red"), ": ", detail), soft_wrap=True, highlight=False)
    return typer.Exit(code)


def codec_failure(exc: CodecError) -> typer.Exit:
    """A codec refused its input: say why, exit 1 (the codec wrote nothing)."""
    return fail(type(exc).__name__, exc.detail)
