"""FastAPI dependencies as `Annotated` aliases; endpoints receive them, never build them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from registry.auth.service import authenticate
from registry.auth.tokens import Scope
from registry.infra.database import Database
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import Token


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(_settings)]
# Endpoints run their SQL through `await db.read(fn)` / `await db.write(fn)`: one
# transaction in one worker thread, committed there before the response is sent
# (registry/infra/database.py says why that matters under load).
DatabaseDep = Annotated[Database, Depends(_database)]
StoreDep = Annotated[BlobStore, Depends(_store)]


class RequireScope:
    """`Depends(RequireScope(Scope.PUSH))`: 401 without a valid token, 403 without the scope."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self, request: Request,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Token:
        # A read transaction of its own: checking a token never takes a write lock, and
        # never holds a transaction open during a streamed upload.
        return await _database(request).read(
            lambda session: authenticate(session, authorization, self.scope))


ReadToken = Annotated[Token, Depends(RequireScope(Scope.READ))]
PushToken = Annotated[Token, Depends(RequireScope(Scope.PUSH))]
AdminToken = Annotated[Token, Depends(RequireScope(Scope.ADMIN))]
