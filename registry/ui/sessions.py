"""Page sessions: a signed cookie naming an API token, and CSRF tokens bound to it.

Signing in is pasting an API token. The cookie does not hold that token: it holds the
token's sha256 (the verifier the database already stores) and the time of sign-in,
signed with HMAC-SHA256 under the server's session key. So:

- a stolen cookie is not an API token: it cannot be sent as `Authorization: Bearer`, and
  it stops working at `SESSION_MAX_AGE_SECONDS` or when the token is revoked (each
  request looks the token up again, as the API does);
- a leaked database (token hashes) does not let anyone forge a cookie without the key;
- there is no session table: nothing to migrate, nothing to clean up.

The cookie is HttpOnly (no script reads it), SameSite=Lax and Path=/ui. Lax rather than
Strict: a link to a page from a chat message or an e-mail then opens it signed in,
and Lax still withholds the cookie from every cross-site POST. Every action is a POST
that also needs a CSRF token, HMAC(key, "csrf" + cookie), so an action needs both the
cookie and a value only our own pages show. Pages (GET) change nothing.

Before sign-in there is no session to bind a CSRF token to: the sign-in form uses a
double-submit token (a random cookie, and its HMAC in the form).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import Session

from registry.auth.repository import TokenRepository
from registry.auth.tokens import Scope, grants, hash_secret
from registry.settings import Settings
from registry.tables import Token

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

    def session_cookie(self, token_secret: str, now: float | None = None) -> str:
        payload = _b64(json.dumps({"h": hash_secret(token_secret.strip()),
                                   "t": int(now if now is not None else time.time())},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._mac('session', payload)}"

    def token_hash(self, cookie: str | None, now: float | None = None) -> str | None:
        """The token hash a cookie names, if we signed it and it has not expired."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 512:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            token_hash, issued = data["h"], data["t"]
        except (ValueError, KeyError, TypeError):
            return None
        current = now if now is not None else time.time()
        if type(issued) is not int or not 0 <= current - issued <= self.max_age_s:
            return None
        return token_hash if isinstance(token_hash, str) else None

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


def signed_in_token(session: Session, token_hash: str) -> Token | None:
    """The live token a session names (None: unknown or revoked)."""
    token = TokenRepository(session).by_hash(token_hash)
    if token is None or token.revoked_at is not None:
        return None
    return token


def token_for_secret(session: Session, secret: str) -> Token | None:
    return signed_in_token(session, hash_secret(secret.strip()))


async def viewer_of(request: Request) -> Viewer | None:
    """The signed-in viewer with at least `read`, or None."""
    cookie = request.cookies.get(SESSION_COOKIE)
    session_keys = keys(request)
    token_hash = session_keys.token_hash(cookie)
    if token_hash is None or cookie is None:
        return None
    token = await request.app.state.database.read(
        lambda session: signed_in_token(session, token_hash))
    if token is None or not grants(token.scopes, Scope.READ):
        return None
    return Viewer(token.id, token.name, tuple(token.scopes), session_keys.csrf_for(cookie))
