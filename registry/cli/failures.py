"""How a failed command ends: one line on stderr and an exit status a script can test.

Every command runs inside `reported()` (registry/cli/app.py): the failures users meet
(the server refused, could not be reached, a missing extra, no database, a local file
problem) print one line saying what failed, where, and what to do; `--debug` prints the
traceback first. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from registry.cli.console import console, fail

if TYPE_CHECKING:
    from registry.client.errors import ClientError, ServerUnreachable

# The exit statuses, documented in README.md ("Exit status") and `deltahub --help`.
EXIT_OK = 0
EXIT_FAILED = 1  # the server refused the request (4xx), or the work failed
EXIT_USAGE = 2  # a bad command line, or no token (click's own status for usage errors)
EXIT_GATE = 3  # a gate a script asked for: a cancelled job (compress --wait), --max-error
EXIT_NOT_FOUND = 4  # no such model, adapter, job or alias (404)
EXIT_AUTH = 5  # the token is missing, unknown, revoked, or lacks the scope (401, 403)
EXIT_UNAVAILABLE = 6  # the server cannot be reached, did not answer in time, or failed (5xx)
EXIT_NOT_INSTALLED = 7  # the command needs an extra that is not installed
EXIT_NO_DATABASE = 8  # db/token/gc: no database where the settings point, or not migrated

EXIT_STATUS_HELP = "\n".join((
    "Exit status:",
    "0 done · 1 refused by the server (4xx) or failed · 2 usage error",
    "3 a gate you asked for (compress --wait: job cancelled; verify: over --max-error)",
    "4 not found (404) · 5 token refused (401, 403)",
    "6 server unreachable, too slow, or failing (5xx)",
    "7 needs an extra: pip install 'deltahub\\[compress]' (or \\[server]); from a checkout: "
    "pip install -e '.\\[compress]'",
    "8 db/token/gc: no migrated database where the settings point",
))

_SCOPE_HINT = "use a token with that scope"


class CommandFailure(Exception):
    """A failure the CLI itself detects, with its one line and exit status."""

    def __init__(self, what: str, detail: str, exit_code: int) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.detail = detail
        self.exit_code = exit_code


def describe(exc: BaseException) -> tuple[str, str, int] | None:
    """(what failed, detail and what to do, exit status), or None for an unexpected error."""
    # Here, not at the top: `deltahub --help` and the codec commands never load httpx.
    from registry.client.errors import ChecksumMismatch, ClientError, ServerUnreachable

    if isinstance(exc, CommandFailure):
        return exc.what, exc.detail, exc.exit_code
    if isinstance(exc, ClientError):
        return _refusal(exc)
    if isinstance(exc, ServerUnreachable):
        return _unreachable(exc)
    if isinstance(exc, ChecksumMismatch):
        return ("ChecksumMismatch", f"{exc} ({exc.url}); the file changed in transit or on "
                "the server: pull again", EXIT_FAILED)
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return type(exc).__name__, f"{exc.strerror or exc}{where}", EXIT_FAILED
    return _server_side(exc)


def _server_side(exc: BaseException) -> tuple[str, str, int] | None:
    """The server's own refusals and settings errors, met by `db`, `token`, `gc`, `serve`
    (which run the server's code in this process). Looked up by module, not imported:
    a client-only install has neither pydantic-settings nor the server's errors."""
    module = type(exc).__module__
    if module == "registry.errors":
        status = getattr(exc, "status_code", 400)
        code = {404: EXIT_NOT_FOUND, 401: EXIT_AUTH, 403: EXIT_AUTH}.get(status, EXIT_FAILED)
        return getattr(exc, "name", type(exc).__name__), getattr(exc, "detail", str(exc)), code
    if module.startswith("pydantic") and type(exc).__name__ == "ValidationError":
        errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
        parts = [f"DELTAHUB_{'.'.join(str(p) for p in e.get('loc', ())).upper()}: "
                 f"{e.get('msg', 'invalid')}" for e in errors]
        return "InvalidSettings", "; ".join(parts) or str(exc), EXIT_USAGE
    return None


def _refusal(exc: ClientError) -> tuple[str, str, int]:
    from registry.cli.hints import for_cli

    request = f"({exc.method} {exc.url})"
    detail = for_cli(exc.detail)
    if exc.did_you_mean and "did you mean" not in detail.lower():
        detail += f"; did you mean {' or '.join(repr(s) for s in exc.did_you_mean)}?"
    if exc.status in (401, 403):
        hint = ("; check DELTAHUB_TOKEN or --token" if exc.status == 401 else
                f"; {_SCOPE_HINT} (deltahub token create --scopes ...)")
        # The server may say it already: once is enough.
        detail = detail.replace(f"; {_SCOPE_HINT}", "")
        return f"{exc.error} ({exc.status})", f"{detail} {request}{hint}", EXIT_AUTH
    if exc.status == 404:
        return exc.error, f"{detail} {request}", EXIT_NOT_FOUND
    if exc.status == 405:
        return exc.error, (f"this server does not offer {exc.method} here {request}; it may "
                           "be older than this client: upgrade the server"), EXIT_FAILED
    if exc.status >= 500:
        retry = ("; it is overloaded or its storage or database is down: try again later"
                 if exc.status in (502, 503, 504) else
                 "; the server failed: try again, and if it persists see the server's log")
        return f"{exc.error} ({exc.status})", f"{detail} {request}{retry}", EXIT_UNAVAILABLE
    return exc.error, f"{detail} {request}", EXIT_FAILED


def _unreachable(exc: ServerUnreachable) -> tuple[str, str, int]:
    where = f"{exc.method} {exc.url}"
    if exc.timed_out:
        return ("server too slow", f"{exc.reason} ({where}); try again, or wait longer with "
                "DELTAHUB_TIMEOUT_SECONDS", EXIT_UNAVAILABLE)
    if exc.reason.startswith("cannot connect"):
        return ("cannot reach the server", f"{exc.reason} ({where}); is it running? Check "
                "DELTAHUB_URL or --url", EXIT_UNAVAILABLE)
    return ("connection lost", f"{exc.reason} ({where}); try again (a push resumes where it "
            "stopped)", EXIT_UNAVAILABLE)


@contextlib.contextmanager
def reported(debug: bool) -> Iterator[None]:
    """Turn a known failure into its one line and exit status; `debug` adds the traceback."""
    try:
        yield
    except Exception as exc:
        described = describe(exc)
        if described is None:
            raise
        if debug:
            console.print(escape("".join(traceback.format_exception(exc))), end="",
                          highlight=False, soft_wrap=True)
        what, detail, code = described
        raise fail(what, detail, code) from exc
