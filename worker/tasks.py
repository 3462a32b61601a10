"""Celery tasks: thin wrappers around the publish protocol, the dispatcher and the reaper."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from functools import partial

from celery import Task

from shared import metrics, posts
from shared.clock import utcnow
from shared.db import Tx, run_in_transaction
from shared.settings import get_settings
from worker.broker import send_publish, send_reconcile
from worker.celery_app import app
from worker.names import TaskName
from worker.publishing import run_publish, run_reconcile

log = logging.getLogger("publisher.worker")


@app.task(name=TaskName.PUBLISH, bind=True)
def publish(self: Task[[str, int], str], post_id: str, token: int) -> str:
    """Publish one scheduled post if its fencing token is still current."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    outcome = run_publish(post_id, token, owner)
    metrics.PUBLISHES.labels(outcome.value).inc()
    return outcome.value


@app.task(name=TaskName.RECONCILE)
def reconcile(post_id: str, token: int) -> str:
    """Settle a post whose worker vanished after its upload started."""
    return run_reconcile(post_id, token).value


def dispatch_once() -> int:
    """One dispatcher tick: send an ETA task for each post due within the horizon."""
    settings = get_settings()

    def tick(tx: Tx) -> int:
        due = posts.dispatch_due(
            tx.session,
            now=utcnow(),
            horizon=timedelta(seconds=settings.dispatch_horizon_s),
            grace=timedelta(seconds=settings.redispatch_grace_s),
            limit=settings.dispatch_batch,
        )
        for d in due:
            tx.after_commit(partial(send_publish, d))
        return len(due)

    sent = run_in_transaction(tick)
    if sent:
        log.info("dispatched %d post(s)", sent)
    return sent


def reap_once() -> posts.Reaped:
    """One reaper pass over expired leases."""
    settings = get_settings()

    def sweep(tx: Tx) -> posts.Reaped:
        reaped = posts.reap_expired(
            tx.session,
            now=utcnow(),
            lease=timedelta(seconds=settings.lease_s),
            max_attempts=settings.max_attempts,
            limit=settings.dispatch_batch,
        )
        for d in reaped.requeued:
            tx.after_commit(partial(send_publish, d))
        for r in reaped.reconcile:
            tx.after_commit(partial(send_reconcile, r))
        return reaped

    reaped = run_in_transaction(sweep)
    counts = {
        "requeued": len(reaped.requeued),
        "reconcile": len(reaped.reconcile),
        "failed": len(reaped.failed),
    }
    for action, count in counts.items():
        if count:
            metrics.LEASES_EXPIRED.labels(action).inc(count)
    if reaped.requeued or reaped.reconcile or reaped.failed:
        log.warning(
            "reaper: %d requeued, %d to reconcile, %d failed (attempts exhausted)",
            len(reaped.requeued),
            len(reaped.reconcile),
            len(reaped.failed),
        )
    return reaped


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
