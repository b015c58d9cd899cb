"""Moved aliases and deleted versions: the names a server serves, kept in step with the registry.

vLLM asks a resolver about a name once; afterwards the name stays bound to what it
resolved to. So for each name it served, the `Follower` asks the registry again
(`check`); when the name now means another version, or nothing, it brings the new
version into the cache and unloads the name through vLLM's runtime API. The next
request for the name reaches the resolver again and loads the new version under its
own versioned name (rules.served_name), with KV and prefix-cache entries of its own.

`run` follows the registry's event feed (`GET /events?wait=`, long-polled): an alias set
or removed, or a version deleted, checks the served names of that adapter within about
a second. The feed asks by type only, not by name or base: the set of served names
changes between polls, and a cursor moved by a filtered answer would skip the events of
a name added meanwhile (or of an alias moved onto another base). Where the feed cannot
be read (a registry without one, or none answering) it checks every name every
DELTAHUB_VLLM_REFRESH_SECONDS instead, and follows the feed again once it answers.
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
FEED_TYPES = ["alias.set", "alias.removed", "adapter.deleted"]
# Under the registry's cap on a long-poll (DELTAHUB_EVENTS_MAX_WAIT_SECONDS, 30 s).
FEED_WAIT_SECONDS = 25.0
_CURSOR_EXPIRED = 410
_CURSOR_AHEAD = 409  # a registry reset since the cursor was given: start afresh too

# Unbinds a name in the engine; returns False when the engine does not know it.
Unload = Callable[[str], bool]


class Follower:
    def __init__(self, source: AdapterSource, unload: Unload,
                 log: logging.Logger = _log, feed_wait_seconds: float = FEED_WAIT_SECONDS
                 ) -> None:
        self.source = source
        self.unload = unload
        self.log = log
        self.feed_wait_seconds = feed_wait_seconds
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
        """Follow the feed until `stop`; every `every_seconds` while it cannot be read."""
        cursor: int | None = None
        feed_down = False
        while not stop.is_set():
            try:
                if cursor is None:
                    cursor = self._newest_cursor()
                    if feed_down:
                        self.log.info("deltahub: following the registry's event feed again")
                    feed_down = False
                    self.check_all()  # what moved while the feed was not followed
                cursor = self.follow_once(cursor)
            except ClientError as exc:
                if exc.status in (_CURSOR_EXPIRED, _CURSOR_AHEAD):  # pruned or reset: afresh
                    cursor = None
                    continue
                cursor, feed_down = None, self._fell_back(exc, every_seconds, feed_down)
                self._poll(every_seconds, stop)
            except ServerUnreachable as exc:
                cursor, feed_down = None, self._fell_back(exc, every_seconds, feed_down)
                self._poll(every_seconds, stop)
            except Exception:  # the thread must outlive any one bad answer
                self.log.exception("deltahub: following the registry failed")
                cursor = None
                self._poll(every_seconds, stop)

    def follow_once(self, cursor: int) -> int:
        """One long-poll of the feed after `cursor`: check the served names of every
        adapter an event mentions; the cursor to pass next."""
        page = self.source.client.events(cursor, types=FEED_TYPES,
                                         wait_seconds=self.feed_wait_seconds)
        mentioned = {item["data"]["name"] for item in page["items"]}
        if mentioned:
            with self._lock:
                affected = [model for model, resolved in self._served.items()
                            if resolved.adapter["name"] in mentioned]
            for model in affected:
                self.check(model)
        return int(page["cursor"])

    def _newest_cursor(self) -> int:
        # Only what happens from now on matters: what is served was resolved just now.
        cursor = 0
        while True:
            page = self.source.client.events(cursor, types=FEED_TYPES)
            if not page["items"]:
                return int(page["cursor"])
            cursor = int(page["cursor"])

    def _fell_back(self, exc: Exception, every_seconds: float, feed_down: bool) -> bool:
        if not feed_down:
            self.log.warning("deltahub: cannot follow the registry's event feed (%s); "
                             "re-checking served adapters every %g s instead", exc,
                             every_seconds)
        return True

    def _poll(self, every_seconds: float, stop: threading.Event) -> None:
        if stop.wait(every_seconds):
            return
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
