from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.tables import Token


class TokenRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, token: Token) -> Token:
        self.session.add(token)
        self.session.flush()
        return token

    def by_hash(self, token_hash: str) -> Token | None:
        return self.session.scalars(select(Token).where(Token.token_hash == token_hash)).first()

    def by_id(self, token_id: int) -> Token | None:
        return self.session.get(Token, token_id)

    def all(self) -> list[Token]:
        return list(self.session.scalars(select(Token).order_by(Token.id)))

    def count(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(Token)) or 0)
