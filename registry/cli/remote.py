"""What every command that talks to a server shares: its options and its client.

The server is `DELTAHUB_URL` (default http://127.0.0.1:8000), the token `DELTAHUB_TOKEN`,
and the wait for an answer `DELTAHUB_TIMEOUT_SECONDS` (60), so a CI job pushes with one
line. Failures are reported by registry/cli/failures.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Annotated

import typer

from registry.cli.failures import EXIT_USAGE, CommandFailure
from registry.cli.refs import explain_missing_ref
from registry.client import DEFAULT_TIMEOUT_SECONDS, DEFAULT_URL, ClientError, DeltahubClient

Url = Annotated[str, typer.Option(envvar="DELTAHUB_URL", help="deltahub server")]
Token = Annotated[str | None, typer.Option(envvar="DELTAHUB_TOKEN", show_default=False,
                                           help="API token (or DELTAHUB_TOKEN)")]
Json = Annotated[bool, typer.Option("--json", help="print JSON (for scripts) instead of a "
                                                   "table")]
TIMEOUT_ENV = "DELTAHUB_TIMEOUT_SECONDS"


@contextlib.contextmanager
def connected(url: str, token: str | None) -> Iterator[DeltahubClient]:
    """A client for the command's duration."""
    if not token:
        raise CommandFailure("no token", "set DELTAHUB_TOKEN or pass --token", EXIT_USAGE)
    client = DeltahubClient(url, token, timeout_seconds=_timeout_seconds())
    try:
        yield client
    except ClientError as exc:
        explained = explain_missing_ref(client, exc)
        if explained is exc:
            raise
        raise explained from exc
    finally:
        client.close()


def _timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if value is None:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise CommandFailure(f"bad {TIMEOUT_ENV}", f"{value!r} is not a positive number of "
                             "seconds", EXIT_USAGE)
    return seconds


__all__ = ["DEFAULT_URL", "Json", "Token", "Url", "connected"]
