"""PostgreSQL connections are not pinged at checkout (a round trip per request): after the
server drops them (a restart), a request on one gets a JSON 503 with Retry-After, and the
next ones reconnect."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.conftest import Tokens


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_dropped_connection_is_one_503_then_the_pool_reconnects(
        client: TestClient, tokens: Tokens, database_url: str) -> None:
    assert client.get("/models", headers=tokens.read).status_code == 200  # a pooled connection
    admin = create_engine(database_url)
    try:
        with admin.begin() as conn:
            dropped = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    finally:
        admin.dispose()
    assert dropped
    first = client.get("/models", headers=tokens.read)
    assert first.status_code == 503, first.text
    assert first.json()["error"] == "DatabaseUnavailable"
    assert int(first.headers["retry-after"]) > 0
    for _ in range(3):
        assert client.get("/models", headers=tokens.read).status_code == 200
