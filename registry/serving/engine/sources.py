"""Where the engine's base and adapters come from: the registry over HTTP, or local folders.

The registry source resolves a reference (id, NAME, NAME@VERSION, NAME:ALIAS) to one
immutable version, remembers that resolution for `resolve_ttl_seconds` (so an alias that
moves is followed within that time) and downloads a version's files once into the cache
directory, checked against their sha256.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from registry.client import ClientError, DeltahubClient, ServerUnreachable, sha256_of
from registry.serving.engine.errors import ModelNotFound, RegistryUnavailable, UnsupportedAdapter
from registry.serving.engine.tenants import AdapterRef

BITDELTA = "bitdelta"


class RegistryAdapters:
    def __init__(self, client: DeltahubClient, cache_dir: Path, base_name: str, *,
                 resolve_ttl_seconds: float = 10.0) -> None:
        self.client = client
        self.cache_dir = cache_dir
        self.base_name = base_name
        self.resolve_ttl_seconds = resolve_ttl_seconds
        self._resolved: dict[str, tuple[float, AdapterRef, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def resolve(self, ref: str) -> AdapterRef:
        return self._lookup(ref)[0]

    def fetch(self, adapter: AdapterRef) -> Path:
        _, files = self._lookup(adapter.key)
        return pull_files(self.client, f"/adapters/{adapter.key}", files,
                          self.cache_dir / "adapters" / adapter.key)

    def available(self) -> list[AdapterRef]:
        with _registry_errors(f"adapters of {self.base_name}"):
            return [_ref(a) for a in self.client.list_adapters(base=self.base_name,
                                                              kind=BITDELTA)]

    def _lookup(self, ref: str) -> tuple[AdapterRef, list[dict[str, Any]]]:
        now = time.monotonic()
        with self._lock:
            cached = self._resolved.get(ref)
        if cached is not None and now - cached[0] < self.resolve_ttl_seconds:
            return cached[1], cached[2]
        with _registry_errors(ref):
            adapter = self.client.get_adapter(ref)
        if adapter["kind"] != BITDELTA:
            raise UnsupportedAdapter(f"{ref} is a {adapter['kind']} adapter; the engine serves "
                                     "BitDelta deltas (deltahub compress --method bitdelta)")
        if adapter["base"] != self.base_name:
            raise UnsupportedAdapter(f"{ref} is a delta of {adapter['base']}, this engine serves "
                                     f"{self.base_name}; send it to a replica of that base")
        found = _ref(adapter), list(adapter["files"])
        with self._lock:
            self._resolved[ref] = (now, *found)
            self._resolved[found[0].key] = (now, *found)
        return found


def pull_base(client: DeltahubClient, name: str, cache_dir: Path) -> Path:
    """A registered model's files in `cache_dir/models/<name>`, downloaded where missing."""
    with _registry_errors(name):
        model = client.get_model(name)
    return pull_files(client, f"/models/{model['name']}", model["files"],
                      cache_dir / "models" / model["name"])


def pull_files(client: DeltahubClient, owner: str, files: list[dict[str, Any]],
               dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for file in files:
        path = dest / file["filename"]
        if path.is_file() and sha256_of(path) == file["sha256"]:
            continue
        with _registry_errors(f"{owner}/files/{file['filename']}"):
            client.download(owner, file["filename"], path, file["sha256"])
    return dest


def _ref(adapter: dict[str, Any]) -> AdapterRef:
    return AdapterRef(key=str(adapter["id"]), label=f"{adapter['name']}@{adapter['version']}")


@contextmanager
def _registry_errors(what: str) -> Iterator[None]:
    """The client's failures as the engine's: a 404 is the caller's unknown model."""
    try:
        yield
    except ClientError as exc:
        if exc.status == 404:
            raise ModelNotFound(f"the registry has no adapter or model {what!r}; "
                                "GET /v1/models lists what this engine serves") from exc
        raise RegistryUnavailable(f"the registry could not answer for {what!r}: {exc}") from exc
    except ServerUnreachable as exc:
        raise RegistryUnavailable(f"the registry could not answer for {what!r}: {exc}") from exc


class LocalAdapters:
    """Adapters from folders on disk, by name: for tests, benchmarks and air-gapped runs."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders

    def resolve(self, ref: str) -> AdapterRef:
        if ref not in self.folders:
            raise ModelNotFound(f"no adapter named {ref!r}; GET /v1/models lists them")
        return AdapterRef(key=ref, label=ref)

    def fetch(self, adapter: AdapterRef) -> Path:
        return self.folders[adapter.key]

    def available(self) -> list[AdapterRef]:
        return [AdapterRef(key=name, label=name) for name in self.folders]
