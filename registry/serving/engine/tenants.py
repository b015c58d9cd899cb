"""Which BitDelta fine-tunes are resident: loaded on first use, evicted least-recently-used.

A tenant occupies one slot of every layer's stacks (layers.py) and counts its bytes there
(packed signs and α of each layer, whatever it compresses) plus its full tensors. Loading
one that would pass `max_tenants` or `memory_budget_bytes` first evicts idle tenants, the
least recently used first; a tenant with requests in flight is pinned (its lease) and never
evicted. When nothing idle is left to evict the request is refused with a 503.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from compress.bitdelta import load_bitdelta
from compress.errors import CodecError
from compress.tensorio import Manifest
from registry.serving.engine.errors import TenantCapacityExhausted, UnsupportedAdapter
from registry.serving.engine.model import EngineModel

BASE_SLOT = 0


@dataclass(frozen=True)
class AdapterRef:
    """An adapter resolved to one immutable version."""

    key: str  # what the version is cached under (the registry's adapter id)
    label: str  # NAME@VERSION, as responses name it


class AdapterSource(Protocol):
    def resolve(self, ref: str) -> AdapterRef: ...

    def fetch(self, adapter: AdapterRef) -> Path: ...

    def available(self) -> list[AdapterRef]: ...


@dataclass
class Tenant:
    adapter: AdapterRef
    slot: int
    nbytes: int
    leases: int = 0
    loaded_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Lease:
    """A request's hold on a slot (the base's, or a tenant's): what it runs with."""

    slot: int
    model: str  # the name the response carries


@dataclass
class StoreStats:
    loads: int = 0
    evictions: int = 0


class TenantStore:
    def __init__(self, model: EngineModel, base_manifest: Manifest, source: AdapterSource,
                 base_name: str, *, max_tenants: int, memory_budget_bytes: int) -> None:
        self.model = model
        self.base_manifest = base_manifest
        self.source = source
        self.base_name = base_name
        self.max_tenants = max_tenants
        self.memory_budget_bytes = memory_budget_bytes
        self.stats = StoreStats()
        self._tenants: OrderedDict[str, Tenant] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # the table above
        self._loading = threading.Lock()  # one load at a time: each reads a whole delta
        self.model_lock = threading.Lock()  # held by a decode step, and to change the stacks

    def resident(self) -> list[Tenant]:
        with self._lock:
            return list(self._tenants.values())

    def resident_bytes(self) -> int:
        with self._lock:
            return sum(t.nbytes for t in self._tenants.values())

    @contextmanager
    def lease(self, model: str) -> Iterator[Lease]:
        """Hold the slot `model` (the base's name or an adapter reference) runs on."""
        held = self.acquire(model)
        try:
            yield held
        finally:
            self.release(held)

    def acquire(self, model: str) -> Lease:
        if model == self.base_name:
            return Lease(BASE_SLOT, self.base_name)
        adapter = self.source.resolve(model)
        with self._lock:
            if (tenant := self._pin(adapter.key)) is not None:
                return Lease(tenant.slot, adapter.label)
        with self._loading:
            with self._lock:  # another request may have loaded it meanwhile
                if (tenant := self._pin(adapter.key)) is not None:
                    return Lease(tenant.slot, adapter.label)
            tenant = self._load(adapter)
        return Lease(tenant.slot, adapter.label)

    def release(self, lease: Lease) -> None:
        if lease.slot == BASE_SLOT:
            return
        with self._lock:
            for tenant in self._tenants.values():
                if tenant.slot == lease.slot:
                    tenant.leases -= 1
                    return

    def _pin(self, key: str) -> Tenant | None:
        tenant = self._tenants.get(key)
        if tenant is not None:
            tenant.leases += 1
            self._tenants.move_to_end(key)
        return tenant

    def _load(self, adapter: AdapterRef) -> Tenant:
        directory = self.source.fetch(adapter)
        try:
            delta = load_bitdelta(directory, self.base_manifest)
        except CodecError as exc:
            raise UnsupportedAdapter(f"{adapter.label} is not a BitDelta delta this engine's "
                                     f"base can serve: {exc}") from exc
        nbytes = self.model.check(delta)
        with self._lock:
            evicted = self._make_room(nbytes, adapter.label)
            slot = self._free_slot()
            tenant = Tenant(adapter, slot, nbytes, leases=1)
            self._tenants[adapter.key] = tenant
        with self.model_lock:
            for old in evicted:
                self.model.clear(old.slot)
            try:
                self.model.grow(slot + 1)
                self.model.install(slot, delta)
            except BaseException:  # e.g. out of memory: leave no half-installed tenant
                self.model.clear(slot)
                with self._lock:
                    del self._tenants[adapter.key]
                raise
        self.stats.loads += 1
        self.stats.evictions += len(evicted)
        return tenant

    def _make_room(self, nbytes: int, label: str) -> list[Tenant]:
        """Evict idle tenants, oldest use first, until one more of `nbytes` fits."""
        if nbytes > self.memory_budget_bytes:
            raise TenantCapacityExhausted(
                f"{label} needs {nbytes:,} bytes, more than the engine's whole tenant memory "
                f"budget ({self.memory_budget_bytes:,}); restart it with a larger "
                "--memory-budget")
        count = len(self._tenants)
        used = sum(t.nbytes for t in self._tenants.values())
        evicted: list[Tenant] = []
        for tenant in self._tenants.values():  # least recently used first
            if count < self.max_tenants and used + nbytes <= self.memory_budget_bytes:
                break
            if tenant.leases == 0:
                evicted.append(tenant)
                count -= 1
                used -= tenant.nbytes
        if count >= self.max_tenants or used + nbytes > self.memory_budget_bytes:
            raise TenantCapacityExhausted(
                f"every resident fine-tune has requests in flight and {label} does not fit "
                f"beside them ({count} of {self.max_tenants} tenants, {used:,} of "
                f"{self.memory_budget_bytes:,} bytes); retry shortly, or add a replica")
        for tenant in evicted:
            del self._tenants[tenant.adapter.key]
        return evicted

    def _free_slot(self) -> int:
        taken = {t.slot for t in self._tenants.values()}
        slot = 1
        while slot in taken:
            slot += 1
        return slot
