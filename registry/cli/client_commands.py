"""`deltahub push`, `push-model`, `ls` and `pull`: talk to a deltahub server over HTTP.

The server is `DELTAHUB_URL` (default http://127.0.0.1:8000) and the token
`DELTAHUB_TOKEN`, so a CI job pushes with one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from compress.bitdelta import DELTA_FILE, is_delta_file
from compress.lora import ADAPTER_CONFIG, is_adapter_file
from compress.tensorio import is_model_file
from registry.cli.console import console, fail, print_table, stdout, transfer_progress
from registry.client import DEFAULT_URL, ClientError, DeltahubClient, sha256_of

Url = Annotated[str, typer.Option(envvar="DELTAHUB_URL", help="deltahub server")]
Token = Annotated[str | None, typer.Option(envvar="DELTAHUB_TOKEN", show_default=False,
                                           help="API token (or DELTAHUB_TOKEN)")]


@contextlib.contextmanager
def connected(url: str, token: str | None) -> Iterator[DeltahubClient]:
    """A client for the command's duration; a refusal becomes `<Error>: <detail>`, exit 1."""
    if not token:
        console.print("[red]no token: set DELTAHUB_TOKEN or pass --token[/red]")
        raise typer.Exit(2)
    client = DeltahubClient(url, token)
    try:
        yield client
    except ClientError as exc:
        raise fail(exc.error, exc.detail) from exc
    finally:
        client.close()


class AdapterKindChoice(StrEnum):
    """What `--kind` takes: the adapter kinds the server knows, by their names."""

    lora = "lora"
    bitdelta = "bitdelta"


# Which files make up each thing pushed: the formats' rule, the one the server applies.
_MEMBERSHIP: dict[AdapterKindChoice | None, tuple[Callable[[str], bool], str]] = {
    None: (is_model_file, "a model"),
    AdapterKindChoice.lora: (is_adapter_file, "a LoRA adapter"),
    AdapterKindChoice.bitdelta: (is_delta_file, "a BitDelta delta"),
}


def detect_kind(directory: Path) -> AdapterKindChoice:
    if (directory / ADAPTER_CONFIG).exists():
        return AdapterKindChoice.lora
    if any(p.suffix == ".safetensors" and is_delta_file(p.name) for p in directory.iterdir()):
        return AdapterKindChoice.bitdelta
    raise typer.BadParameter(f"{directory} holds neither {ADAPTER_CONFIG} (a peft LoRA) nor "
                             f"{DELTA_FILE} (a BitDelta delta)")


def files_to_push(directory: Path, kind: AdapterKindChoice | None) -> list[Path]:
    """The files that make up this kind of upload; others (trainer state, ...) are skipped."""
    belongs, what = _MEMBERSHIP[kind]
    chosen: list[Path] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        if belongs(path.name):
            chosen.append(path)
        else:
            console.print(f"[yellow]skipping {path.name}[/yellow]: not a file of {what}")
    return chosen


def _upload_all(client: DeltahubClient, owner: str, paths: list[Path]) -> None:
    total = sum(p.stat().st_size for p in paths)
    with transfer_progress() as progress:
        hashing = progress.add_task("hashing", total=total, item="")
        digests = {p: sha256_of(p, lambda n: progress.advance(hashing, n)) for p in paths}
        sending = progress.add_task("uploading", total=total, item="")
        for path in paths:
            progress.update(sending, item=path.name)
            client.upload(owner, path, digests[path], lambda n: progress.advance(sending, n))


def push(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                              help="adapter directory (peft output)")],
    base: Annotated[str, typer.Option(help="base model name, e.g. llama2-7b")],
    name: Annotated[str, typer.Option(help="adapter name, e.g. support-bot")],
    kind: Annotated[AdapterKindChoice | None, typer.Option(
        help="lora or bitdelta (detected)")] = None,
    alias: Annotated[str | None, typer.Option(help="also point this alias at it")] = None,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Push an adapter: upload its files and get a version (the same one for same content)."""
    kind = kind or detect_kind(directory)
    with connected(url, token) as client:
        paths = files_to_push(directory, kind)
        draft = client.create_adapter(name, base, kind.value)
        _upload_all(client, f"/adapters/{draft['id']}", paths)
        adapter, created = client.finalize_adapter(draft["id"])
        if alias:
            adapter = client.set_alias(str(adapter["id"]), alias)
    what = "new version" if created else "unchanged: identical content already registered"
    stdout.print(f"{adapter['name']}@{adapter['version']} ({what}); id {adapter['id']}, "
                 f"aliases {', '.join(adapter['aliases'])}")


def push_model(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                              help="model directory (safetensors + config)")],
    name: Annotated[str, typer.Option(help="model name, e.g. llama2-7b")],
    base: Annotated[str | None, typer.Option(help="for a fine-tune: its base model")] = None,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Register a base model or a full fine-tune: upload its files and finalize."""
    with connected(url, token) as client:
        paths = files_to_push(directory, None)
        client.create_model(name, base)
        _upload_all(client, f"/models/{name}", paths)
        model = client.finalize_model(name)
    stdout.print(f"{model['name']}: {model['tensor_count']} tensors, "
                 f"{model['parameter_count']:,} parameters, ready")


def _adapter_row(a: dict[str, Any]) -> list[object]:
    return [a["id"], a["name"], a["version"], a["kind"], a["base"], ", ".join(a["aliases"]),
            a["size_bytes"]]


def _model_row(m: dict[str, Any]) -> list[object]:
    return [m["id"], m["name"], m["kind"], m["base"] or "", m["status"],
            m["parameter_count"] or 0, m["total_bytes"]]


def ls(
    what: Annotated[str, typer.Argument(help="adapters or models")],
    base: Annotated[str | None, typer.Option(help="only those on this base")] = None,
    kind: Annotated[str | None, typer.Option(help="lora/bitdelta, or base/finetune")] = None,
    name: Annotated[str | None, typer.Option(help="adapter name")] = None,
    alias: Annotated[str | None, typer.Option(help="adapters carrying this alias")] = None,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """List adapters or models, newest first."""
    with connected(url, token) as client:
        if what == "adapters":
            items: Iterator[dict[str, Any]] = client.list_adapters(
                base=base, kind=kind, name=name, alias=alias)
            columns = ["id", "name", "version", "kind", "base", "aliases", "bytes"]
            rows = [_adapter_row(a) for a in items]
        elif what == "models":
            columns = ["id", "name", "kind", "base", "status", "parameters", "bytes"]
            rows = [_model_row(m) for m in client.list_models(base=base, kind=kind)]
        else:
            raise typer.BadParameter("list 'adapters' or 'models'")
    print_table(what, columns, rows)


def pull(
    ref: Annotated[str, typer.Argument(help="adapter: id, name, name@version or name:alias")],
    output: Annotated[Path, typer.Option("-o", "--output", help="directory to write")],
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Download an adapter's files (checked against their sha256)."""
    with connected(url, token) as client:
        adapter = client.get_adapter(ref)
        output.mkdir(parents=True, exist_ok=True)
        total = sum(f["size"] for f in adapter["files"])
        with transfer_progress() as progress:
            task = progress.add_task("downloading", total=total, item="")
            for file in adapter["files"]:
                progress.update(task, item=file["filename"])
                client.download(f"/adapters/{adapter['id']}", file["filename"],
                                output / file["filename"], file["sha256"],
                                lambda n: progress.advance(task, n))
    stdout.print(f"{adapter['name']}@{adapter['version']} -> {output} "
                 f"({len(adapter['files'])} files)")


def register(app: typer.Typer) -> None:
    app.command()(push)
    app.command("push-model")(push_model)
    app.command()(ls)
    app.command()(pull)
