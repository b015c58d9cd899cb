from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Row, ScalarSelect, Select, bindparam, delete, func, select
from sqlalchemy.orm import Session

from registry.tables import PageSession, Token


class TokenRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, token: Token) -> Token:
        self.session.add(token)
        self.session.flush()
        return token

    def by_hash(self, token_hash: str) -> Token | None:
        return self.session.scalars(select(Token).where(Token.token_hash == token_hash)).first()

    def grant_with(self, token_hash: str, column: ScalarSelect[Any]) -> Row[Any] | None:
        """The token's `id`, `scopes` and `revoked_at` as a plain row (no ORM object: a
        read route's check only looks), and `column` read in the same statement as
        `value`. The statement is built once per `column`."""
        return self.session.execute(_grant_with(column), {"token_hash": token_hash}).first()

    def by_id(self, token_id: int) -> Token | None:
        return self.session.get(Token, token_id)

    def all(self) -> list[Token]:
        return list(self.session.scalars(select(Token).order_by(Token.id)))

    def active_admins(self) -> int:
        # Scopes are a JSON list; the table is small, so count in Python rather than
        # write a JSON query for each dialect. Locked, so two admins revoking each
        # other's tokens at once cannot both succeed.
        rows = self.session.scalars(select(Token).where(Token.revoked_at.is_(None))
                                    .with_for_update())
        return sum(1 for t in rows if "admin" in t.scopes)

    def count(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(Token)) or 0)


class PageSessionRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, page_session: PageSession) -> PageSession:
        self.session.add(page_session)
        self.session.flush()
        return page_session

    def token_of(self, session_id: str) -> Token | None:
        """The token a live page session was signed in with (one primary-key lookup)."""
        return self.session.scalars(
            select(Token).join(PageSession, PageSession.token_id == Token.id)
            .where(PageSession.id == session_id)).first()

    def delete(self, session_id: str) -> None:
        self.session.execute(delete(PageSession).where(PageSession.id == session_id))

    def delete_created_before(self, cutoff: datetime) -> None:
        self.session.execute(delete(PageSession).where(PageSession.created_at < cutoff))


@functools.cache
def _grant_with(column: ScalarSelect[Any]) -> Select[Any]:
    return select(Token.id, Token.scopes, Token.revoked_at, column.label("value")).where(
        Token.token_hash == bindparam("token_hash"))
