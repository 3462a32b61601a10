"""The worker's Celery app: the shared sending configuration (shared/publishing/tasks.py)
plus what only workers and beat need, read from settings when the app is first configured,
not at import."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
)
from kombu import Exchange, Queue

from shared.kit import logs
from shared.kit.db import init_engine
from shared.kit.settings import Settings, get_settings
from shared.publishing.tasks import (
    CONTROL_QUEUE,
    PUBLISH_QUEUE,
    TASK_SOFT_TIME_LIMIT_S,
    TASK_TIME_LIMIT_S,
    WEBHOOK_QUEUE,
    TaskName,
    celery_conf,
)


def worker_conf(settings: Settings) -> dict[str, Any]:
    """The sending configuration, and how a worker takes, holds and acks messages."""
    return {
        **celery_conf(settings),
        # At-least-once: a message is acked only after the task body ran, and a worker killed
        # mid-task hands its message back. The fencing token makes the second delivery
        # harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # ETA messages held in worker memory are bounded: the dispatcher only sends those due
        # within the horizon, and this caps what a burst can pile up in one worker.
        "worker_eta_task_limit": 10_000,
        "task_time_limit": TASK_TIME_LIMIT_S,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT_S,
        # Flower: events from workers too.
        "worker_send_task_events": True,
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (PUBLISH_QUEUE, CONTROL_QUEUE, WEBHOOK_QUEUE)
        ],
        # Any number of beats: only the holder of the ticks' lease sends them (worker/beat.py).
        "beat_scheduler": "worker.beat:LeaderScheduler",
        "beat_schedule": {
            "dispatch-due": {
                "task": TaskName.DISPATCH_DUE,
                "schedule": settings.dispatch_interval_s,
                # A tick that waited behind others is worthless: the next one does its work.
                "options": {"expires": max(5.0, settings.dispatch_interval_s * 5)},
            },
            "reap-expired": {
                "task": TaskName.REAP,
                "schedule": settings.reap_interval_s,
                "options": {"expires": max(5.0, settings.reap_interval_s * 5)},
            },
        },
    }


app = Celery("publisher", include=["worker.tasks"])
# A promise: evaluated the first time the configuration is read, not when this is imported.
app.add_defaults(lambda: worker_conf(get_settings()))


@worker_process_init.connect
def _init_worker_process(**_: Any) -> None:
    # Each prefork child gets its own engine; connections are never shared across a fork.
    init_engine("publisher.worker", pool_size=2)


@worker_process_shutdown.connect
def _forget_worker_process(**_: Any) -> None:
    # A dead child's live gauges must not be summed in any more (multiprocess metrics).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


@setup_logging.connect
def _json_logs(**_: Any) -> None:
    # Connecting here stops Celery from installing its own handlers: JSON lines instead.
    logs.configure(os.environ.get("PUBLISHER_ROLE", "worker"))


@task_prerun.connect
def _task_context(task_id: str | None = None, **_: Any) -> None:
    logs.task_id.set(task_id)


@task_postrun.connect
def _task_context_done(**_: Any) -> None:
    logs.task_id.set(None)
