"""Token administration over HTTP (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from sqlalchemy.orm import Session

from registry.auth import service
from registry.auth.schemas import IssuedTokenOut, TokenCreate, TokenOut
from registry.infra.deps import AdminReader, AdminToken, DatabaseDep
from registry.names import MAX_ID

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_token(body: TokenCreate, db: DatabaseDep, _: AdminToken) -> IssuedTokenOut:
    def create(session: Session) -> IssuedTokenOut:
        issued = service.create_token(session, body.name, body.scopes)
        return IssuedTokenOut(**TokenOut.of(issued.token).model_dump(), token=issued.secret)

    return await db.write(create)


@router.get("", response_model=list[TokenOut])
async def list_tokens(reader: AdminReader) -> Response:
    return await reader.json(lambda session: [TokenOut.of(t) for t in service.list_tokens(session)])


@router.delete("/{token_id}")
async def revoke_token(token_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                       db: DatabaseDep, _: AdminToken) -> TokenOut:
    return await db.write(
        lambda session: TokenOut.of(service.revoke_token(session, token_id)))
