"""The registry's tokens, accepted by the engine: a token is good if the registry reads with it.

The engine has no database: it asks the registry (`GET /adapters?limit=1` with the caller's
token, which needs the `read` scope) and remembers a success for `ttl_seconds`, so a revoked
token stops working within that time and a busy engine asks about each token once a while.
"""

from __future__ import annotations

import hashlib
import threading
import time

from registry.client import NO_RETRY, ClientError, DeltahubClient, ServerUnreachable
from registry.serving.engine.errors import RegistryUnavailable, Unauthorized

MAX_REMEMBERED = 4096


class RegistryTokens:
    def __init__(self, url: str, ttl_seconds: float = 60.0) -> None:
        self.url = url
        self.ttl_seconds = ttl_seconds
        self._good: dict[str, float] = {}  # sha256 of a token -> when the registry took it
        self._lock = threading.Lock()

    def check(self, authorization: str | None) -> None:
        """Raise `Unauthorized` unless `authorization` is `Bearer <a token the registry reads
        with>`."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send a deltahub token with the read scope: "
                               "Authorization: Bearer <token>")
        key = hashlib.sha256(token.strip().encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            seen = self._good.get(key)
        if seen is not None and now - seen < self.ttl_seconds:
            return
        client = DeltahubClient(self.url, token.strip(), retry=NO_RETRY, timeout_seconds=10)
        try:
            client.transport.json("GET", "/adapters", params={"limit": 1})
        except ClientError as exc:
            if exc.status in (401, 403):
                raise Unauthorized(f"the registry refused this token ({exc.error}); use one "
                                   "with the read scope (deltahub token create)") from exc
            raise RegistryUnavailable(f"the registry could not check the token: {exc}") from exc
        except ServerUnreachable as exc:
            raise RegistryUnavailable(f"the registry could not check the token: {exc}") from exc
        finally:
            client.close()
        with self._lock:
            if len(self._good) >= MAX_REMEMBERED:
                self._good.clear()
            self._good[key] = now
