"""Prometheus metrics, shared by the API and the workers.

Both run as several processes (uvicorn workers, Celery's prefork children), so when
PROMETHEUS_MULTIPROC_DIR is set every process writes its samples there and whoever serves
/metrics aggregates them (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select

from shared.kit.clock import utcnow
from shared.kit.metrics_dir import MULTIPROC_ENV
from shared.kit.settings import get_settings
from shared.models import PostStatus, ScheduledPost

HTTP_REQUESTS = Counter(
    "publisher_http_requests_total",
    "API requests by route template, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "publisher_http_request_duration_seconds",
    "API request latency by route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CANCELS = Counter(
    "publisher_cancel_total",
    "Cancel outcomes: won (200), lost_to_upload (409, upload started), terminal (409)",
    ["outcome"],
)
PUBLISHES = Counter(
    "publisher_publish_total",
    "Publish task outcomes: published, failed, stale (token moved on), canceled_before_upload,"
    " awaiting_platform, waiting_for_platform",
    ["outcome"],
)
DISPATCH_LAG = Histogram(
    "publisher_dispatch_lag_seconds",
    "scheduledFor to the upload's start",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
LEASES_EXPIRED = Counter(
    "publisher_leases_expired_total",
    "Expired leases taken back by the reaper: requeued, reconcile, failed (attempts exhausted)",
    ["action"],
)
PLATFORM_WAITS = Counter(
    "publisher_platform_waits_total",
    "Posts that waited out a platform outage instead of failing, by where they waited:"
    " queued (before the point of no return) or reconcile (after it)",
    ["phase"],
)
RECONCILIATIONS = Counter(
    "publisher_reconciliations_total",
    "Reconcile outcomes: found, absent_reuploaded, unknown, waiting, exhausted, stale",
    ["result"],
)
POLLS = Counter(
    "publisher_polls_total",
    "Polls of posts a platform completes on its own: pending, published, draft, failed, stale",
    ["result"],
)
PLATFORM_ERRORS = Counter(
    "publisher_platform_errors_total",
    "Platform call errors by kind: transient, ambiguous, permanent",
    ["kind"],
)


class PostStateCollector(Collector):
    """Posts by status and expired leases, read from PostgreSQL at most every `ttl_s`: a
    count over the whole table is not free, and scrapes may come from several servers."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._at = 0.0
        self._cached: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        if time.monotonic() - self._at > self.ttl_s:
            self._cached = self._read()
            self._at = time.monotonic()
        return self._cached

    def _read(self) -> list[Metric]:
        from shared.kit.db import new_session

        by_status = GaugeMetricFamily(
            "publisher_posts", "Scheduled posts by status", labels=["status"]
        )
        expired = GaugeMetricFamily(
            "publisher_expired_leases",
            "Posts in publishing whose lease has expired (a worker died or hangs)",
        )
        try:
            with new_session() as session:
                counts = dict(
                    session.execute(
                        select(ScheduledPost.status, func.count()).group_by(ScheduledPost.status)
                    ).all()
                )
                stuck = session.scalar(
                    select(func.count()).where(
                        ScheduledPost.status == PostStatus.PUBLISHING,
                        ScheduledPost.lease_expires_at < utcnow(),
                    )
                )
        except Exception:
            return []  # the database being down shows in /readyz, not as a scrape error
        for status in PostStatus:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        expired.add_metric([], stuck or 0)
        return [by_status, expired]


class _ThisProcess(Collector):
    """The default registry's samples (single-process mode)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


_served: dict[bool, CollectorRegistry] = {}


def registry(with_post_state: bool = False) -> CollectorRegistry:
    """What /metrics exposes: every process's samples, plus the post-state gauges."""
    reg = _served.get(with_post_state)
    if reg is None:
        reg = CollectorRegistry()
        if os.environ.get(MULTIPROC_ENV):
            multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
        else:
            reg.register(_ThisProcess())
        if with_post_state:
            reg.register(PostStateCollector(get_settings().metrics_post_state_ttl_s))
        _served[with_post_state] = reg
    return reg


WEBHOOK_ATTEMPTS = Counter(
    "publisher_webhook_attempts_total",
    "Webhook delivery attempts: succeeded, retry (failed, another attempt is due), failed "
    "(a 4xx the receiver means), abandoned (the schedule ran out), refused (not a public "
    "address), paused (the endpoint is not enabled)",
    ["result"],
)
WEBHOOK_LAG = Histogram(
    "publisher_webhook_lag_seconds",
    "An event's creation to its delivery's success",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
