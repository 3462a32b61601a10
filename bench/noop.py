"""Bare Celery, for comparison with the publish pipeline.

`celery -A bench.noop worker` runs a no-op task under the publisher's own Celery settings
(acks_late, reject on worker lost, prefetch multiplier, visibility timeout, ETA task limit,
time limits, events), so the two throughputs differ only by what the pipeline does per post.
`celery -A bench.noop:naive_app worker` is the naive design instead: one ETA task per future
post, held by the worker until it is due, with the ETA task limit off.

The broker is BENCH_BROKER_URL if set, else the deployment's REDIS_URL.
"""

from __future__ import annotations

import os
import time
from typing import Final

import redis
from celery import Celery
from kombu import Exchange, Queue

from shared.kit.settings import get_settings
from worker.celery_app import app as publisher_app

NOOP_QUEUE: Final = "bench_noop"
NOOP_TASK: Final = "bench.noop"
NAIVE_QUEUE: Final = "bench_naive"
NAIVE_TASK: Final = "bench.naive_publish"
# Where each no-op run appends its wall-clock time, so the run can be timed from outside.
DONE_KEY: Final = "bench:noop:done"

# Everything in worker/celery_app.py that shapes how a worker takes, holds and acks messages.
COPIED_SETTINGS: Final = (
    "enable_utc",
    "timezone",
    "task_serializer",
    "accept_content",
    "task_ignore_result",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "broker_transport_options",
    "worker_eta_task_limit",
    "task_time_limit",
    "task_soft_time_limit",
    "broker_connection_retry_on_startup",
    "worker_send_task_events",
    "task_send_sent_event",
)


def broker_url() -> str:
    return os.environ.get("BENCH_BROKER_URL") or get_settings().redis_url


def make_app(name: str, url: str, queue: str, *, eta_task_limit: bool = True) -> Celery:
    """A Celery app with the publisher's worker settings, routing everything to `queue`."""
    app = Celery(name, broker=url)
    app.conf.update({key: publisher_app.conf[key] for key in COPIED_SETTINGS})
    app.conf.update(
        task_default_queue=queue,
        task_queues=[Queue(queue, Exchange(queue, type="direct"), routing_key=queue)],
        result_backend=None,
    )
    if not eta_task_limit:
        # The naive design holds every future post in worker memory: nothing may cap it.
        app.conf.worker_eta_task_limit = None
    return app


app = make_app("bench-noop", broker_url(), NOOP_QUEUE)
naive_app = make_app("bench-naive", broker_url(), NAIVE_QUEUE, eta_task_limit=False)

_recorder: redis.Redis | None = None


def _record(at: float) -> None:
    global _recorder  # noqa: PLW0603 - one client per pool process, made after the fork
    if _recorder is None:
        _recorder = redis.Redis.from_url(broker_url())
    _recorder.rpush(DONE_KEY, repr(at))


@app.task(name=NOOP_TASK)
def noop(post_id: str, token: int) -> None:
    """Takes the publish task's arguments and does nothing but note when it ran."""
    _record(time.time())


@naive_app.task(name=NAIVE_TASK)
def naive_publish(post_id: str, token: int) -> None:
    """Would publish one post; in the benchmark its ETA is days away, so it never runs."""
