"""`deltahub gc` prunes events past DELTAHUB_EVENT_RETENTION_DAYS; the feed then says 410."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from registry.auth.service import create_token, revoke_token
from registry.cli.app import app as cli_app
from registry.tables import Event, utcnow
from tests.conftest import Tokens


def test_gc_prunes_old_events(app: FastAPI, client: TestClient, tokens: Tokens,
                              database_url: str, tmp_path: Path) -> None:
    for name in ("old", "older", "recent"):
        with app.state.database.writing() as session:
            token = create_token(session, name, ["read"]).token
        with app.state.database.writing() as session:
            revoke_token(session, token.id)
    with app.state.database.writing() as session:  # the first two, 8 days ago
        session.execute(update(Event).where(Event.id <= 2).values(
            created_at=utcnow() - timedelta(days=8)))
    result = CliRunner().invoke(cli_app, ["gc"], env={
        "DELTAHUB_DATABASE_URL": database_url, "COLUMNS": "200",
        "DELTAHUB_STORAGE_URL": f"file://{tmp_path / 'blobs'}",
        "DELTAHUB_EVENT_RETENTION_DAYS": "7"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if "events pruned" in x)
    assert "older than 7 days" in line
    assert int(line.split("│")[2].strip()) == 2
    assert client.get("/events?after=1", headers=tokens.read).status_code == 410
    kept = client.get("/events?after=2", headers=tokens.read).json()
    assert [e["data"]["name"] for e in kept["items"]] == ["recent"]
