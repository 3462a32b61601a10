"""The publishing tasks as the rest of the system sees them: their names, their queues, and
sending or revoking them by name. Send-only: nothing here loads the worker (its Celery app,
beat schedule or signal handlers), so the API sends tasks without importing `worker/`.

Every send happens after the commit that justifies it (`Tx.after_commit`)."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, Final

from celery import Celery

from shared.kit.settings import Settings, get_settings

if TYPE_CHECKING:
    from shared.publishing.posts import Dispatch, Poll, Reconcile
    from shared.webhooks.deliveries import DeliveryJob


class TaskName:
    """Dotted domain.action, in one place: Flower shows these to operators."""

    PUBLISH: Final = "publishing.publish"
    DISPATCH_DUE: Final = "publishing.dispatch_due"
    RECONCILE: Final = "publishing.reconcile"
    POLL: Final = "publishing.poll"
    REAP: Final = "publishing.reap_expired"
    DELIVER_WEBHOOK: Final = "webhooks.deliver"


PUBLISH_QUEUE: Final = "publishing"
CONTROL_QUEUE: Final = "control"
# Webhook deliveries wait on receivers: a queue (and workers) of their own, so a slow or dead
# receiver never holds a slot a publish or a tick needs.
WEBHOOK_QUEUE: Final = "webhooks"

# The longest a publish task may run: claim, prepare, every platform retry, record.
TASK_TIME_LIMIT_S: Final = 300
TASK_SOFT_TIME_LIMIT_S: Final = 240


def celery_conf(settings: Settings) -> dict[str, Any]:
    """What senders and workers must agree on: the broker, the wire format, the queues."""
    return {
        "broker_url": settings.redis_url,
        "enable_utc": True,
        "timezone": "UTC",
        "task_serializer": "json",
        "accept_content": ["json"],
        # Nothing reads task results: the outcome lives in PostgreSQL.
        "task_ignore_result": True,
        "result_backend": None,
        # Redis redelivers an unacked message after the visibility timeout. It must exceed the
        # dispatch horizon (the longest an ETA message waits) plus the longest task run, or a
        # held ETA message would be delivered a second time while it is still waiting.
        "broker_transport_options": {
            "visibility_timeout": max(
                3600, int(settings.dispatch_horizon_s) + TASK_TIME_LIMIT_S * 2
            ),
        },
        "broker_connection_retry_on_startup": True,
        # Flower: a `task-sent` event from every sender.
        "task_send_sent_event": True,
        "task_default_queue": PUBLISH_QUEUE,
        "task_routes": {
            TaskName.PUBLISH: {"queue": PUBLISH_QUEUE},
            TaskName.RECONCILE: {"queue": PUBLISH_QUEUE},
            TaskName.POLL: {"queue": PUBLISH_QUEUE},
            TaskName.DISPATCH_DUE: {"queue": CONTROL_QUEUE},
            TaskName.REAP: {"queue": CONTROL_QUEUE},
            TaskName.DELIVER_WEBHOOK: {"queue": WEBHOOK_QUEUE},
        },
    }


_client: Celery | None = None


def client() -> Celery:
    """This process's sender, configured from settings on first use."""
    global _client  # noqa: PLW0603 - one sender per process, like the engine
    if _client is None:
        sender = Celery("publisher")
        sender.add_defaults(lambda: celery_conf(get_settings()))
        _client = sender
    return _client


def _send(name: str, job: Dispatch | Reconcile | Poll) -> None:
    client().send_task(
        name, args=[job.post_id, job.token], task_id=job.task_id, eta=job.eta, queue=PUBLISH_QUEUE
    )


def send_delivery(job: DeliveryJob) -> None:
    """Send the task that makes a webhook delivery's next attempt."""
    client().send_task(
        TaskName.DELIVER_WEBHOOK,
        args=[job.delivery_id, job.token],
        task_id=job.task_id,
        eta=job.eta,
        queue=WEBHOOK_QUEUE,
    )


def send_publish(dispatch: Dispatch) -> None:
    """Send the post's publish task, due at its `scheduledFor`."""
    _send(TaskName.PUBLISH, dispatch)


def send_reconcile(job: Reconcile) -> None:
    """Send the task that settles a post whose worker vanished mid-upload."""
    _send(TaskName.RECONCILE, job)


def send_poll(job: Poll) -> None:
    """Send the task that asks the platform about a post it is completing on its own."""
    _send(TaskName.POLL, job)


# A revoke's broadcast takes two connections from the sender's pool (`broker_pool_limit`),
# one for the broadcast and one for its producer, and holds the first while it waits for the
# second. Enough concurrent cancels (the API's thread pool) could each hold one and wait
# forever for another; at most half the pool's size revoking at once leaves every one of
# them its second connection. Built on first use, from the configured limit.
_revoking: threading.BoundedSemaphore | None = None
_revoking_lock = threading.Lock()


def _revoke_slots() -> threading.BoundedSemaphore | contextlib.nullcontext[None]:
    global _revoking  # noqa: PLW0603 - one per process, sized from the sender's pool
    limit = client().conf.broker_pool_limit
    if not limit:  # no limit: no pool to exhaust
        return contextlib.nullcontext()
    with _revoking_lock:
        if _revoking is None:
            _revoking = threading.BoundedSemaphore(max(1, int(limit) // 2))
        return _revoking


def revoke(task_id: str) -> None:
    """Save a worker a wasted wake-up. Never `terminate=True`: safety is the fencing token's."""
    with _revoke_slots():
        client().control.revoke(task_id)
