"""Server-side commands: `serve`, `db upgrade|current`, `token create|list|revoke`, `gc`.

These open the database (and storage) directly, from `DELTAHUB_*` settings, found the
way the server finds them; none creates a database but `db upgrade` (registry/cli/locate.py).
"""

from __future__ import annotations

from typing import Annotated

import typer

from registry.auth import service as tokens
from registry.cli.console import console, print_json, print_table, stdout
from registry.cli.failures import EXIT_FAILED, CommandFailure
from registry.cli.locate import migrated_engine, migrated_sessions, revision_of, shown, sqlite_path
from registry.cli.remote import Json
from registry.gc.collect import collect_garbage
from registry.gc.stale_drafts import remove_stale_drafts
from registry.infra.engines import is_sqlite, make_session_factory, unit_of_work
from registry.infra.migrate import head_revision, upgrade
from registry.settings import Settings
from registry.storage.factory import make_blob_store

db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens, straight in the database.", no_args_is_help=True)


def serve(
    host: Annotated[str | None, typer.Option(help="bind address [DELTAHUB_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [DELTAHUB_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="API processes [DELTAHUB_WORKERS; default: one per CPU core]")] = None,
) -> None:
    """Run the API server (the database must be migrated: `deltahub db upgrade`).

    With more than one worker, a supervisor runs that many API processes on one socket and
    the embedded job threads (DELTAHUB_EMBEDDED_WORKERS) in one job process of their own.
    SIGTERM or Ctrl-C: requests in flight get DELTAHUB_SHUTDOWN_TIMEOUT_SECONDS to finish.
    """
    from registry.cli.api_process import process_settings, run_api
    from registry.cli.supervisor import Supervisor, bind, default_workers
    from registry.infra.session_key import SessionKeyError, key_path

    settings = Settings()
    engine = migrated_engine(settings)
    with unit_of_work(make_session_factory(engine)) as session:
        issued = tokens.bootstrap_admin(session)
    engine.dispose()
    if issued is not None:
        console.print("[bold yellow]First start: created an admin token. It is shown only "
                      "once; store it now:[/bold yellow]")
        console.print(f"  [bold]{issued.secret}[/bold]")
        console.print("Create narrower tokens with `deltahub token create --scopes read,push`.")
    try:
        # Drawn here, once, before any process starts: they all read the same file.
        single = process_settings(settings, embedded_workers=True)
    except (SessionKeyError, OSError) as exc:
        raise CommandFailure("the web pages' session key", str(exc), EXIT_FAILED) from exc
    if not settings.SESSION_SECRET and not is_sqlite(settings.DATABASE_URL):
        console.print(f"Web sign-ins are signed with {key_path(settings)}, this machine's; "
                      "API replicas on other machines need one DELTAHUB_SESSION_SECRET.",
                      highlight=False)
    processes = workers or settings.WORKERS or default_workers()
    host, port = host or settings.HOST, port or settings.PORT
    if processes == 1:
        run_api(single, host, port)
        return
    try:
        sock = bind(host, port)
    except OSError as exc:  # the address is taken, or not ours to bind
        raise CommandFailure(f"listening on {host}:{port}", str(exc), EXIT_FAILED) from exc
    status = Supervisor(settings, host, port, processes).run(sock)
    if status != 0:
        raise typer.Exit(status)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Create or migrate the database: apply migrations up to REVISION (default: newest)."""
    url = Settings().DATABASE_URL
    upgrade(url, revision)
    path = sqlite_path(url)
    console.print(f"database {path or shown(url)} at {revision_of(url)}",
                  highlight=False)


@db_app.command("current")
def db_current() -> None:
    """Show the database's schema revision and the newest one."""
    settings = Settings()
    url = settings.DATABASE_URL
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        migrated_engine(settings).dispose()  # says where it looked and how to create one
    stdout.print(f"current {revision_of(url)}, head {head_revision(url)}")


@token_app.command("create")
def token_create(
    scopes: Annotated[str, typer.Option(help="comma-separated: read,push,compress,admin")],
    name: Annotated[str, typer.Option(help="a label to tell tokens apart")] = "cli",
) -> None:
    """Create a token and print it (only the token, so scripts can capture it)."""
    with migrated_sessions(Settings()) as factory, unit_of_work(factory) as session:
        issued = tokens.create_token(session, name, scopes.split(","))
    stdout.print(issued.secret, highlight=False)


@token_app.command("list")
def token_list(json: Json = False) -> None:
    """List tokens (never their secrets)."""
    with migrated_sessions(Settings()) as factory, unit_of_work(factory) as session:
        found = [(t.id, t.name, t.prefix, sorted(t.scopes), t.revoked_at is not None)
                 for t in tokens.list_tokens(session)]
    if json:
        print_json([{"id": i, "name": n, "prefix": p, "scopes": s, "revoked": r}
                    for i, n, p, s, r in found])
        return
    print_table("tokens", ["id", "name", "prefix", "scopes", "state"],
                [[i, n, f"{p}…", ",".join(s), "revoked" if r else "active"]
                 for i, n, p, s, r in found])


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="id from `token list`")]) -> None:
    """Revoke a token; requests with it get 401 from now on."""
    with migrated_sessions(Settings()) as factory, unit_of_work(factory) as session:
        tokens.revoke_token(session, token_id)
    console.print(f"token {token_id} revoked")


def gc(
    grace_seconds: Annotated[int | None, typer.Option(
        help="keep anything younger [DELTAHUB_GC_GRACE_SECONDS]")] = None,
    draft_ttl_seconds: Annotated[float | None, typer.Option(
        help="remove drafts untouched this long [DELTAHUB_DRAFT_TTL_SECONDS]")] = None,
) -> None:
    """Remove stale drafts, staging leftovers and blobs that nothing references.

    Also prunes events older than DELTAHUB_EVENT_RETENTION_DAYS from the feed.
    """
    from registry.events.service import prune_events  # the feed's rules: only here

    settings = Settings()
    engine = migrated_engine(settings)
    factory = make_session_factory(engine)
    store = make_blob_store(settings)
    ttl = settings.DRAFT_TTL_SECONDS if draft_ttl_seconds is None else draft_ttl_seconds
    grace = settings.GC_GRACE_SECONDS if grace_seconds is None else grace_seconds
    try:
        drafts = remove_stale_drafts(factory, store, ttl)
        report, rows = collect_garbage(factory, store, grace)
        with unit_of_work(factory) as session:
            pruned = prune_events(session, settings)
    finally:
        engine.dispose()  # its pooled connections, now rather than at exit
    print_table("garbage collection", ["what", "count", "bytes"], [
        ["stale drafts removed", drafts, 0],
        ["staging objects removed", report.staging_deleted, report.staging_bytes_freed],
        ["unfinished multipart uploads aborted", report.uploads_aborted, 0],
        ["blobs removed", report.blobs_deleted, report.blob_bytes_freed],
        ["blob rows removed", rows, 0],
        [f"events pruned (older than {settings.EVENT_RETENTION_DAYS:g} days)", pruned.events,
         0],
        ["webhook deliveries pruned (of pruned events)", pruned.deliveries, 0],
        ["kept (young or referenced)", report.kept_young + report.kept_referenced, 0],
    ])


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
    app.command()(gc)
