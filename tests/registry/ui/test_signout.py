"""Signing out ends the session on the server: a copy of the cookie kept from before
reads nothing and changes nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from registry.infra.engines import make_session_factory, unit_of_work
from registry.tables import PageSession
from registry.ui.sessions import SESSION_COOKIE
from tests.conftest import Tokens
from tests.registry.ui.conftest import Seeded, sign_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _sessions(engine: Engine) -> int:
    with unit_of_work(make_session_factory(engine)) as session:
        return int(session.scalar(select(func.count()).select_from(PageSession)) or 0)


def test_a_cookie_replayed_after_sign_out_is_signed_out(client: TestClient, tokens: Tokens,
                                                        seeded: Seeded,
                                                        engine: Engine) -> None:
    csrf = sign_in(client, tokens.admin)
    saved = client.cookies[SESSION_COOKIE]
    assert _sessions(engine) == 1
    done = client.post("/ui/signout", data={"csrf_token": csrf}, follow_redirects=False)
    assert done.status_code == 303
    assert _sessions(engine) == 0

    replay = TestClient(client.app)
    replay.cookies.set(SESSION_COOKIE, saved)
    page = replay.get("/ui/models", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/ui/signin?next=")
    adapter_id = seeded.direct["id"]
    moved = replay.post(f"/ui/adapters/{adapter_id}/aliases",
                        data={"csrf_token": csrf, "alias": "prod"})
    assert moved.status_code == 403
    assert "SignInRequired" in moved.text
    polled = replay.get("/ui/jobs/progress?ids=1")
    assert polled.status_code == 401
    assert polled.json()["error"] == "SignInRequired"
    aliases = client.get(f"/adapters/{adapter_id}", headers=tokens.read).json()["aliases"]
    assert "prod" not in aliases


def test_signing_out_ends_only_that_session(client: TestClient, tokens: Tokens) -> None:
    csrf = sign_in(client, tokens.read)
    other = TestClient(client.app)
    sign_in(other, tokens.read)  # the same token, another browser
    assert client.post("/ui/signout", data={"csrf_token": csrf},
                       follow_redirects=False).status_code == 303
    assert other.get("/ui/models", follow_redirects=False).status_code == 200


def test_the_progress_poll_answers_json_for_a_dead_session(client: TestClient) -> None:
    absent = client.get("/ui/jobs/progress?ids=1", follow_redirects=False)
    assert absent.status_code == 401
    assert absent.headers["content-type"].startswith("application/json")
    assert absent.json()["error"] == "SignInRequired"
    assert "www-authenticate" not in absent.headers  # the cure is the sign-in page
    client.cookies.set(SESSION_COOKIE, "forged.cookie")
    assert client.get("/ui/jobs/progress?ids=1").json()["error"] == "SignInRequired"


@pytest.mark.parametrize(("ids", "error"), [
    ("1,x", "InvalidRequest"), ("0", "InvalidRequest"), ("1,,2", "InvalidRequest"),
    ("\u00b2", "InvalidRequest"), ("99999999999999999999", "InvalidRequest"),
    (",".join(str(i) for i in range(1, 102)), "TooManyJobs"),
    ("1" * 2001, "ValidationError"),
])
def test_the_progress_poll_answers_json_for_bad_ids(client: TestClient, tokens: Tokens,
                                                    ids: str, error: str) -> None:
    sign_in(client, tokens.read)
    bad = client.get("/ui/jobs/progress", params={"ids": ids})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/json")
    assert bad.json()["error"] == error
    assert client.get("/ui/jobs/progress", params={"ids": "1, 2"}).json() == {"jobs": []}
