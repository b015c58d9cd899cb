"""Token administration over HTTP (admin scope)."""

from __future__ import annotations

from fastapi import APIRouter, status

from registry.auth import service
from registry.auth.schemas import IssuedTokenOut, TokenCreate, TokenOut
from registry.deps import AdminToken, SessionDep

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, session: SessionDep, _: AdminToken) -> IssuedTokenOut:
    issued = service.create_token(session, body.name, body.scopes)
    return IssuedTokenOut(**TokenOut.of(issued.token).model_dump(), token=issued.secret)


@router.get("")
def list_tokens(session: SessionDep, _: AdminToken) -> list[TokenOut]:
    return [TokenOut.of(t) for t in service.list_tokens(session)]


@router.delete("/{token_id}")
def revoke_token(token_id: int, session: SessionDep, _: AdminToken) -> TokenOut:
    return TokenOut.of(service.revoke_token(session, token_id))
