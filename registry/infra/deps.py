"""FastAPI dependencies as `Annotated` aliases; endpoints receive them, never build them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from registry.auth.service import authenticate, authenticate_at_change
from registry.auth.tokens import Scope
from registry.infra.conditional import (
    AnswerCache,
    body_etag,
    changes_etag,
    json_answer,
    matches,
    not_modified,
    serialized,
    tagged_json,
)
from registry.infra.database import Database
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import Token

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
UNCHECKED_ACCESS = "unchecked_access"  # request.state's `Authorized`, see ReadAccess

# `async def`: FastAPI runs a plain `def` dependency in the thread pool, a hand-off per
# request for what is an attribute read.


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _store(request: Request) -> BlobStore:
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
        database: Database = request.app.state.database
        return await database.read(
            lambda session: authenticate(session, authorization, self.scope))


ReadToken = Annotated[Token, Depends(RequireScope(Scope.READ))]
PushToken = Annotated[Token, Depends(RequireScope(Scope.PUSH))]
AdminToken = Annotated[Token, Depends(RequireScope(Scope.ADMIN))]


class Authorized:
    """A read request's token, checked inside the transaction that serves the request.

    One database turn per request instead of two (a turn is a thread hand-off and, on
    PostgreSQL, a transaction), and a revocation committed before the request's
    transaction began refuses it, as a separate check would.
    """

    def __init__(self, request: Request, authorization: str | None, scope: Scope) -> None:
        self.request = request
        self._authorization = authorization
        self._scope = scope
        self._database: Database = request.app.state.database
        # Whether the token passed a check in this request; an error raised before any
        # (the route's own 4xx about its parameters) checks it first (ReadAccess).
        self.checked = False

    async def check(self) -> None:
        """The token check alone (a request refused before its work, see ReadAccess)."""
        await self._database.read(
            lambda session: self._authenticated(authenticate(session, self._authorization,
                                                             self._scope)))

    def _authenticated(self, value: T) -> T:
        self.checked = True
        return value

    async def read(self, work: Callable[[Session], T]) -> T:
        def checked(session: Session) -> T:
            self._authenticated(authenticate(session, self._authorization, self._scope))
            return work(session)

        return await self._database.read(checked)

    async def read_at_change(self, work: Callable[[Session, int], T]) -> T:
        """`read`, with the registry's newest change id (the newest event id) read with the
        token, in the same statement, as `work`'s second argument."""
        def checked(session: Session) -> T:
            return work(session, self._authenticated(authenticate_at_change(
                session, self._authorization, self._scope)))

        return await self._database.read(checked)

    async def json(self, work: Callable[[Session], BaseModel | Sequence[BaseModel]]
                   ) -> Response:
        """`work`'s answer as JSON tagged by its digest; 304 when the client has it."""
        return json_answer(self.request, await self.read(work))

    async def json_of_changes(self, work: Callable[[Session], M],
                              keyed: Callable[[M], bool] | None = None) -> Response:
        """For an answer that only changes with a change that writes an event: tagged by
        the newest event id, read with the token in one statement, so a 304 costs that
        statement and nothing else, and a repeat is served from the answer cache
        (registry/infra/conditional.py).

        `keyed`: whether a given answer is such an answer (a finalized adapter is, a
        draft is not); one that is not is tagged by its digest, and neither kept nor
        answered 304 by the change tag, which it was never given."""
        answers: AnswerCache = self.request.app.state.answers

        def tagged(session: Session, version: int) -> tuple[str, bytes | None]:
            etag = changes_etag(self.request, version)
            if matches(self.request, etag):
                return etag, None
            if (kept := answers.get(etag)) is not None:
                return etag, kept
            answer = work(session)
            content = serialized(answer)
            if keyed is not None and not keyed(answer):
                return body_etag(content), content
            answers.put(etag, content)
            return etag, content

        etag, content = await self.read_at_change(tagged)
        if content is None:
            return not_modified(etag)
        return tagged_json(self.request, content, etag)  # 304 for a digest tag it holds


class ReadAccess:
    """`Depends(ReadAccess(Scope.READ))`: the `Authorized` of a read route. Checks
    nothing by itself; the route's `read`/`json` does, in its own transaction."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self, request: Request,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Authorized:
        access = Authorized(request, authorization, self.scope)
        # A request whose parameters fail validation never reaches the route, where the
        # token is checked: the 422 handler checks it first (registry/infra/
        # error_handlers.py), so a caller without a valid token learns that, as on every
        # other route, and nothing about the route's parameters.
        setattr(request.state, UNCHECKED_ACCESS, access)
        return access


Reader = Annotated[Authorized, Depends(ReadAccess(Scope.READ))]
AdminReader = Annotated[Authorized, Depends(ReadAccess(Scope.ADMIN))]
