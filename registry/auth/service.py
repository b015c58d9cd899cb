"""Token rules: creation, verification, revocation, and the first admin token."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from registry.auth.repository import TokenRepository
from registry.auth.tokens import (
    Scope,
    display_prefix,
    grants,
    hash_secret,
    new_secret,
    parse_scopes,
)
from registry.errors import (
    Forbidden,
    InvalidRequest,
    LastAdminToken,
    TokenNotFound,
    Unauthorized,
)
from registry.events.outbox import newest_change, record_event
from registry.events.payloads import token_data
from registry.events.schemas import EventType
from registry.names import check_name
from registry.tables import Token, utcnow

T = TypeVar("T", bound=Any)


@dataclass(frozen=True)
class IssuedToken:
    token: Token
    secret: str  # shown once, never stored


def create_token(session: Session, name: str, scopes: Iterable[str]) -> IssuedToken:
    check_name(name, "token name")
    try:
        parsed = parse_scopes(scopes)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    secret = new_secret()
    token = Token(name=name, token_hash=hash_secret(secret), prefix=display_prefix(secret),
                  scopes=[s.value for s in parsed])
    TokenRepository(session).add(token)
    return IssuedToken(token, secret)


def bootstrap_admin(session: Session) -> IssuedToken | None:
    """Create the first admin token if the registry has no token at all."""
    if TokenRepository(session).count():
        return None
    return create_token(session, "bootstrap-admin", [Scope.ADMIN.value])


def authenticate(session: Session, authorization: str | None, needed: Scope) -> Token:
    return _checked(TokenRepository(session).by_hash(_secret_hash(authorization)), needed)


def authenticate_at_change(session: Session, authorization: str | None,
                           needed: Scope) -> int:
    """`authenticate` for a read route, and the registry's newest change id, read in the
    same statement: a conditional GET's token check and its version cost one round
    trip."""
    grant = TokenRepository(session).grant_with(_secret_hash(authorization), newest_change())
    _checked(grant, needed)
    assert grant is not None  # _checked refuses a missing token
    return int(grant.value or 0)


def _secret_hash(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized(
            "missing token: send 'Authorization: Bearer <token>' (create one with "
            "`deltahub token create --scopes read,push`)"
        )
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    return hash_secret(secret.strip())


def _checked(token: T | None, needed: Scope) -> T:  # a Token, or a row of its columns
    if token is None or token.revoked_at is not None:
        raise Unauthorized("invalid or revoked token; ask an admin for a new one")
    if not grants(token.scopes, needed):
        raise Forbidden(
            f"this token has scopes {', '.join(sorted(token.scopes))} but this action needs "
            f"{needed.value!r}; use a token with that scope"
        )
    return token


def check_not_revoked(session: Session, token_id: int) -> None:
    """For long requests: the token that started one must still be valid at its end."""
    token = TokenRepository(session).by_id(token_id)
    if token is None or token.revoked_at is not None:
        raise Unauthorized("the token was revoked while the request ran; nothing was "
                           "recorded; ask an admin for a new one")


def revoke_token(session: Session, token_id: int) -> Token:
    repo = TokenRepository(session)
    token = repo.by_id(token_id)
    if token is None:
        raise TokenNotFound(f"no token with id {token_id}")
    if token.revoked_at is None:
        if Scope.ADMIN.value in token.scopes and repo.active_admins() <= 1:
            raise LastAdminToken(
                f"token {token_id} is the last active admin token; revoking it would lock "
                "everyone out of administration. Create another admin token first "
                "(POST /tokens with scopes [\"admin\"])")
        token.revoked_at = utcnow()
        record_event(session, EventType.TOKEN_REVOKED, token_data(token))
    return token


def list_tokens(session: Session) -> list[Token]:
    return TokenRepository(session).all()
