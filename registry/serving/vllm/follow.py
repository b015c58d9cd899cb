"""Moved aliases and deleted versions: the names a server serves, kept in step with the registry.

vLLM asks a resolver about a name once; afterwards the name stays bound to what it
resolved to. So for each name it served, the `Follower` asks the registry again
(`check`); when the name now means another version, or nothing, it brings the new
version into the cache and unloads the name through vLLM's runtime API. The next
request for the name reaches the resolver again and loads the new version under its
own versioned name (rules.served_name), with KV and prefix-cache entries of its own.

`check` is per name, so an event feed can drive it (the name an event mentions) as
well as the poll here (`run`: every name, every DELTAHUB_VLLM_REFRESH_SECONDS).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import httpx

from registry.client import ClientError, ServerUnreachable
from registry.serving.vllm.source import AdapterSource, Resolved

_log = logging.getLogger(__name__)

UNLOAD_TIMEOUT_SECONDS = 30.0

# Unbinds a name in the engine; returns False when the engine does not know it.
Unload = Callable[[str], bool]


class Follower:
    def __init__(self, source: AdapterSource, unload: Unload,
                 log: logging.Logger = _log) -> None:
        self.source = source
        self.unload = unload
        self.log = log
        self._served: dict[str, Resolved] = {}
        self._lock = threading.Lock()

    def serving(self, model: str, resolved: Resolved) -> None:
        """The engine now serves `model` as `resolved` (the one before it is let go)."""
        with self._lock:
            previous = self._served.get(model)
            self._served[model] = resolved
        if previous is not None and previous is not resolved:
            previous.lease.release()

    def names(self) -> list[str]:
        with self._lock:
            return list(self._served)

    def check_all(self) -> None:
        for model in self.names():
            self.check(model)

    def check(self, model: str) -> None:
        """Unload `model` if the registry now gives it another version, or none."""
        with self._lock:
            current = self._served.get(model)
        if current is None:
            return
        try:
            adapter = self.source.client.get_adapter(model)
        except ClientError as exc:
            if exc.status != 404:
                self.log.warning("deltahub: cannot check %r (%s); serving %s until the "
                                 "registry answers", model, exc, current.name)
                return
            adapter = None
        except ServerUnreachable as exc:
            self.log.warning("deltahub: cannot check %r (%s); serving %s until the registry "
                             "answers", model, exc, current.name)
            return
        if adapter is not None and adapter["id"] == current.adapter["id"]:
            return
        if adapter is not None:
            # The next request loads it from the cache rather than waiting for a download.
            ready = self.source.resolve(model)
            if ready is not None:
                ready.lease.release()
        target = "nothing" if adapter is None else f"{adapter['name']}@{adapter['version']}"
        try:
            self.unload(model)
        except (httpx.HTTPError, RuntimeError) as exc:
            self.log.warning("deltahub: %r now means %s, but unloading %s failed (%s); check "
                             "DELTAHUB_VLLM_SERVER_URL and VLLM_API_KEY", model, target,
                             current.name, exc)
            return
        self.log.info("deltahub: %r now means %s; unloaded %s", model, target, current.name)
        self._forget(model, current)

    def run(self, every_seconds: float, stop: threading.Event) -> None:
        while not stop.wait(every_seconds):
            try:
                self.check_all()
            except Exception:  # the thread must outlive any one bad answer
                self.log.exception("deltahub: checking served adapters failed")

    def _forget(self, model: str, resolved: Resolved) -> None:
        # Only the version checked: a request may have resolved the name again meanwhile.
        with self._lock:
            if self._served.get(model) is resolved:
                del self._served[model]
            else:
                return
        resolved.lease.release()


class VllmUnloader:
    """`POST /v1/unload_lora_adapter` on the vLLM server the plugin runs in."""

    def __init__(self, server_url: str, api_key: str | None = None,
                 http: httpx.Client | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.Client(base_url=server_url, headers=headers,
                                         timeout=UNLOAD_TIMEOUT_SECONDS)

    def __call__(self, model: str) -> bool:
        response = self.http.post("/v1/unload_lora_adapter", json={"lora_name": model})
        if response.status_code == httpx.codes.NOT_FOUND:
            return False  # unloaded already (by hand, or never loaded)
        if response.status_code != httpx.codes.OK:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        return True
