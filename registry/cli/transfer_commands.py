"""`deltahub push`, `push-model`, `attach-tokenizer` and `pull`: files between a directory
and the server.

A push resumes: run again after a failure, it sends only the files the server does not
hold yet (the protocol is in registry/client/push.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from compress.filenames import (
    ADAPTER_CONFIG,
    DELTA_FILE,
    TOKENIZER_FILES,
    is_adapter_file,
    is_delta_file,
    is_model_file,
    is_report_file,
    is_tokenizer_file,
)
from registry.cli.console import console, stdout, transfer_progress
from registry.cli.failures import EXIT_FAILED, CommandFailure
from registry.cli.remote import DEFAULT_URL, Token, Url, connected
from registry.client import DeltahubClient, sha256_of
from registry.client.files import holds
from registry.client.push import Push


class AdapterKindChoice(StrEnum):
    """What `--kind` takes: the adapter kinds the server knows, by their names."""

    lora = "lora"
    bitdelta = "bitdelta"
    peft = "peft"


# Which files make up each thing pushed: the formats' rule, the one the server applies.
# An adapter of either kind also carries the codec's report.json and pictures.
_MEMBERSHIP: dict[AdapterKindChoice | None, tuple[Callable[[str], bool], str]] = {
    None: (is_model_file, "a model"),
    AdapterKindChoice.lora: (lambda n: is_adapter_file(n) or is_report_file(n),
                             "a LoRA adapter"),
    AdapterKindChoice.bitdelta: (lambda n: is_delta_file(n) or is_report_file(n),
                                 "a BitDelta delta"),
    AdapterKindChoice.peft: (lambda n: is_adapter_file(n) or is_report_file(n),
                             "a PEFT adapter"),
}


def detect_kind(directory: Path) -> AdapterKindChoice:
    if (directory / ADAPTER_CONFIG).exists():
        return _peft_kind(directory / ADAPTER_CONFIG)
    if any(p.suffix == ".safetensors" and is_delta_file(p.name) for p in directory.iterdir()):
        return AdapterKindChoice.bitdelta
    raise typer.BadParameter(f"{directory} holds neither {ADAPTER_CONFIG} (a peft LoRA) nor "
                             f"{DELTA_FILE} (a BitDelta delta)")


def _peft_kind(config: Path) -> AdapterKindChoice:
    """lora for peft_type LORA (DoRA and rsLoRA too), peft for every other PEFT type; the
    server checks the config again, so an unreadable one is left to its answer."""
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return AdapterKindChoice.lora
    peft_type = raw.get("peft_type") if isinstance(raw, dict) else None
    return AdapterKindChoice.peft if isinstance(peft_type, str) and peft_type != "LORA" \
        else AdapterKindChoice.lora


def files_to_push(directory: Path, kind: AdapterKindChoice | None) -> list[Path]:
    """The files that make up this kind of upload; others (trainer state, ...) are skipped."""
    belongs, what = _MEMBERSHIP[kind]
    chosen: list[Path] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        if belongs(path.name):
            chosen.append(path)
        else:
            console.print(f"[yellow]skipping {path.name}[/yellow]: not a file of {what}",
                          highlight=False)
    if not chosen:
        raise CommandFailure("nothing to push", f"{directory} holds no file of {what}",
                             EXIT_FAILED)
    return chosen


def _hash_all(paths: list[Path]) -> dict[str, str]:
    with transfer_progress() as progress:
        task = progress.add_task("hashing", total=sum(p.stat().st_size for p in paths), item="")
        return {p.name: sha256_of(p, lambda n: progress.advance(task, n)) for p in paths}


def _upload_all(client: DeltahubClient, owner: str, paths: list[Path],
                digests: dict[str, str]) -> None:
    with transfer_progress() as progress:
        task = progress.add_task("uploading", total=sum(p.stat().st_size for p in paths),
                                 item="")
        for path in paths:
            progress.update(task, item=path.name)
            client.upload(owner, path, digests[path.name], lambda n: progress.advance(task, n))


def pushing(client: DeltahubClient, paths: list[Path]) -> Push:
    """A push of `paths` that shows progress bars for hashing and uploading and says
    when it resumes (`push`, `push-model`, `push-dataset`)."""
    return Push(client, paths, _hash_all(paths), upload_all=_upload_all,
                say=lambda line: console.print(line, highlight=False))


def push(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                              help="adapter directory (peft output)")],
    base: Annotated[str, typer.Option(help="base model name, e.g. llama2-7b")],
    name: Annotated[str, typer.Option(help="adapter name, e.g. support-bot")],
    kind: Annotated[AdapterKindChoice | None, typer.Option(
        help="lora, peft or bitdelta (detected: adapter_config.json's peft_type LORA is "
             "lora, any other type peft)")] = None,
    alias: Annotated[str | None, typer.Option(help="also point this alias at it")] = None,
    source: Annotated[str | None, typer.Option(
        help="the fine-tune it was made from (a registered fine-tune of BASE), kept as its "
             "lineage")] = None,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Push an adapter directory (peft or BitDelta output): upload its files and get a version.

    Identical content returns the version already registered; new content makes the next
    version, which `NAME` (= `NAME:latest`) then means. A push that failed half-way resumes
    when run again: files already uploaded are not sent twice.
    """
    kind = kind or detect_kind(directory)
    paths = files_to_push(directory, kind)
    with connected(url, token) as client:
        adapter, created = pushing(client, paths).adapter(name, base, kind.value, source)
        if alias:
            adapter = client.set_alias(str(adapter["id"]), alias)
    what = "new version" if created else "unchanged: identical content already registered"
    stdout.print(f"{adapter['name']}@{adapter['version']} ({what}); id {adapter['id']}, "
                 f"aliases {', '.join(adapter['aliases'])}", highlight=False)


def push_model(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                              help="model directory (safetensors + config)")],
    name: Annotated[str, typer.Option(help="model name, e.g. llama2-7b")],
    base: Annotated[str | None, typer.Option(help="for a fine-tune: its base model")] = None,
    kind: Annotated[str | None, typer.Option(
        help="base or finetune (default: finetune with --base, else base)")] = None,
    quantized_from: Annotated[str | None, typer.Option(
        help="for a bitsandbytes 4-bit base: the full-precision base it was quantized "
             "from (its adapters then fit both)")] = None,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Register a base model or a full fine-tune: upload its files and finalize.

    A bitsandbytes 4-bit checkpoint registers as a base with its logical shapes;
    `--quantized-from` links it to the base it was quantized from.

    Run again after a failure, it resumes this token's own draft of NAME. Identical
    content again returns the model already registered; the same weights with tokenizer
    files the model lacks add those (`attach-tokenizer` sends only them).
    """
    if kind is not None and kind != ("finetune" if base else "base"):
        raise CommandFailure("bad --kind", "--kind base takes no --base; --kind finetune "
                             "needs --base", EXIT_FAILED)
    paths = files_to_push(directory, None)
    with connected(url, token) as client:
        push = pushing(client, paths)
        model, created = push.model(name, base, quantized_from)
    what = ("new" if created else f"weights unchanged; added {', '.join(push.sent)}"
            if push.sent else "unchanged: identical content already registered")
    four_bit = model.get("quantization")
    if four_bit:
        parent = model.get("quantized_from")
        what += (f"; 4-bit {four_bit['quant_type']}"
                 f"{', double quant' if four_bit['double_quant'] else ''}"
                 f"{f', quantized from {parent}' if parent else ''}")
    stdout.print(f"{model['name']}: {model['tensor_count']} tensors, "
                 f"{model['parameter_count']:,} parameters, ready ({what})", highlight=False)


def attach_tokenizer(
    model: Annotated[str, typer.Argument(help="a registered model's name or id")],
    directory: Annotated[Path, typer.Argument(
        exists=True, file_okay=False, help="directory holding the tokenizer's files "
        "(what tokenizer.save_pretrained writes)")],
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Add tokenizer files to a registered model, whose weights stay as they are.

    Text data sets need a tokenizer.json on the fine-tune or its base. A model gains each
    tokenizer file once: one it holds already with other bytes is refused.
    """
    paths = sorted(p for p in directory.iterdir() if p.is_file() and is_tokenizer_file(p.name))
    if not paths:
        raise CommandFailure("nothing to attach", f"{directory} holds no tokenizer file "
                             f"({', '.join(sorted(TOKENIZER_FILES))})", EXIT_FAILED)
    digests = _hash_all(paths)
    with connected(url, token) as client:
        found = client.get_model(model)
        held = {f["filename"]: f["sha256"] for f in found["files"]}
        todo = [p for p in paths if held.get(p.name) != digests[p.name]]
        _upload_all(client, f"/models/{found['name']}", todo, digests)
    added = ", ".join(p.name for p in todo) or "nothing (all there already)"
    stdout.print(f"{found['name']}: added {added}; weights unchanged", highlight=False)


def pull(
    ref: Annotated[str, typer.Argument(
        help="adapter: id, NAME (= NAME:latest), NAME@VERSION or NAME:ALIAS; with "
             "--model, a model's name or id")],
    output: Annotated[Path, typer.Option("-o", "--output", help="directory to write")],
    model: Annotated[bool, typer.Option("--model", help="REF is a model")] = False,
    url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Download an adapter's (or, with --model, a model's) files, checked against their sha256.

    Files already in the output directory with the right sha256 are kept, and a file
    that an interrupted pull left half-way continues from where it stopped, so pulling
    again moves only what is missing.
    """
    with connected(url, token) as client:
        found = client.get_model(ref) if model else client.get_adapter(ref)
        owner = f"/models/{found['name']}" if model else f"/adapters/{found['id']}"
        output.mkdir(parents=True, exist_ok=True)
        todo = [f for f in found["files"] if not holds(output / f["filename"], f["sha256"])]
        with transfer_progress() as progress:
            task = progress.add_task("downloading", total=sum(f["size"] for f in todo),
                                     item="")
            for file in todo:
                progress.update(task, item=file["filename"])
                client.download(owner, file["filename"], output / file["filename"],
                                file["sha256"], lambda n: progress.advance(task, n),
                                restart=lambda n: progress.advance(task, -n))
    label = found["name"] if model else f"{found['name']}@{found['version']}"
    stdout.print(f"{label} -> {output} ({len(found['files'])} files, "
                 f"{len(found['files']) - len(todo)} already there)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(push)
    app.command("push-model")(push_model)
    app.command("attach-tokenizer")(attach_tokenizer)
    app.command()(pull)
