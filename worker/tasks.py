"""Celery tasks: thin wrappers around the publish protocol, the dispatcher and the reaper
(shared/publishing/protocol.py), registered under the names of shared/publishing/tasks.py."""

from __future__ import annotations

import logging
import os
import socket

from celery import Task

from shared.publishing.protocol import (
    dispatch_once,
    reap_once,
    run_poll,
    run_publish,
    run_reconcile,
)
from shared.publishing.tasks import TaskName
from shared.webhooks.deliveries import run_delivery
from worker.celery_app import app

log = logging.getLogger("publisher.worker")


@app.task(name=TaskName.PUBLISH, bind=True)
def publish(self: Task[[str, int], str], post_id: str, token: int) -> str:
    """Publish one scheduled post if its fencing token is still current."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    return run_publish(post_id, token, owner).value


@app.task(name=TaskName.RECONCILE)
def reconcile(post_id: str, token: int) -> str:
    """Settle a post whose worker vanished after its upload started."""
    return run_reconcile(post_id, token).value


@app.task(name=TaskName.POLL)
def poll(post_id: str, token: int) -> str:
    """Ask the platform about a post it accepted and completes on its own."""
    return run_poll(post_id, token).value


@app.task(name=TaskName.DELIVER_WEBHOOK)
def deliver_webhook(delivery_id: str, token: int) -> str:
    """One attempt of a webhook delivery, if its token is still current."""
    return run_delivery(delivery_id, token)


# The ticks send no monitoring events: at one a second they would push the publish tasks
# operators look for out of Flower's bounded memory.
@app.task(name=TaskName.DISPATCH_DUE, acks_late=False, send_events=False)
def dispatch_due() -> int:
    """The beat-driven tick; safe to run twice at once (SKIP LOCKED, task ids on rows)."""
    return dispatch_once()


@app.task(name=TaskName.REAP, acks_late=False, send_events=False)
def reap_expired() -> int:
    """The beat-driven reaper; safe to run twice at once (SKIP LOCKED)."""
    reaped = reap_once()
    return len(reaped.requeued) + len(reaped.reconcile) + len(reaped.failed)
