"""What can go wrong talking to a deltahub server, as the client's own exceptions.

Each carries the request (method and URL), so whoever reports it (the CLI, a script)
can say what failed, where, and what to do in one line.
"""

from __future__ import annotations

from collections.abc import Sequence


class ClientError(Exception):
    """The server answered with an error: its status, error name and detail."""

    def __init__(self, status: int, error: str, detail: str, *, method: str = "",
                 url: str = "", did_you_mean: Sequence[str] = ()) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.method = method
        self.url = url
        self.did_you_mean = tuple(did_you_mean)


class ServerUnreachable(Exception):
    """No answer: the connection failed, broke, or the server did not answer in time."""

    def __init__(self, method: str, url: str, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(f"{method} {url}: {reason}")
        self.method = method
        self.url = url
        self.reason = reason
        self.timed_out = timed_out


class ChecksumMismatch(Exception):
    """A downloaded file is not the file the server's listing promised."""

    def __init__(self, filename: str, got: str, expected: str, url: str) -> None:
        super().__init__(f"{filename} arrived with sha256 {got}, expected {expected}")
        self.filename = filename
        self.url = url
