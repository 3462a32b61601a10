"""The publishing tasks as the rest of the system sees them: their names, their queues, and
sending or revoking them by name. Send-only: nothing here loads the worker (its Celery app,
beat schedule or signal handlers), so the API sends tasks without importing `worker/`.

Every send happens after the commit that justifies it (`Tx.after_commit`)."""

from __future__ import annotations

import contextlib
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from celery import Celery
from kombu import Exchange, Queue

from shared.kit.clock import utcnow
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


def is_rabbitmq(broker_url: str) -> bool:
    """True for an AMQP broker URL (RabbitMQ); anything else is Redis."""
    return broker_url.partition("://")[0] in ("amqp", "amqps")


def task_queues(settings: Settings) -> list[Queue]:
    """The three queues as workers consume them and, on RabbitMQ, as senders route to them."""
    if not is_rabbitmq(settings.broker_url):
        return [
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (PUBLISH_QUEUE, CONTROL_QUEUE, WEBHOOK_QUEUE)
        ]
    # Quorum queues: replicated, durable, their messages kept across a broker restart. Topic
    # exchanges, because Celery's delayed delivery re-routes a due message to its queue's
    # exchange through a topic binding, which a direct exchange cannot take.
    return [
        Queue(
            name,
            Exchange(name, type="topic", durable=True),
            routing_key=name,
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        for name in (PUBLISH_QUEUE, CONTROL_QUEUE, WEBHOOK_QUEUE)
    ]


def _rabbitmq_conf(settings: Settings) -> dict[str, Any]:
    return {
        # Senders need the queue declarations too: seeing quorum queues is what makes
        # `send_task` route an ETA message through the delayed-delivery exchanges.
        "task_queues": task_queues(settings),
        # A quorum queue holds an ETA message for nobody: a worker that took it early would
        # hold a prefetch slot until its time, and quorum queues cannot raise a consumer's
        # prefetch (no global QoS). Celery's native delayed delivery parks each message in
        # RabbitMQ (TTL queues of 2^n seconds, dead-lettered level to level, quorum too)
        # until it is due; the worker declares that topology when it starts.
        "broker_native_delayed_delivery_queue_type": "quorum",
        "worker_detect_quorum_queues": True,
        # A send returns once RabbitMQ has the message (publisher confirms), so a send made
        # before a broker restart is either kept or raises and is logged (the dispatcher
        # re-dispatches it).
        "broker_transport_options": {"confirm_publish": True},
    }


def celery_conf(settings: Settings) -> dict[str, Any]:
    """What senders and workers must agree on: the broker, the wire format, the queues."""
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
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
    if is_rabbitmq(settings.broker_url):
        # RabbitMQ has no visibility timeout: an unacked message waits for its consumer's
        # channel to close (or RabbitMQ's consumer_timeout, README "Brokers").
        conf.update(_rabbitmq_conf(settings))
    return conf


_client: Celery | None = None


def client() -> Celery:
    """This process's sender, configured from settings on first use."""
    global _client  # noqa: PLW0603 - one sender per process, like the engine
    if _client is None:
        sender = Celery("publisher")
        sender.add_defaults(lambda: celery_conf(get_settings()))
        _client = sender
    return _client


# RabbitMQ's delayed delivery counts whole seconds, the fraction cut off (the worker holds
# the message for what is left), and Celery refuses a delay of less than one: a message due
# within the second is sent due in one second.
MIN_DELAY: Final = timedelta(seconds=1)


def broker_eta(eta: datetime, broker_url: str, now: datetime) -> datetime:
    """The ETA a message is sent with: on RabbitMQ, one still ahead is at least a second away."""
    if not is_rabbitmq(broker_url) or eta <= now:
        return eta
    return max(eta, now + MIN_DELAY)


def _eta(eta: datetime) -> datetime:
    return broker_eta(eta, client().conf.broker_url, utcnow())


def _send(name: str, job: Dispatch | Reconcile | Poll) -> None:
    client().send_task(
        name,
        args=[job.post_id, job.token],
        task_id=job.task_id,
        eta=_eta(job.eta),
        queue=PUBLISH_QUEUE,
    )


def send_delivery(job: DeliveryJob) -> None:
    """Send the task that makes a webhook delivery's next attempt."""
    client().send_task(
        TaskName.DELIVER_WEBHOOK,
        args=[job.delivery_id, job.token],
        task_id=job.task_id,
        eta=_eta(job.eta),
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
