"""`/metrics` in the Prometheus text format: HTTP traffic, uploads, storage errors, jobs.

One `CollectorRegistry` per app; label values never come from client text (route
templates, `<unmatched>`, method `other`); jobs are counted in the database at scrape
time because workers are other processes. docs/architecture.md, "Web pages and metrics".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.auth.service import authenticate
from registry.auth.tokens import Scope as TokenScope
from registry.infra.database import Database
from registry.jobs.repository import JobRepository
from registry.settings import Settings
from registry.tables import CompressMethod, JobStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "<unmatched>"
OTHER_METHOD = "other"
# RFC 9110's methods plus PATCH; anything else (a server accepts any token) is `other`.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                           "TRACE", "CONNECT"})
# Error bodies are small JSON objects; anything longer is not read for its name.
_MAX_ERROR_BODY = 64 * 1024
# `PUT /models/{model}/files/{filename:path}`, `PUT /adapters/{ref}/files/...`
_UPLOAD_SUFFIX = "/files/{filename:path}"
# Seconds: compression jobs run from seconds (tiny models) to hours (70B).
JOB_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """One app's instruments, in its own registry."""

    def __init__(self, database: Database) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("deltahub_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("deltahub_http_request_duration_seconds",
                                 "Time to answer an HTTP request (to the last body byte)",
                                 ["method", "route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.upload_bytes = Counter("deltahub_upload_bytes",
                                    "Bytes of files uploaded and stored",
                                    registry=self.registry)
        self.upload_failures = Counter("deltahub_upload_failures",
                                       "File uploads refused or failed, by error name",
                                       ["error"], registry=self.registry)
        self.storage_errors = Counter("deltahub_storage_errors",
                                      "Requests failed by the object store", ["route"],
                                      registry=self.registry)
        self.registry.register(JobsCollector(database))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# -- jobs, counted in the database at scrape time ------------------------------------


@dataclass(frozen=True)
class JobStats:
    by_status: dict[JobStatus, int]
    durations: dict[CompressMethod, list[float]]  # seconds of each finished run


def job_stats(session: Session) -> JobStats:
    repo = JobRepository(session)
    durations: dict[CompressMethod, list[float]] = {m: [] for m in CompressMethod}
    for method, started, finished in repo.finished_runs():
        durations[method].append(max(0.0, (finished - started).total_seconds()))
    return JobStats(repo.counts_by_status(), durations)


class JobsCollector(Collector):
    """Jobs by status (gauge) and run time by method (histogram), read at each scrape."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time; nothing to describe up front

    def collect(self) -> Iterator[Metric]:
        # A scrape runs in a worker thread (see `metrics` below), never on the event loop.
        with self.database.reading() as session:
            stats = job_stats(session)
        gauge = GaugeMetricFamily("deltahub_jobs", "Compression jobs by status",
                                  labels=["status"])
        for status in JobStatus:
            gauge.add_metric([status.value], stats.by_status.get(status, 0))
        yield gauge
        histogram = HistogramMetricFamily(
            "deltahub_job_duration_seconds",
            "Run time of finished compression jobs (succeeded or failed), by method",
            labels=["method"])
        for method, seconds in stats.durations.items():
            buckets = [(_bound(b), float(sum(1 for s in seconds if s <= b)))
                       for b in JOB_BUCKETS]
            buckets.append(("+Inf", float(len(seconds))))
            histogram.add_metric([method.value], buckets, sum_value=sum(seconds))
        yield histogram


def _bound(value: float) -> str:
    return repr(float(value))


# -- HTTP ----------------------------------------------------------------------------


class MetricsMiddleware:
    """Counts every HTTP request by route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = _Seen()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen.received += len(message.get("body", b""))
            return message

        async def watching_send(message: Message) -> None:
            seen.watch(message)
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        finally:
            self._record(scope, seen, time.perf_counter() - started)

    def _record(self, scope: Scope, seen: _Seen, seconds: float) -> None:
        route = route_template(scope)
        method = method_label(scope)
        status = seen.status or 500  # no response started: the server will send a 500
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.latency.labels(method, route).observe(seconds)
        error = seen.error_name()
        if method == "PUT" and route.endswith(_UPLOAD_SUFFIX):
            if status < 400:
                self.metrics.upload_bytes.inc(seen.received)
            else:
                self.metrics.upload_failures.labels(error or f"HTTP{status}").inc()
        if error == "StorageUnavailable":
            self.metrics.storage_errors.labels(route).inc()


class _Seen:
    """What a middleware saw of one exchange: bytes in, the status, an error body."""

    def __init__(self) -> None:
        self.received = 0
        self.status: int | None = None
        self._json = False
        self._body = bytearray()

    def watch(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            headers = dict(message.get("headers", []))
            self._json = headers.get(b"content-type", b"").startswith(b"application/json")
        elif (message["type"] == "http.response.body" and self.status is not None
              and self.status >= 400 and self._json
              and len(self._body) < _MAX_ERROR_BODY):
            self._body += message.get("body", b"")

    def error_name(self) -> str | None:
        if not self._body:
            return None
        try:
            body: Any = json.loads(bytes(self._body))
        except ValueError:
            return None
        name = body.get("error") if isinstance(body, dict) else None
        # Our error names are class names: short identifiers. Anything else is not ours,
        # and must not become a label value.
        if isinstance(name, str) and name.isidentifier() and len(name) <= 64:
            return name
        return None


def method_label(scope: Scope) -> str:
    method = scope.get("method", "GET")
    return method if method in KNOWN_METHODS else OTHER_METHOD


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


# -- the endpoint --------------------------------------------------------------------


def install_metrics(app: FastAPI, settings: Settings, database: Database) -> Metrics:
    metrics = Metrics(database)
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    async def scrape(
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Response:
        if not settings.METRICS_PUBLIC:
            await database.read(
                lambda session: authenticate(session, authorization, TokenScope.READ))
        # The jobs collector queries the database: off the event loop.
        body = await run_in_threadpool(metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE)

    return metrics
