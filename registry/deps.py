"""FastAPI dependencies as `Annotated` aliases; endpoints receive them, never build them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from registry.auth.service import authenticate
from registry.auth.tokens import Scope
from registry.db import unit_of_work
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import Token


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def _session(request: Request) -> Iterator[Session]:
    """The request's session: commits when the endpoint succeeds, rolls back otherwise."""
    with unit_of_work(_session_factory(request)) as session:
        yield session


def _store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(_settings)]
# scope="function": commit when the endpoint returns, BEFORE the response is sent. With
# the default ("request") the commit runs after the client already has its 201, so a
# client's next request can miss the row, and a failed commit would follow a success.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
# For endpoints that stream large bodies: they run several short transactions of their
# own rather than hold one open (and, on SQLite, the write lock) for the whole upload.
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_session_factory)]
StoreDep = Annotated[BlobStore, Depends(_store)]


class RequireScope:
    """`Depends(RequireScope(Scope.PUSH))`: 401 without a valid token, 403 without the scope."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def __call__(
        self, request: Request,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Token:
        # Its own short transaction, so that the check never holds one open during
        # a streamed upload.
        with unit_of_work(_session_factory(request)) as session:
            return authenticate(session, authorization, self.scope)


ReadToken = Annotated[Token, Depends(RequireScope(Scope.READ))]
PushToken = Annotated[Token, Depends(RequireScope(Scope.PUSH))]
AdminToken = Annotated[Token, Depends(RequireScope(Scope.ADMIN))]
