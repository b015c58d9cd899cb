"""Templates, their filters, and how a page answers: HTML, redirects and error pages.

Jinja2 autoescapes everything: a name, a report field or a job's error detail holding
`<script>` is shown as text. Nothing is marked safe by hand.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from registry.adapters.quality import ERROR_QUANTITIES, finite
from registry.errors import APIError
from registry.ui.serving import serving_rows
from registry.ui.sessions import CSRF_FIELD, Viewer

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")

# Pages must not be framed (clickjacking) nor run scripts from anywhere but ours.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; "
                                "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PageError(Exception):
    """An error a page shows as HTML (an API error met while building it, or our own)."""

    def __init__(self, status: int, name: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.name = name
        self.detail = detail
        self.headers = headers or {}

    @classmethod
    def of(cls, error: APIError) -> PageError:
        return cls(error.status_code, error.name, error.detail, error.headers())


class SignInRequired(Exception):
    """No valid session: the page redirects to the sign-in form."""


def human_bytes(value: int | float | None) -> str:
    if value is None:
        return "–"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"  # unreachable: the loop returns at GB


def human_count(value: int | None) -> str:
    if value is None:
        return "–"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return str(value)


def number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def fixed(value: Any, digits: int = 3) -> str:
    """A figure to `digits` decimals (losses, gain kept), or "–" when there is none."""
    number = finite(value)
    return "–" if number is None else f"{number:.{digits}f}"


def percent(value: Any) -> str:
    number = finite(value)
    return "–" if number is None else f"{100 * number:.1f} %"


def when(moment: datetime | None) -> str:
    """A moment to the second, in UTC, saying so (a naive one is the database's UTC)."""
    if moment is None:
        return "–"
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class PrettyJSON(JSONResponse):
    """JSON indented for a person who follows a page's "JSON" link."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, indent=2, ensure_ascii=False, allow_nan=False).encode()


def json_document(document: object) -> JSONResponse:
    """A raw document as a page links it: pretty-printed, never cached, never sniffed."""
    return PrettyJSON(document, headers={"Cache-Control": "no-store",
                                         "X-Content-Type-Options": "nosniff"})


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)
    env.filters.update(bytes=human_bytes, count=human_count, number=number, fixed=fixed,
                       percent=percent, when=when, query=lambda d: urlencode(
                           {k: v for k, v in d.items() if v not in (None, "")}))
    env.globals["CSRF_FIELD"] = CSRF_FIELD
    env.globals["serving_rows"] = serving_rows  # adapter.html: where it can be served
    env.globals["ERROR_QUANTITIES"] = ERROR_QUANTITIES  # each error's one name and formula
    return env


templates = Jinja2Templates(env=_environment())


def page(request: Request, template: str, viewer: Viewer | None, status: int = 200,
         **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, template, {"viewer": viewer, **context}, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(url: str) -> RedirectResponse:
    # 303: after a POST the browser GETs the new page (no form resubmission on reload).
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, error: PageError, viewer: Viewer | None = None
               ) -> HTMLResponse:
    response = page(request, "error.html", viewer, status=error.status, error=error)
    response.headers.update(error.headers)
    return response
