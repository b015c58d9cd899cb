from __future__ import annotations

from pydantic import Field

from registry.infra.schemas import Schema, UTCDateTime
from registry.tables import Token


class TokenCreate(Schema):
    name: str = Field(examples=["ci-support-bot"])
    scopes: list[str] = Field(examples=[["read", "push"]])


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: UTCDateTime
    revoked_at: UTCDateTime | None

    @classmethod
    def of(cls, token: Token) -> TokenOut:
        return cls(id=token.id, name=token.name, prefix=token.prefix, scopes=token.scopes,
                   created_at=token.created_at, revoked_at=token.revoked_at)


class IssuedTokenOut(TokenOut):
    token: str = Field(description="the secret; shown only in this response")
