"""/metrics for webhooks, read from the database at each scrape: deliveries are made by
dispatchers in any process (`deltahub worker`s, embedded ones), so no process's own
counters would see them all.

- `deltahub_webhook_deliveries_total{outcome}`: deliveries by outcome, delivered or
  failed (a counter: it only falls when a webhook and its log are deleted); pending as
  `deltahub_webhook_deliveries_pending`.
- `deltahub_webhook_delivery_latency_seconds`: every delivery attempt that got an answer
  or timed out (retries included), from the delivery log.
- `deltahub_webhook_oldest_undelivered_event_age_seconds`: how far behind the slowest
  enabled webhook is (0 when none is).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from registry.infra.database import Database
from registry.tables import Event, WebhookDelivery, WebhookDeliveryAttempt, utcnow
from registry.webhooks.queue import undelivered_floor

# Seconds: a receiver on the same network answers in milliseconds; the timeout is 15 s.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)


class WebhooksCollector(Collector):
    def __init__(self, database: Database) -> None:
        self.database = database

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time

    def collect(self) -> Iterator[Metric]:
        with self.database.reading() as session:
            counts: dict[str, int] = {status: count for status, count in session.execute(
                select(WebhookDelivery.status, func.count())
                .group_by(WebhookDelivery.status))}
            buckets, total, seconds = _latency(session)
            age = _oldest_undelivered_age(session)
        outcomes = CounterMetricFamily("deltahub_webhook_deliveries",
                                       "Webhook deliveries by outcome", labels=["outcome"])
        for outcome in ("delivered", "failed"):
            outcomes.add_metric([outcome], float(counts.get(outcome, 0)))
        yield outcomes
        yield GaugeMetricFamily("deltahub_webhook_deliveries_pending",
                                "Webhook deliveries not yet made (retries included)",
                                value=float(counts.get("pending", 0)))
        histogram = HistogramMetricFamily(
            "deltahub_webhook_delivery_latency_seconds",
            "Latency of each webhook delivery attempt")
        histogram.add_metric([], [*[(repr(b), float(n)) for b, n in zip(BUCKETS, buckets,
                                                                          strict=True)],
                                  ("+Inf", float(total))], sum_value=seconds)
        yield histogram
        yield GaugeMetricFamily("deltahub_webhook_oldest_undelivered_event_age_seconds",
                                "Age of the oldest event an enabled webhook has not "
                                "delivered yet", value=age)


def _latency(session: Session) -> tuple[list[int], int, float]:
    """Cumulative counts per bucket, the count, and the sum in seconds."""
    ms = WebhookDeliveryAttempt.latency_ms
    columns = [func.sum(case((ms <= b * 1000, 1), else_=0)) for b in BUCKETS]
    row = session.execute(select(*columns, func.count(ms), func.sum(ms))
                          .where(ms.is_not(None))).one()
    return ([int(x or 0) for x in row[:len(BUCKETS)]], int(row[-2] or 0),
            float(row[-1] or 0) / 1000)


def _oldest_undelivered_age(session: Session) -> float:
    floor = undelivered_floor(session)
    if floor is None:
        return 0.0
    oldest = session.scalar(select(Event.created_at).where(Event.id > floor)
                            .order_by(Event.id).limit(1))
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite
        oldest = oldest.replace(tzinfo=utcnow().tzinfo)
    return max(0.0, (utcnow() - oldest).total_seconds())
