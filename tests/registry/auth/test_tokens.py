from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens

PUBLIC = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every documented operation, with path parameters filled in."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        if path not in PUBLIC:
            concrete = re.sub(r"\{[^}]+\}", "x1", path)
            found += [(method.upper(), concrete) for method in operations]
    return found


def test_every_route_needs_a_token(app: FastAPI, client: TestClient) -> None:
    routes = _routes(app)
    assert len(routes) >= 15
    for method, path in routes:
        response = client.request(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"] == "Unauthorized"
        assert "Authorization: Bearer" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "dh_abc",
                                    "Bearer dh_not-a-real-token"])
def test_malformed_or_unknown_tokens_are_401(client: TestClient, header: str) -> None:
    response = client.get("/models", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"


def test_scopes_are_enforced(client: TestClient, tokens: Tokens) -> None:
    body = {"name": "m", "kind": "base"}
    refused = client.post("/models", json=body, headers=tokens.read)
    assert refused.status_code == 403
    assert refused.json()["error"] == "Forbidden"
    assert "'push'" in refused.json()["detail"]
    assert client.post("/models", json=body, headers=tokens.compress).status_code == 403
    assert client.post("/models", json=body, headers=tokens.push).status_code == 201
    assert client.get("/models", headers=tokens.push).status_code == 403
    assert client.get("/models", headers=tokens.read).status_code == 200
    # A pending draft needs only push to delete; a finalized model needs admin
    # (tests/registry/models/test_drafts.py).
    assert client.delete("/models/m", headers=tokens.read).status_code == 403
    assert client.delete("/models/m", headers=tokens.push).status_code == 204
    assert client.get("/tokens", headers=tokens.push).status_code == 403
    assert client.get("/models", headers=tokens.admin).status_code == 200  # admin implies all


def test_token_lifecycle_over_http(client: TestClient, tokens: Tokens) -> None:
    created = client.post("/tokens", json={"name": "ci", "scopes": ["read", "push"]},
                          headers=tokens.admin)
    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("dh_")
    assert created.json()["scopes"] == ["push", "read"]
    own = {"Authorization": f"Bearer {secret}"}
    assert client.get("/models", headers=own).status_code == 200

    listed = client.get("/tokens", headers=tokens.admin).json()
    assert all("token" not in t and secret not in str(t) for t in listed)

    revoked = client.delete(f"/tokens/{created.json()['id']}", headers=tokens.admin)
    assert revoked.json()["revoked_at"] is not None
    assert client.get("/models", headers=own).status_code == 401


def test_unknown_scope_is_422(client: TestClient, tokens: Tokens) -> None:
    response = client.post("/tokens", json={"name": "x", "scopes": ["root"]},
                           headers=tokens.admin)
    assert response.status_code == 422
    assert "unknown scope 'root'" in response.json()["detail"]


def test_health(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
