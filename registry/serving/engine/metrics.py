"""`/metrics` of the engine, in the Prometheus text format, on a registry of its own.

Requests by route and status; and read at scrape time: tokens generated, decode steps,
requests running and waiting, resident tenants and their bytes, tenant loads and
evictions. Routes are counted by path for the engine's own routes only (the label set
stays bounded); anything else is `<other>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from registry.serving.engine.engine import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTES = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/models", "/metrics"})


class EngineMetrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("deltahub_engine_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.registry.register(_EngineState(engine))

    def count(self, path: str, status: int) -> None:
        self.requests.labels(path if path in ROUTES else "<other>", str(status)).inc()

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)


class _EngineState(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        scheduler, store = self.engine.scheduler, self.engine.store
        yield CounterMetricFamily("deltahub_engine_generated_tokens", "tokens generated",
                                  value=scheduler.tokens_generated)
        yield CounterMetricFamily("deltahub_engine_decode_steps", "forward passes run",
                                  value=scheduler.steps)
        yield GaugeMetricFamily("deltahub_engine_running_requests", "requests in the batch",
                                value=len(scheduler.running))
        yield GaugeMetricFamily("deltahub_engine_waiting_requests", "requests queued",
                                value=len(scheduler.waiting))
        yield GaugeMetricFamily("deltahub_engine_resident_tenants",
                                "fine-tunes loaded beside the base",
                                value=len(store.resident()))
        yield GaugeMetricFamily("deltahub_engine_tenant_bytes",
                                "bytes the resident fine-tunes hold (signs, α, full tensors)",
                                value=store.resident_bytes())
        yield GaugeMetricFamily("deltahub_engine_base_bytes", "bytes of the base's weights",
                                value=self.engine.model.base_bytes())
        yield CounterMetricFamily("deltahub_engine_tenant_loads", "fine-tunes loaded",
                                  value=store.stats.loads)
        yield CounterMetricFamily("deltahub_engine_tenant_evictions",
                                  "fine-tunes evicted to make room", value=store.stats.evictions)
