"""When a failed request is tried again, and how long to wait first.

Only when trying again cannot do something twice: nothing reached the server, or it
answered 429/503 (any request); or the answer is unknown (a broken connection, 502, 504)
and the request is idempotent (GET, PUT, a POST with an `Idempotency-Key`). Timeouts are
not retried. docs/architecture.md, "The client and the CLI".
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx

NOT_PROCESSED_STATUSES = frozenset({429, 503})
UNKNOWN_OUTCOME_STATUSES = frozenset({502, 504})
# The request never left: safe whatever the method.
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError,)
# The connection broke after the request went out: did the server act on it? Unknown.
BROKEN_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def is_idempotent(request: httpx.Request) -> bool:
    return request.method in ("GET", "HEAD", "PUT") or (
        request.method == "POST" and "Idempotency-Key" in request.headers)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The server's `Retry-After`, in seconds (it may be a number or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` tries, waiting about base, 2·base, 4·base, ... (capped) between them."""

    attempts: int = 4
    base_seconds: float = 0.25
    max_wait_seconds: float = 30.0  # a longer Retry-After is cut to this
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def should_retry_status(self, request: httpx.Request, status: int) -> bool:
        return status in NOT_PROCESSED_STATUSES or (
            status in UNKNOWN_OUTCOME_STATUSES and is_idempotent(request))

    def should_retry_error(self, request: httpx.Request, error: Exception) -> bool:
        return isinstance(error, NOT_SENT_ERRORS) or (
            isinstance(error, BROKEN_ERRORS) and is_idempotent(request))

    def wait(self, attempt: int, retry_after: float | None = None) -> None:
        """Sleep before try number `attempt + 1` (attempt counts from 1)."""
        if retry_after is not None:
            delay = retry_after
        else:
            # Jitter: clients that failed together do not all come back together.
            delay = self.base_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)  # noqa: S311
        self.sleep(min(delay, self.max_wait_seconds))


NO_RETRY = RetryPolicy(attempts=1)
