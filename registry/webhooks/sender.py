"""One delivery attempt: a signed POST to a checked, pinned address, bounded every way.

- The target is resolved and checked at each attempt (registry/webhooks/target.py), and
  the socket connects to that checked address; the Host header and TLS server name are
  the URL's host. Nothing re-resolves the name.
- No redirect is followed: a 3xx is a failed attempt, its Location recorded.
- Connect has its own timeout; the whole attempt has a deadline, enforced by a timer
  that shuts the socket down, so a receiver trickling bytes cannot hold it longer.
- At most WEBHOOK_MAX_RESPONSE_BYTES of the answer are read; the rest is never read.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from registry.settings import Settings
from registry.webhooks.target import Target, TargetRefused, check_target

_EXCERPT_CHARS = 1024  # of the answer, kept in the delivery log
USER_AGENT = "deltahub-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: float
    error: str | None = None
    excerpt: str | None = None
    retry_after_s: float | None = None
    refused: bool = False  # the target was refused before anything was sent

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Network errors, timeouts, 408, 429 and 5xx: a later attempt may fare better."""
        if self.refused:
            return False
        if self.status_code is None:
            return True
        return self.status_code in (408, 429) or self.status_code >= 500


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to `target.address`, whatever the name resolves to now."""

    def __init__(self, target: Target, connect_timeout_s: float) -> None:
        super().__init__(target.host, target.port, timeout=connect_timeout_s)
        self.target = target

    def connect(self) -> None:
        address = self.target.address
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((str(address), self.target.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.target.scheme == "https":
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.target.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def abort(self) -> None:
        """From the deadline timer: end whatever read or write is blocked."""
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def send(url: str, headers: dict[str, str], body: bytes, settings: Settings) -> Outcome:
    """POST `body` to `url`; what happened. Never raises for anything the receiver does."""
    start = time.monotonic()

    def ms() -> float:
        return round((time.monotonic() - start) * 1000, 1)

    try:
        target = check_target(url, settings.WEBHOOK_ALLOW_PRIVATE)
    except TargetRefused as exc:
        return Outcome(None, ms(), f"TargetRefused: {exc}", refused=True)
    conn = _PinnedConnection(target, settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        conn.abort()

    timer = threading.Timer(settings.WEBHOOK_TIMEOUT_SECONDS, expire)
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", target.path, body=body, headers={
            **headers, "Content-Type": "application/json", "User-Agent": USER_AGENT})
        if conn.sock is not None:  # from here on the deadline timer bounds each read
            conn.sock.settimeout(settings.WEBHOOK_TIMEOUT_SECONDS)
        response = conn.getresponse()
        data = response.read(settings.WEBHOOK_MAX_RESPONSE_BYTES)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if timed_out.is_set() or isinstance(exc, TimeoutError):
            return Outcome(None, ms(), f"Timeout: no complete answer within "
                                       f"{settings.WEBHOOK_TIMEOUT_SECONDS:g} s")
        return Outcome(None, ms(), f"{type(exc).__name__}: {exc}"[:500])
    finally:
        timer.cancel()
        conn.close()
    return _answered(response, data, ms())


def _answered(response: http.client.HTTPResponse, data: bytes, latency_ms: float) -> Outcome:
    code = response.status
    excerpt = data[:_EXCERPT_CHARS * 4].decode("utf-8", "replace")[:_EXCERPT_CHARS] or None
    error = None
    if 300 <= code < 400:
        error = (f"Redirect: answered {code} to {response.getheader('Location')!r}; "
                 "redirects are not followed: register the final URL")
    elif not 200 <= code < 300:
        error = f"HTTP {code}"
    return Outcome(code, latency_ms, error, excerpt,
                   retry_after(response.getheader("Retry-After")))


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
