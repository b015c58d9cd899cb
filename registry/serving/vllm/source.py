"""From a request's model name to adapter files on local disk, or one line saying why not.

`AdapterSource.resolve` asks the registry what the name means now, applies the serving
rules (rules.py), brings the files into the cache (cache.py) and lets the engine check
the downloaded config. Every refusal is one log line and None, never an exception:
vLLM turns None into its 404 and keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.client import ChecksumMismatch, ClientError, DeltahubClient, ServerUnreachable
from registry.serving.vllm.cache import AdapterCache, CachedFile, CacheError, Lease
from registry.serving.vllm.rules import Served, refusal, registry_ref, served_name

# Why the engine cannot load a downloaded adapter directory, or None (vLLM's own check).
Inspect = Callable[[Path], str | None]

_log = logging.getLogger(__name__)


@dataclass
class Resolved:
    """One adapter version, in the cache and held there while served."""

    adapter: dict[str, Any]  # GET /adapters/{ref}
    lease: Lease

    @property
    def name(self) -> str:
        return served_name(self.adapter)

    @property
    def path(self) -> Path:
        return self.lease.path


class AdapterSource:
    def __init__(self, client: DeltahubClient, cache: AdapterCache, served: Served,
                 inspect: Inspect | None = None, log: logging.Logger = _log) -> None:
        self.client = client
        self.cache = cache
        self.served = served
        self.inspect = inspect
        self.log = log

    def resolve(self, model: str) -> Resolved | None:
        """What `model` (`name`, `name@3`, `name:prod`) names now, ready to load."""
        adapter = self.lookup(model)
        if adapter is None:
            return None
        label = f"{model!r} ({served_name(adapter)})"
        if (reason := refusal(adapter, self.served)) is not None:
            self.refuse(label, reason)
            return None
        try:
            lease = self.cache.checkout(adapter["content_digest"], _listing(adapter),
                                        self._fetch(adapter))
        except (CacheError, ChecksumMismatch, ClientError, ServerUnreachable) as exc:
            self.refuse(label, f"its files could not be brought into the cache at "
                               f"{self.cache.root}: {exc}")
            return None
        if self.inspect is not None and (reason := self.inspect(lease.path)) is not None:
            lease.release()
            self.refuse(label, reason)
            return None
        return Resolved(adapter, lease)

    def lookup(self, model: str) -> dict[str, Any] | None:
        """`GET /adapters/{model}`, or None (and the line saying why)."""
        ref = registry_ref(model)
        if ref is None:
            self.refuse(repr(model), "is not an adapter name of the registry (`name`, "
                                     "`name@version` or `name:alias`)")
            return None
        try:
            return self.client.get_adapter(ref)
        except ClientError as exc:
            where = self.client.http.base_url
            if exc.status == 404:
                self.refuse(repr(model), f"the registry at {where} has no such adapter "
                                         f"({exc.detail})")
            else:
                self.refuse(repr(model), f"the registry at {where} refused: {exc}; check "
                                         "DELTAHUB_TOKEN (it needs the read scope)")
        except ServerUnreachable as exc:
            self.refuse(repr(model), f"the registry did not answer ({exc}); check "
                                     "DELTAHUB_URL")
        return None

    def refuse(self, label: str, reason: str) -> None:
        self.log.warning("deltahub: not serving %s: %s", label, reason)

    def _fetch(self, adapter: dict[str, Any]) -> Callable[[CachedFile, Path], None]:
        owner = f"/adapters/{adapter['id']}"

        def fetch(file: CachedFile, dest: Path) -> None:
            self.client.download(owner, file.filename, dest, file.sha256)

        return fetch


def _listing(adapter: dict[str, Any]) -> list[CachedFile]:
    return [CachedFile(f["filename"], f["sha256"], int(f["size"])) for f in adapter["files"]]
