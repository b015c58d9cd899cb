"""Who may see a page and who may act: the dependencies every page handler receives.

A page (GET) needs a session whose token has `read`; without one it redirects to the
sign-in form (a JSON endpoint that a page's script polls answers a JSON 401 instead).
An action (POST) needs a session, the page's CSRF token in the form, and its own scope
(`compress` to start or cancel a job, `push` to move an alias, `admin` to delete a
version); anything less is a 403 page, never a redirect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from registry import errors
from registry.errors import APIError
from registry.ui.render import PageError, SignInRequired
from registry.ui.sessions import CSRF_FIELD, SESSION_COOKIE, Viewer, keys, viewer_of

T = TypeVar("T")


async def _require_viewer(request: Request) -> Viewer:
    viewer = await viewer_of(request)
    if viewer is None:
        raise SignInRequired
    request.state.viewer = viewer
    return viewer


ViewerDep = Annotated[Viewer, Depends(_require_viewer)]


async def _require_script_viewer(request: Request) -> Viewer:
    # A script cannot follow a redirect to a form: it gets JSON it can act on.
    viewer = await viewer_of(request)
    if viewer is None:
        raise errors.SignInRequired("your session has ended or was never started (signed "
                                    "out, expired, or its token revoked); sign in again at "
                                    "/ui/signin")
    request.state.viewer = viewer
    return viewer


# For JSON endpoints the pages' scripts poll: a dead session is a JSON 401, not a redirect.
ScriptViewerDep = Annotated[Viewer, Depends(_require_script_viewer)]


class RequireAction:
    """`Depends(RequireAction("compress"))`: session, CSRF token and scope, or 403."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, request: Request) -> Viewer:
        form = await request.form()  # parsed once; the handler reads the same form
        given = form.get(CSRF_FIELD)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not keys(request).csrf_ok(cookie, given if isinstance(given, str) else None):
            raise PageError(403, "CSRFFailed",
                            "this form's security token is missing or does not match your "
                            "session; reload the page and submit the form again")
        viewer = await viewer_of(request)
        if viewer is None:
            raise PageError(403, "SignInRequired",
                            "your session has ended or its token was revoked; sign in again")
        request.state.viewer = viewer
        if not viewer.may(self.scope):
            raise PageError(403, "Forbidden",
                            f"this needs a token with the {self.scope!r} scope; yours has "
                            f"{', '.join(sorted(viewer.scopes))}. Sign in with another token")
        return viewer


CompressAction = Annotated[Viewer, Depends(RequireAction("compress"))]
PushAction = Annotated[Viewer, Depends(RequireAction("push"))]
AdminAction = Annotated[Viewer, Depends(RequireAction("admin"))]


async def read(request: Request, work: Callable[[Session], T]) -> T:
    """`work` in a read transaction (registry/infra/database.py); an API error becomes a page."""
    return await _page_turn(request.app.state.database.read, work)


async def write(request: Request, work: Callable[[Session], T]) -> T:
    """`work` in a write transaction; an API error becomes a page."""
    return await _page_turn(request.app.state.database.write, work)


async def _page_turn(turn: Callable[[Callable[[Session], T]], Awaitable[T]],
                     work: Callable[[Session], T]) -> T:
    try:
        return await turn(work)
    except APIError as exc:
        raise PageError.of(exc) from exc
