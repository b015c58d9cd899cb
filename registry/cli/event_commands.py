"""`deltahub events [--follow]`: the registry's event feed, as lines or JSON lines.

With --follow it long-polls for ever, saving its cursor after each page in the state
directory (DELTAHUB_STATE_DIR, else $XDG_STATE_HOME/deltahub or ~/.local/state/deltahub),
one file per server and filter, so a follower started again goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from registry.cli.console import console
from registry.cli.remote import DEFAULT_URL, Json, Token, Url, connected
from registry.client import DeltahubClient

_WAIT_SECONDS = 25.0  # each long-poll; under the server's 30 s bound
_MAX_BACKOFF_SECONDS = 30.0


def events(
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="wait for new events for ever, resuming from the saved "
                               "cursor (Ctrl-C stops)")] = False,
    types: Annotated[list[str] | None, typer.Option(
        "--types", help="only these event types (repeat, or comma-separated), e.g. "
                        "adapter.registered,alias.set")] = None,
    base: Annotated[str | None, typer.Option(help="only events about this base model")]
    = None,
    name: Annotated[str | None, typer.Option(help="only events about this name")] = None,
    after: Annotated[int | None, typer.Option(
        help="start after this event id (default: 0, or with --follow the saved cursor)")]
    = None,
    count: Annotated[int | None, typer.Option(
        min=1, help="stop after this many events (e.g. --follow --count 1: wait for one)")]
    = None,
    cursor_file: Annotated[Path | None, typer.Option(
        help="where --follow keeps its cursor [state dir, one file per server and "
             "filter]")] = None,
    json_lines: Json = False, url: Url = DEFAULT_URL, token: Token = None,
) -> None:
    """Print the registry's events, oldest first; --follow waits for new ones."""
    wanted = [t.strip() for item in types or [] for t in item.split(",") if t.strip()]
    saved = cursor_file or _cursor_path(url, wanted, base, name)
    cursor = after if after is not None else (_load(saved) if follow else 0)
    printed = 0
    with connected(url, token) as client:
        try:
            while count is None or printed < count:
                page = _page(client, cursor, wanted, base, name, follow)
                for event in page["items"][:None if count is None else count - printed]:
                    _print(event, json_lines)
                    printed += 1
                    cursor = event["id"]
                if follow:
                    _save(saved, cursor)
                elif not page["items"]:
                    return
        except KeyboardInterrupt:
            if follow:
                _save(saved, cursor)
            console.print(f"stopped following at event {cursor}"
                          + (f" (saved in {saved})" if follow else ""), highlight=False)


def _page(client: DeltahubClient, cursor: int, types: list[str], base: str | None,
          name: str | None, follow: bool) -> dict[str, Any]:
    """The next page; when following, a server that is down or busy is waited for."""
    from registry.client.errors import ClientError, ServerUnreachable

    delay = 1.0
    while True:
        try:
            return client.events(cursor, types=types or None, base=base, name=name,
                                 wait_seconds=_WAIT_SECONDS if follow else 0)
        except (ServerUnreachable, ClientError) as exc:
            transient = isinstance(exc, ServerUnreachable) or exc.status >= 500
            if not (follow and transient):
                raise
            console.print(f"the feed is unavailable ({exc}); retrying in {delay:g} s",
                          highlight=False)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_SECONDS)


def _print(event: dict[str, Any], json_lines: bool) -> None:
    if json_lines:
        typer.echo(json.dumps(event, separators=(",", ":")))
        return
    data = event["data"]
    detail = data.get("path", "")
    if event["type"].startswith("alias."):
        detail += f" -> {_version(data['version'])} (was {_version(data['previous_version'])})"
    elif event["type"] == "job.failed":
        detail += f" {data['error']}"
    elif event["type"] == "job.succeeded":
        detail += f" -> /adapters/{data['adapter']['name']}@{data['adapter']['version']}"
    typer.echo(f"{event['id']:>8}  {event['created_at']}  {event['type']:<18}  {detail}")


def _version(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def _cursor_path(url: str, types: list[str], base: str | None, name: str | None) -> Path:
    root = os.environ.get("DELTAHUB_STATE_DIR") or str(
        Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        / "deltahub")
    key = json.dumps([url.rstrip("/"), sorted(types), base, name])
    return Path(root) / f"events-{hashlib.sha256(key.encode()).hexdigest()[:16]}.cursor"


def _load(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        return 0  # a damaged file: start over rather than refuse to follow


def _save(path: Path, cursor: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(f"{cursor}\n")
    partial.replace(path)  # a follower killed mid-write keeps the old cursor


def register(app: typer.Typer) -> None:
    app.command()(events)
