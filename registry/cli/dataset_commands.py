"""`deltahub push-dataset` and `datasets`: calibration and evaluation data, over HTTP.

A data set is text (.txt), JSON lines with a "text" field (.jsonl) or token ids
(.safetensors with an integer `input_ids` [n, seq]); the server checks each file whole
and keeps it content-addressed. Pushing the same files again is a no-op, and a push
that failed half-way resumes, as `push` does (registry/client/push.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from registry.cli.console import Size, print_json, print_table, stdout
from registry.cli.failures import EXIT_USAGE, CommandFailure
from registry.cli.remote import DEFAULT_URL, Json, Token, Url, connected
from registry.cli.transfer_commands import pushing

# What a text data set needs, said when it is pushed rather than when a job is refused.
TEXT_NEEDS_TOKENIZER = (
    "text: a job tokenizes it with the tokenizer.json of the fine-tune or its base; a model "
    "without one can gain it (`deltahub attach-tokenizer MODEL DIR`), or push the data "
    "pre-tokenized (.safetensors with input_ids)")


def push_dataset(
    files: Annotated[list[Path], typer.Argument(
        exists=True, dir_okay=False, help="data files: .txt, .jsonl (a \"text\" field per "
        "line) or .safetensors (integer input_ids [n, seq])")],
    name: Annotated[str, typer.Option(help="data set name, e.g. wikitext-calibration")],
    description: Annotated[str | None, typer.Option(
        help="what the data is and where it came from")] = None,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Register a data set (calibration or evaluation data): upload its files and finalize.

    The same files under NAME again change nothing; a push that failed half-way resumes
    when run again. A finalized data set never changes: new data needs a new name.
    """
    seen: dict[str, Path] = {}
    for path in files:
        if path.name in seen:
            raise CommandFailure("bad arguments", f"{seen[path.name]} and {path} have the same "
                                 "file name; a data set holds one file of each name",
                                 EXIT_USAGE)
        seen[path.name] = path
    with connected(url, token) as client:
        dataset, created = pushing(client, sorted(files, key=lambda p: p.name)).dataset(
            name, description)
    what = "new" if created else "unchanged: the same files were registered already"
    stdout.print(f"{dataset['name']}: {len(dataset['files'])} file(s), "
                 f"{dataset['total_bytes']:,} bytes, ready ({what}); digest "
                 f"{dataset['content_digest'][:12]}", highlight=False)
    if dataset["needs_tokenizer"]:
        stdout.print(TEXT_NEEDS_TOKENIZER, highlight=False)


def _row(d: dict[str, Any]) -> list[object]:
    return [d["id"], d["name"], d["status"], len(d["files"]), Size(d["total_bytes"]),
            "text" if d["needs_tokenizer"] else "token ids", d["description"] or ""]


def datasets(
    status: Annotated[str | None, typer.Option(
        help="only pending drafts or ready (finalized) data sets")] = None,
    json: Json = False, url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """List data sets, newest first."""
    with connected(url, token) as client:
        items = list(client.list_datasets(status=status))
    if json:
        print_json(items)
    else:
        print_table("datasets", ["id", "name", "status", "files", "size", "data",
                                 "description"], [_row(d) for d in items])


def register(app: typer.Typer) -> None:
    app.command("push-dataset")(push_dataset)
    app.command()(datasets)
