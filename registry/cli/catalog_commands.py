"""`deltahub ls`, `show`, `alias set|rm` and `rm`: what the registry holds, over HTTP.

Adapter references are `<id>`, `NAME@VERSION`, `NAME:ALIAS`, or `NAME`, which is
`NAME:latest`: the registry moves `latest` to each new version, and `alias set NAME@2
latest` rolls back (the bare name follows; the next push moves it on). `latest` cannot be
removed.
Every listing and `show` print a table, or with `--json` the server's JSON for scripts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from registry.adapters.quality import Quality
from registry.cli.console import (
    Size,
    print_fields,
    print_fitted_table,
    print_json,
    print_table,
    stdout,
)
from registry.cli.failures import EXIT_USAGE, CommandFailure
from registry.cli.quality_table import print_evaluation
from registry.cli.remote import DEFAULT_URL, Json, Token, Url, connected
from registry.cli.serving_table import print_serving

alias_app = typer.Typer(help="Point an alias at an adapter version, or remove it.",
                        no_args_is_help=True)
AdapterRef = Annotated[str, typer.Argument(
    help="adapter: id, NAME (= NAME:latest), NAME@VERSION or NAME:ALIAS")]
ModelFlag = Annotated[bool, typer.Option("--model", help="REF is a model (name or id)")]


class Listing(StrEnum):
    adapters = "adapters"
    models = "models"


class Sort(StrEnum):
    newest = "newest"
    gain_kept = "gain_kept"


# The adapter listing's columns, and which give way first on a narrow terminal (highest
# number first; the name never): an adapter is found by name and version, and chosen by
# gain kept (and the data set it was measured on) and kind.
_ADAPTER_COLUMNS = {"id": 9, "name": 0, "version": 1, "kind": 3, "base": 7, "source": 10,
                    "aliases": 6, "size": 8, "ratio": 5, "gain kept": 2, "data set": 4}

_MODEL_COLUMNS = {"id": 6, "name": 0, "kind": 2, "base": 3, "status": 1, "parameters": 5,
                  "size": 4}


def _adapter_row(a: dict[str, Any]) -> list[object]:
    quality = Quality.parse_optional(a["quality"])
    gain = quality.gain_kept if quality else None
    on = quality.gain_kept_on if quality else None
    ratio = a["compression_ratio"]
    peft_type = (a.get("peft") or {}).get("peft_type")
    kind = f"{a['kind']} ({peft_type})" if a["kind"] == "peft" and peft_type else a["kind"]
    return [a["id"], a["name"], a["version"], kind, a["base"], a["source_model"] or "",
            ", ".join(a["aliases"]), Size(a["size_bytes"]),
            f"{ratio:.1f}x" if isinstance(ratio, int | float) else "",
            f"{gain:.3f}" if gain is not None else "", on or ""]


def _model_row(m: dict[str, Any]) -> list[object]:
    return [m["id"], m["name"], m["kind"], m["base"] or "", m["status"],
            m["parameter_count"] or 0, Size(m["total_bytes"])]


def ls(
    what: Annotated[Listing, typer.Argument(help="adapters or models")],
    base: Annotated[str | None, typer.Option(help="only those on this base")] = None,
    kind: Annotated[str | None, typer.Option(
        help="lora/bitdelta/peft, or base/finetune")] = None,
    name: Annotated[str | None, typer.Option(help="adapters: the versions of this name")]
    = None,
    alias: Annotated[str | None, typer.Option(help="adapters carrying this alias")] = None,
    sort: Annotated[Sort, typer.Option(
        help="adapters: newest first, or by measured gain kept (best first)")] = Sort.newest,
    json: Json = False, url: Url = DEFAULT_URL, token: Token = None,
    peft_type: Annotated[str | None, typer.Option(
        help="adapters: of this PEFT type (LORA, IA3, PREFIX_TUNING, ...)")] = None,
) -> None:
    """List adapters or models, newest first, or adapters by gain kept."""
    with connected(url, token) as client:
        if what is Listing.adapters:
            items = list(client.list_adapters(base=base, kind=kind, name=name, alias=alias,
                                              sort=sort.value, peft_type=peft_type))
            rows = [_adapter_row(a) for a in items]
        else:
            if name or alias or peft_type or sort is not Sort.newest:
                raise CommandFailure("bad option", "--name, --alias, --peft-type and --sort "
                                     "list adapters", EXIT_USAGE)
            items = list(client.list_models(base=base, kind=kind))
            rows = [_model_row(m) for m in items]
    columns = _ADAPTER_COLUMNS if what is Listing.adapters else _MODEL_COLUMNS
    if json:
        print_json(items)
    else:
        print_fitted_table(what.value, list(columns), rows, list(columns.values()))


def show(ref: AdapterRef, model: ModelFlag = False, json: Json = False,
         url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Show one adapter version (or, with --model, one model): aliases, files, lineage, quality."""
    with connected(url, token) as client:
        found = client.get_model(ref) if model else client.get_adapter(ref)
    if json:
        print_json(found)
        return
    quality = None if model else Quality.parse_optional(found["quality"])
    fields = _model_fields(found) if model else _adapter_fields(found, quality)
    title = found["name"] if model else f"{found['name']}@{found['version'] or 'draft'}"
    print_fields(title, fields)
    if not model and found.get("serving"):
        print_serving(found.get("peft"), found["serving"])
    print_table("files", ["file", "size", "sha256"],
                [[f["filename"], Size(f["size"]), f["sha256"]] for f in found["files"]])
    evaluation = quality.evaluation if quality else None
    if evaluation is not None:
        print_evaluation("evaluation (gain kept: 1 = all of the fine-tune's improvement, "
                         "0 = none)", evaluation)


def _adapter_fields(a: dict[str, Any], quality: Quality | None) -> list[tuple[str, object]]:
    headline = ", ".join(f"{k}={_short(v)}" for k, v in (quality.figures() if quality else [])
                         if v is not None and not isinstance(v, bool))
    ratio = a["compression_ratio"]
    return [("id", a["id"]), ("kind", a["kind"]), ("status", a["status"]),
            ("base", a["base"]), ("source", a["source_model"]),
            ("aliases", ", ".join(a["aliases"])), ("size", Size(a["size_bytes"])),
            ("compression ratio", f"{ratio:.1f}x" if ratio else None),
            ("params", ", ".join(f"{k}={_short(v)}" for k, v in a["params"].items()
                                 if k != "peft")),
            ("quality", headline), ("content digest", a["content_digest"]),
            ("created", a["created_at"]), ("finalized", a["finalized_at"])]


def _model_fields(m: dict[str, Any]) -> list[tuple[str, object]]:
    return [("id", m["id"]), ("kind", m["kind"]), ("base", m["base"]),
            ("status", m["status"]), ("tensors", m["tensor_count"]),
            ("parameters", m["parameter_count"]), ("size", Size(m["total_bytes"])),
            ("dtypes", ", ".join(f"{k}: {v}" for k, v in (m["dtypes"] or {}).items())),
            ("manifest digest", m["manifest_digest"]),
            ("created", m["created_at"]), ("finalized", m["finalized_at"])]


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@alias_app.command("set")
def alias_set(ref: AdapterRef,
              alias: Annotated[str, typer.Argument(help="the alias, e.g. prod")],
              url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Point ALIAS at the adapter version REF (moving it from the version it named).

    `alias set NAME@VERSION latest` rolls NAME back to that version until the next push.
    """
    with connected(url, token) as client:
        adapter = client.set_alias(ref, alias)
    stdout.print(f"{adapter['name']}:{alias} -> {adapter['name']}@{adapter['version']} "
                 f"(id {adapter['id']})", highlight=False)


@alias_app.command("rm")
def alias_rm(name: Annotated[str, typer.Argument(help="the adapter name")],
             alias: Annotated[str, typer.Argument(help="the alias to remove (not latest)")],
             url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Remove ALIAS from the adapter NAME (no version is deleted)."""
    with connected(url, token) as client:
        client.remove_alias(name, alias)
    stdout.print(f"removed {name}:{alias}", highlight=False)


def rm(ref: AdapterRef, model: ModelFlag = False,
       url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Delete an adapter version (or, with --model, a model).

    A finalized version needs an admin token; a pending draft, any token with push.
    """
    with connected(url, token) as client:
        if model:
            found = client.get_model(ref)
            client.delete_model(found["name"])
            label = f"model {found['name']}"
        else:
            found = client.get_adapter(ref)
            client.delete_adapter(found["id"])
            label = f"{found['name']}@{found['version'] or 'draft'}"
    stdout.print(f"deleted {label} (id {found['id']})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(ls)
    app.command()(show)
    app.add_typer(alias_app, name="alias")
    app.command()(rm)
