"""Celery tasks: thin wrappers around the publish protocol and the dispatcher."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta

from celery import Task

from shared import posts
from shared.clock import utcnow
from shared.db import transaction
from shared.settings import get_settings
from worker.broker import send_publish
from worker.celery_app import app
from worker.names import TaskName
from worker.publishing import run_publish

log = logging.getLogger("publisher.worker")


@app.task(name=TaskName.PUBLISH, bind=True)
def publish(self: Task[[str, int], str], post_id: str, token: int) -> str:
    """Publish one scheduled post if its fencing token is still current."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.id}"
    return run_publish(post_id, token, owner).value


def dispatch_once() -> int:
    """One dispatcher tick: send an ETA task for each post due within the horizon."""
    settings = get_settings()
    with transaction() as tx:
        due = posts.dispatch_due(
            tx.session,
            now=utcnow(),
            horizon=timedelta(seconds=settings.dispatch_horizon_s),
            grace=timedelta(seconds=settings.redispatch_grace_s),
            limit=settings.dispatch_batch,
        )
        for d in due:
            tx.after_commit(lambda d=d: send_publish(d))  # type: ignore[misc]
    if due:
        log.info("dispatched %d post(s)", len(due))
    return len(due)


@app.task(name=TaskName.DISPATCH_DUE, acks_late=False)
def dispatch_due() -> int:
    """The beat-driven tick; safe to run twice at once (SKIP LOCKED, task ids on rows)."""
    return dispatch_once()
