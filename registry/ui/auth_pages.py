"""Sign in (paste an API token), sign out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from registry.auth.tokens import Scope, grants
from registry.tables import Token
from registry.ui.access import ViewerDep, write
from registry.ui.render import PageError, page, redirect
from registry.ui.sessions import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    close_session,
    keys,
    open_session,
    token_for_secret,
    viewer_of,
)

router = APIRouter(prefix="/ui", include_in_schema=False)
HOME = "/ui/models"
_MAX_TOKEN_CHARS = 200


def safe_next(target: str | None) -> str:
    """Only a page of ours: never another site (an open redirect) nor a scheme."""
    if (target and target.startswith("/ui") and not target.startswith("/ui/signin")
            and "\\" not in target and "//" not in target):
        return target
    return HOME


def _cookie(response: Response, request: Request, name: str, value: str,
            max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")


def _signin_form(request: Request, next_page: str, error: str | None = None,
                 status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = page(request, "signin.html", None, status=status, next_page=next_page,
                    error=error, signin_csrf=keys(request).csrf_for(nonce))
    _cookie(response, request, SIGNIN_COOKIE, nonce, max_age=3600)
    return response


@router.get("")
async def ui_home() -> RedirectResponse:
    return redirect(HOME)


@router.get("/signin")
async def signin_form(request: Request, next: str | None = None) -> Response:
    if await viewer_of(request) is not None:
        return redirect(safe_next(next))
    return _signin_form(request, safe_next(next))


@router.post("/signin")
async def signin(request: Request, token: Annotated[str, Form()],
                 csrf_token: Annotated[str, Form()] = "",
                 next: Annotated[str, Form()] = HOME) -> Response:
    session_keys = keys(request)
    if not session_keys.csrf_ok(request.cookies.get(SIGNIN_COOKIE), csrf_token):
        raise PageError(403, "CSRFFailed", "the sign-in form expired or did not come from "
                                           "this site; open the sign-in page again")
    secret = token.strip()

    def open_if_allowed(session: Session) -> tuple[Token | None, str | None]:
        found = token_for_secret(session, secret)
        if found is None or not grants(found.scopes, Scope.READ):
            return found, None
        return found, open_session(session, found, session_keys.max_age_s)

    found, session_id = (await write(request, open_if_allowed)
                         if 0 < len(secret) <= _MAX_TOKEN_CHARS else (None, None))
    if found is None:
        return _signin_form(request, safe_next(next), status=401,
                            error="that token is unknown or revoked; paste the whole token "
                                  "(it starts with dh_), or ask an admin for a new one")
    if session_id is None:  # the token lacks `read`
        return _signin_form(request, safe_next(next), status=403,
                            error=f"this token has scopes {', '.join(sorted(found.scopes))}; "
                                  "the pages need one with 'read'")
    response = redirect(safe_next(next))
    _cookie(response, request, SESSION_COOKIE, session_keys.session_cookie(session_id),
            max_age=session_keys.max_age_s)
    response.delete_cookie(SIGNIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/signout")
async def signout(request: Request, viewer: ViewerDep,
                  csrf_token: Annotated[str, Form()] = "") -> Response:
    session_keys, cookie = keys(request), request.cookies.get(SESSION_COOKIE)
    if not session_keys.csrf_ok(cookie, csrf_token):
        raise PageError(403, "CSRFFailed", "this form's security token is missing or does "
                                           "not match your session; reload and try again")
    # Deleting the row ends every copy of this cookie, not just the browser's.
    await write(request, lambda s: close_session(s, cookie, session_keys))
    response = redirect("/ui/signin")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax")
    return response
