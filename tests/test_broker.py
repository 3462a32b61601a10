"""The API's and workers' sender under concurrency: revokes and sends from many threads at
once (the API's thread pool), against the real broker; and the broker configuration each
kind of BROKER_URL gets."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from shared.kit.settings import Settings
from shared.publishing import tasks
from worker.celery_app import worker_conf


def test_concurrent_revokes_never_starve_the_broker_pool() -> None:
    """A revoke broadcast used to take two of the pool's connections, one for the broadcast
    and one for its producer; enough concurrent cancels each holding the first and waiting
    for the second left none free, and every one of them waited forever. 64 threads revoking
    at once, each several times, must all finish."""
    threads_n, rounds = 64, 5
    start = threading.Barrier(threads_n)
    done: list[int] = []

    def revoker(i: int) -> None:
        start.wait(timeout=30)
        for _ in range(rounds):
            tasks.revoke(str(uuid.uuid4()))
        done.append(i)

    threads = [threading.Thread(target=revoker, args=(i,), daemon=True) for i in range(threads_n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert len(done) == threads_n, f"{threads_n - len(done)} threads still waiting on the pool"


def test_broker_url_defaults_to_redis_and_keeps_its_configuration() -> None:
    """No BROKER_URL: Celery runs on REDIS_URL exactly as before (visibility timeout, no
    queue declarations for senders, direct exchanges for workers)."""
    settings = Settings(redis_url="redis://127.0.0.1:6379/3")
    assert settings.broker_url == "redis://127.0.0.1:6379/3"
    conf = tasks.celery_conf(settings)
    assert conf["broker_url"] == settings.redis_url
    assert conf["broker_transport_options"] == {"visibility_timeout": 3600}
    assert "task_queues" not in conf
    assert not any(k.startswith(("broker_native", "worker_detect")) for k in conf)
    for queue in tasks.task_queues(settings):
        assert queue.exchange.type == "direct"
        assert not queue.queue_arguments


def test_amqp_broker_gets_quorum_queues_and_delayed_delivery() -> None:
    settings = Settings(broker_url="amqp://u:p@rabbit:5672/vh")
    assert settings.redis_url.startswith("redis://")  # rate limits stay on Redis
    conf = tasks.celery_conf(settings)
    assert conf["broker_url"] == "amqp://u:p@rabbit:5672/vh"
    assert conf["broker_transport_options"] == {"confirm_publish": True}
    assert conf["broker_native_delayed_delivery_queue_type"] == "quorum"
    queues = {q.name: q for q in conf["task_queues"]}
    assert set(queues) == {tasks.PUBLISH_QUEUE, tasks.CONTROL_QUEUE, tasks.WEBHOOK_QUEUE}
    for queue in queues.values():
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        assert queue.durable
        # Delayed delivery re-routes through a topic binding; a direct exchange cannot take it.
        assert queue.exchange.type == "topic"
    assert worker_conf(settings)["task_queues"] == conf["task_queues"]


def test_a_message_due_within_the_second_is_sent_due_in_one_on_rabbitmq() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rabbit, redis_ = "amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:6379/0"
    soon, later, past = (now + timedelta(seconds=s) for s in (0.4, 1.5, -2))
    assert tasks.broker_eta(soon, rabbit, now) == now + timedelta(seconds=1)
    assert tasks.broker_eta(later, rabbit, now) == later
    assert tasks.broker_eta(past, rabbit, now) == past
    assert tasks.broker_eta(soon, redis_, now) == soon


def test_an_unknown_broker_is_refused() -> None:
    with pytest.raises(ValidationError, match="BROKER_URL"):
        Settings(broker_url="sqs://queue")
