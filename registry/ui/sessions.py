"""Page sessions: a signed cookie naming a `page_sessions` row, and CSRF tokens bound to it.

A cookie is not an API token, ends with its session (sign-out deletes the row), its
token or `SESSION_MAX_AGE_SECONDS`, and cannot be forged from a leaked database without
the key. Why each cookie flag and token is so: docs/architecture.md, "Web pages and
metrics", Sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request
from sqlalchemy.orm import Session

from registry.auth.repository import PageSessionRepository, TokenRepository
from registry.auth.tokens import Scope, grants, hash_secret
from registry.settings import Settings
from registry.tables import PageSession, Token, utcnow

SESSION_COOKIE = "deltahub_session"
SIGNIN_COOKIE = "deltahub_signin"
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page: the token signed in with, and the page's CSRF token."""

    token_id: int
    name: str
    scopes: tuple[str, ...]
    csrf: str

    def may(self, scope: str) -> bool:
        return grants(self.scopes, Scope(scope))


class SessionKeys:
    """The key that signs session cookies and CSRF tokens."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.SESSION_SECRET
        self.key = secret.encode() if secret else secrets.token_bytes(32)
        self.max_age_s = settings.SESSION_MAX_AGE_SECONDS

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self.key, f"{purpose}\x00{value}".encode(), hashlib.sha256)
        return _b64(digest.digest())

    def session_cookie(self, session_id: str, now: float | None = None) -> str:
        payload = _b64(json.dumps({"s": session_id,
                                   "t": int(now if now is not None else time.time())},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._mac('session', payload)}"

    def session_id(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session id a cookie names, if we signed it and it has not expired."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 512:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session_id, issued = data["s"], data["t"]
        except (ValueError, KeyError, TypeError):
            return None
        current = now if now is not None else time.time()
        if type(issued) is not int or not 0 <= current - issued <= self.max_age_s:
            return None
        return session_id if isinstance(session_id, str) else None

    def csrf_for(self, cookie: str) -> str:
        return self._mac("csrf", cookie)

    def csrf_ok(self, cookie: str | None, given: str | None) -> bool:
        if not cookie or not given:
            return False
        return hmac.compare_digest(given, self.csrf_for(cookie))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def keys(request: Request) -> SessionKeys:
    found: SessionKeys = request.app.state.ui_keys
    return found


def signed_in_token(session: Session, session_id: str) -> Token | None:
    """The live token a page session was signed in with (None: signed out or revoked)."""
    return _live(PageSessionRepository(session).token_of(session_id))


def token_for_secret(session: Session, secret: str) -> Token | None:
    """The live token an API token's secret names (None: unknown or revoked)."""
    return _live(TokenRepository(session).by_hash(hash_secret(secret.strip())))


def _live(token: Token | None) -> Token | None:
    return token if token is not None and token.revoked_at is None else None


def open_session(session: Session, token: Token, max_age_s: int) -> str:
    """Record a new page session for `token`; its id, for the cookie."""
    sessions = PageSessionRepository(session)
    sessions.delete_created_before(utcnow() - timedelta(seconds=max_age_s))
    return sessions.add(PageSession(id=secrets.token_urlsafe(32), token_id=token.id)).id


def close_session(session: Session, cookie: str | None, session_keys: SessionKeys) -> None:
    """Sign out: the session the cookie names (if any) ends for every copy of it."""
    session_id = session_keys.session_id(cookie)
    if session_id is not None:
        PageSessionRepository(session).delete(session_id)


async def viewer_of(request: Request) -> Viewer | None:
    """The signed-in viewer with at least `read`, or None."""
    cookie = request.cookies.get(SESSION_COOKIE)
    session_keys = keys(request)
    session_id = session_keys.session_id(cookie)
    if session_id is None or cookie is None:
        return None
    token = await request.app.state.database.read(
        lambda session: signed_in_token(session, session_id))
    if token is None or not grants(token.scopes, Scope.READ):
        return None
    return Viewer(token.id, token.name, tuple(token.scopes), session_keys.csrf_for(cookie))
