"""One JSON shape for every error: `{"error": "<Name>", "detail": "..."}`.

Whatever goes wrong, a client gets JSON it can parse, with a status that says whose
problem it is: 4xx for the request, 503 + Retry-After for "busy or down, try again",
and a JSON 500 (logged with its traceback) only for a bug.

A bug's 500 is answered by `InternalErrorMiddleware`, not only by Starlette's handler
for `Exception`: that one re-raises after answering, and uvicorn then closes the
connection, so a client's next request on the same keep-alive connection would fail.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from compress.errors import CodecError
from registry.errors import APIError, DatabaseBusy, StorageUnavailable, from_codec_error
from registry.infra.database import translate_db_error
from registry.infra.deps import UNCHECKED_ACCESS
from registry.settings import Settings
from registry.storage.base import StorageError

log = logging.getLogger("deltahub")

_HTTP_NAMES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound",
               405: "MethodNotAllowed", 413: "PayloadTooLarge"}
# FastAPI's words when `json.loads` of a body fails other than as invalid JSON (which is
# a 422): nesting past Python's recursion limit, or an integer past 4,300 digits.
_UNPARSED_BODY = "There was an error parsing the body"
_UNPARSED_BODY_DETAIL = ("the JSON body could not be parsed: it nests thousands of levels "
                         "deep or holds an integer of over 4,300 digits; send the request's "
                         "documented fields (see /docs), with numbers a 64-bit value holds")


def _error(status: int, name: str, detail: str, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse({"error": name, "detail": detail, **extra}, status_code=status,
                        headers=headers)


def _api_error(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers())


def add_error_handlers(app: FastAPI, settings: Settings) -> None:
    retry_after = settings.RETRY_AFTER_SECONDS

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        # A read route's own refusal of its parameters, raised before its token was
        # checked (in the route's transaction): the token first, as every route does.
        access = getattr(request.state, UNCHECKED_ACCESS, None)
        if access is not None and not access.checked and exc.status_code not in (401, 403):
            try:
                await access.check()
            except APIError as refused:
                return _api_error(refused)
        return _api_error(exc)

    @app.exception_handler(CodecError)
    async def codec_error(_: Request, exc: CodecError) -> JSONResponse:
        return _api_error(from_codec_error(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        access = getattr(request.state, UNCHECKED_ACCESS, None)
        if access is not None:
            try:
                await access.check()
            except APIError as refused:
                return _api_error(refused)
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "ValidationError", "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == _UNPARSED_BODY:
            detail = _UNPARSED_BODY_DETAIL
        return _error(exc.status_code, name, detail, headers=headers)

    @app.exception_handler(StorageError)
    async def storage_error(_: Request, exc: StorageError) -> JSONResponse:
        log.error("storage failure: %s", exc)
        return _api_error(StorageUnavailable(
            f"object storage failed ({exc}); nothing was stored, retry later",
            retry_after_seconds=retry_after))

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(_: Request, exc: PoolTimeout) -> JSONResponse:
        return _api_error(DatabaseBusy(
            f"no database connection came free; retry after {retry_after} s",
            retry_after_seconds=retry_after))

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        translated = translate_db_error(exc, retry_after)
        if isinstance(translated, APIError):
            return _api_error(translated)
        return internal_error_response(request.method, request.url.path, exc)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request: Request, _: ClientDisconnect) -> JSONResponse:
        # A client that went away (Ctrl-C during a push) is no bug: one line, no
        # traceback. Its upload stored nothing, and the push resumes when run again.
        log.info("client disconnected during %s %s; the request was dropped",
                 request.method, request.url.path)
        return _error(400, "ClientDisconnect", "the client disconnected")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Reached only by a bug in a middleware outside InternalErrorMiddleware.
        return internal_error_response(request.method, request.url.path, exc)

    app.add_middleware(InternalErrorMiddleware)


def internal_error_response(method: str, path: str, exc: BaseException) -> JSONResponse:
    # A bug: log everything, show nothing of the server's internals.
    log.exception("unhandled error in %s %s", method, path, exc_info=exc)
    return _error(500, "InternalError",
                  "the server hit an unexpected error; it was logged. Retry, and report "
                  "it if it persists")


class InternalErrorMiddleware:
    """Answers a bug's exception with the JSON 500 and keeps the connection open.

    Only when no response has started: after that the client has part of an answer,
    and the exception goes on up so the server closes the connection (the one honest
    end for a truncated response).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception as exc:
            if started:
                raise
            response = internal_error_response(scope.get("method", ""),
                                               scope.get("path", ""), exc)
            await response(scope, receive, send)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at this path (Starlette names only the first)."""
    path = request.url.path
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return sorted(methods)


def _leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        # FastAPI wraps included routers; their own routes carry the full paths.
        included = getattr(route, "original_router", None)
        yield from _leaf_routes(included.routes) if included is not None else (route,)
