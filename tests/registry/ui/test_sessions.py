"""Sign-in, the session cookie, CSRF and scopes of the web pages."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from registry.auth.repository import TokenRepository
from registry.auth.tokens import hash_secret
from registry.infra.engines import make_session_factory, unit_of_work
from registry.tables import utcnow
from registry.ui.sessions import SESSION_COOKIE, SessionKeys
from tests.conftest import Tokens
from tests.registry.ui.conftest import form_token, secret, sign_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_pages_redirect_to_sign_in_and_back(client: TestClient, tokens: Tokens) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/ui"
    away = client.get("/ui/jobs?status=queued", follow_redirects=False)
    assert away.status_code == 303
    assert away.headers["location"] == "/ui/signin?next=%2Fui%2Fjobs%3Fstatus%3Dqueued"
    form = client.get(away.headers["location"])
    done = client.post("/ui/signin", data={"token": secret(tokens.read),
                                           "csrf_token": form_token(form.text),
                                           "next": "/ui/jobs?status=queued"},
                       follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/jobs?status=queued"
    cookie = done.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/ui" in cookie
    assert secret(tokens.read) not in cookie  # the cookie is not the API token
    assert client.get("/ui/jobs").status_code == 200


def test_sign_in_refuses_bad_tokens_and_foreign_forms(client: TestClient,
                                                      tokens: Tokens) -> None:
    form = client.get("/ui/signin")
    wrong = client.post("/ui/signin", data={"token": "dh_not-a-token",
                                            "csrf_token": form_token(form.text)})
    assert wrong.status_code == 401
    assert "unknown or revoked" in wrong.text
    assert SESSION_COOKIE not in client.cookies
    # A form posted from elsewhere has no token matching this browser's sign-in cookie.
    foreign = client.post("/ui/signin", data={"token": secret(tokens.read),
                                              "csrf_token": "forged"})
    assert foreign.status_code == 403
    assert SESSION_COOKIE not in client.cookies


def test_only_local_pages_are_followed_after_sign_in(client: TestClient,
                                                     tokens: Tokens) -> None:
    for target in ("https://evil.example/", "//evil.example/ui", "/ui/../x\\y"):
        form = client.get("/ui/signin")
        done = client.post("/ui/signin", data={"token": secret(tokens.read),
                                               "csrf_token": form_token(form.text),
                                               "next": target}, follow_redirects=False)
        assert done.headers["location"] == "/ui/models", target
        client.cookies.clear()


def test_a_token_without_read_cannot_sign_in(client: TestClient, tokens: Tokens) -> None:
    form = client.get("/ui/signin")
    done = client.post("/ui/signin", data={"token": secret(tokens.push),
                                           "csrf_token": form_token(form.text)})
    assert done.status_code == 403
    assert "the pages need one with &#39;read&#39;" in done.text


def _use(client: TestClient, cookie: str) -> None:
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, cookie)


def test_tampered_expired_or_revoked_sessions_end(app: FastAPI, client: TestClient,
                                                  tokens: Tokens, engine: Engine) -> None:
    sign_in(client, tokens.admin)
    good = client.cookies[SESSION_COOKIE]
    payload, mac = good.split(".")
    _use(client, f"{payload}.{mac[:-2]}xx")
    assert client.get("/ui/models", follow_redirects=False).status_code == 303
    keys: SessionKeys = app.state.ui_keys
    session_id = keys.session_id(good)
    assert session_id is not None
    old = keys.session_cookie(session_id, now=0)
    _use(client, old)
    assert client.get("/ui/models", follow_redirects=False).status_code == 303
    # A cookie signed with another key (another server's, or before a key change).
    other = SessionKeys(app.state.settings).session_cookie(session_id)
    _use(client, other)
    assert client.get("/ui/models", follow_redirects=False).status_code == 303
    _use(client, good)
    assert client.get("/ui/models", follow_redirects=False).status_code == 200
    # Revoking the token ends the sessions signed in with it.
    with unit_of_work(make_session_factory(engine)) as session:
        token = TokenRepository(session).by_hash(hash_secret(secret(tokens.admin)))
        assert token is not None
        token.revoked_at = utcnow()  # revoke_token refuses the last admin token
    assert client.get("/ui/models", follow_redirects=False).status_code == 303


def test_actions_need_the_csrf_token_of_the_session(client: TestClient,
                                                    tokens: Tokens) -> None:
    csrf = sign_in(client, tokens.admin)
    missing = client.post("/ui/jobs/1/cancel", data={})
    assert missing.status_code == 403
    assert "CSRFFailed" in missing.text
    wrong = client.post("/ui/jobs/1/cancel", data={"csrf_token": csrf[:-3] + "abc"})
    assert wrong.status_code == 403
    # With the right token the request gets past CSRF and scope to the service.
    right = client.post("/ui/jobs/1/cancel", data={"csrf_token": csrf})
    assert right.status_code == 404
    assert "JobNotFound" in right.text
    # Another session's token does not fit this session.
    other = TestClient(client.app)
    other_csrf = sign_in(other, tokens.read)
    assert other_csrf != csrf
    assert client.post("/ui/jobs/1/cancel", data={"csrf_token": other_csrf}).status_code == 403


def test_actions_need_their_scope(client: TestClient, tokens: Tokens) -> None:
    csrf = sign_in(client, tokens.read)
    forged = client.post("/ui/jobs/1/cancel", data={"csrf_token": csrf})
    assert forged.status_code == 403
    assert "the &#39;compress&#39; scope" in forged.text
    assert client.post("/ui/adapters/1/delete", data={"csrf_token": csrf}).status_code == 403
    assert client.post("/ui/adapters/1/aliases",
                       data={"csrf_token": csrf, "alias": "prod"}).status_code == 403
    assert client.post("/ui/models/x/compress", data={"csrf_token": csrf}).status_code == 403


def test_sign_out_clears_the_session(client: TestClient, tokens: Tokens) -> None:
    csrf = sign_in(client, tokens.read)
    assert client.post("/ui/signout", data={}).status_code == 403  # CSRF here too
    done = client.post("/ui/signout", data={"csrf_token": csrf}, follow_redirects=False)
    assert done.status_code == 303
    assert f'{SESSION_COOKIE}=""' in done.headers["set-cookie"]
    assert "Max-Age=0" in done.headers["set-cookie"]
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/ui/models", follow_redirects=False).status_code == 303
