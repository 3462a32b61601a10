"""Sending and revoking publish tasks; called only after the commit that justifies it."""

from __future__ import annotations

from shared.posts import Dispatch, Reconcile
from worker.celery_app import app
from worker.names import PUBLISH_QUEUE, TaskName


def send_publish(dispatch: Dispatch) -> None:
    """Send the post's publish task, due at its `scheduledFor`."""
    app.send_task(
        TaskName.PUBLISH,
        args=[dispatch.post_id, dispatch.token],
        task_id=dispatch.task_id,
        eta=dispatch.eta,
        queue=PUBLISH_QUEUE,
    )


def send_reconcile(job: Reconcile) -> None:
    """Send the task that settles a post whose worker vanished mid-upload."""
    app.send_task(
        TaskName.RECONCILE,
        args=[job.post_id, job.token],
        task_id=job.task_id,
        queue=PUBLISH_QUEUE,
    )


def revoke(task_id: str) -> None:
    """Save a worker a wasted wake-up. Never `terminate=True`: safety is the fencing token's."""
    app.control.revoke(task_id)
