"""Server-side commands: `serve`, `db upgrade`, `token create|list|revoke`, `gc`.

These open the database (and storage) directly, from `DELTAHUB_*` settings.
"""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from registry.app import create_app
from registry.auth import service as tokens
from registry.blobs.service import collect_garbage
from registry.cli.console import console, print_table, stdout
from registry.db import make_engine, make_session_factory, unit_of_work
from registry.migrate import current_revision, head_revision, upgrade
from registry.settings import Settings
from registry.storage.factory import make_blob_store

db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


def serve(
    host: Annotated[str | None, typer.Option(help="bind address [DELTAHUB_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [DELTAHUB_PORT]")] = None,
) -> None:
    """Run the API server (the database must be migrated: `deltahub db upgrade`)."""
    settings = Settings()
    engine = make_engine(settings.DATABASE_URL)
    current, head = current_revision(engine), head_revision(settings.DATABASE_URL)
    if current != head:
        console.print(f"[red]the database is at revision {current}, not {head}[/red]; "
                      "run `deltahub db upgrade` first")
        raise typer.Exit(1)
    with unit_of_work(make_session_factory(engine)) as session:
        issued = tokens.bootstrap_admin(session)
    if issued is not None:
        console.print("[bold yellow]First start: created an admin token. It is shown only "
                      "once; store it now:[/bold yellow]")
        console.print(f"  [bold]{issued.secret}[/bold]")
        console.print("Create narrower tokens with `deltahub token create --scopes read,push`.")
    uvicorn.run(create_app(settings), host=host or settings.HOST,
                port=port or settings.PORT, log_level="info")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    url = Settings().DATABASE_URL
    upgrade(url, revision)
    console.print(f"database at {current_revision(make_engine(url))}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's schema revision and the newest one."""
    url = Settings().DATABASE_URL
    stdout.print(f"current {current_revision(make_engine(url))}, head {head_revision(url)}")


@token_app.command("create")
def token_create(
    scopes: Annotated[str, typer.Option(help="comma-separated: read,push,compress,admin")],
    name: Annotated[str, typer.Option(help="a label to tell tokens apart")] = "cli",
) -> None:
    """Create a token and print it (only the token, so scripts can capture it)."""
    factory = make_session_factory(make_engine(Settings().DATABASE_URL))
    with unit_of_work(factory) as session:
        issued = tokens.create_token(session, name, scopes.split(","))
    stdout.print(issued.secret, highlight=False)


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    factory = make_session_factory(make_engine(Settings().DATABASE_URL))
    with unit_of_work(factory) as session:
        rows = [[t.id, t.name, t.prefix + "…", ",".join(t.scopes),
                 "revoked" if t.revoked_at else "active"] for t in tokens.list_tokens(session)]
    print_table("tokens", ["id", "name", "prefix", "scopes", "state"], rows)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="id from `token list`")]) -> None:
    """Revoke a token; requests with it get 401 from now on."""
    factory = make_session_factory(make_engine(Settings().DATABASE_URL))
    with unit_of_work(factory) as session:
        tokens.revoke_token(session, token_id)
    console.print(f"token {token_id} revoked")


def gc(
    grace_seconds: Annotated[int | None, typer.Option(
        help="keep anything younger [DELTAHUB_GC_GRACE_SECONDS]")] = None,
) -> None:
    """Remove staging leftovers and blobs that no model or adapter references."""
    settings = Settings()
    factory = make_session_factory(make_engine(settings.DATABASE_URL))
    grace = settings.GC_GRACE_SECONDS if grace_seconds is None else grace_seconds
    report, rows = collect_garbage(factory, make_blob_store(settings), grace)
    print_table("garbage collection", ["what", "count", "bytes"], [
        ["staging objects removed", report.staging_deleted, report.staging_bytes_freed],
        ["unfinished multipart uploads aborted", report.uploads_aborted, 0],
        ["blobs removed", report.blobs_deleted, report.blob_bytes_freed],
        ["blob rows removed", rows, 0],
        ["kept (young or referenced)", report.kept_young + report.kept_referenced, 0],
    ])


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
    app.command()(gc)
