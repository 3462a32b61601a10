"""RabbitMQ as the Celery broker: a stack whose workers, beat and API send and take their
tasks through a private RabbitMQ node (harness/rabbitmq.py), with quorum queues and Celery's
native delayed delivery. The fault tests of tests/test_faults.py that are not about Redis run
here again on it, beside what only RabbitMQ has: a restart that keeps the messages."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from harness.rabbitmq import unavailable
from harness.stack import Stack, wait_until
from shared.kit.db import new_session
from shared.models import Event
from shared.publishing.tasks import CONTROL_QUEUE, PUBLISH_QUEUE, TASK_TIME_LIMIT_S, WEBHOOK_QUEUE
from tests import test_faults as faults
from tests.conftest import STACK_ENV, database_of_its_own
from tests.factories import TenantFixture, at, make_tenant, schedule, upload
from tests.test_faults import _one_post, _rows, _settle

_why_not = unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_why_not is not None, reason=f"RabbitMQ broker tier: {_why_not}"),
]

TASK_QUEUES = (PUBLISH_QUEUE, CONTROL_QUEUE, WEBHOOK_QUEUE)


@pytest.fixture(scope="module")
def rabbit_database(database: str) -> Iterator[str]:
    """A database of this module's own: the session's Redis stack, if a test before this
    module started it, keeps dispatching on the shared one, and must not take these posts.
    This process's engine points at it while the module runs."""
    with database_of_its_own(database, "rabbitmq") as own:
        yield own


@pytest.fixture(scope="module")
def stack(rabbit_database: str) -> Iterator[Stack]:
    """The fault tier's stack (two workers, the webhooks worker, beat, API, sandbox) with
    BROKER_URL on a private RabbitMQ node; overrides the session's Redis stack here."""
    s = Stack(
        database_url=rabbit_database,
        workers=2,
        celery_broker="rabbitmq",
        env_overrides=dict(STACK_ENV),
    )
    try:
        s.start()
    except Exception:
        print(s.logs())
        if s.rabbitmq is not None:
            print(s.rabbitmq.server_log())
        s.stop()
        raise
    yield s
    s.stop()


def _node(stack: Stack) -> Any:
    assert stack.rabbitmq is not None
    return stack.rabbitmq


def _claims(post_id: str) -> list[dict[str, Any]]:
    """The data of each post.claimed event of the post: who claimed it, under which token."""
    with new_session() as session:
        rows = session.scalars(
            select(Event.data)
            .where(Event.subject_id == post_id, Event.type == "post.claimed")
            .order_by(Event.id)
        ).all()
    return [dict(r or {}) for r in rows]


def _claimed_by_task(post_id: str, task_id: str) -> bool:
    """The post was claimed by the worker running task `task_id` (the owner names it)."""
    return any(str(c.get("owner", "")).endswith(f":{task_id}") for c in _claims(post_id))


def _worker_logs(stack: Stack) -> str:
    return "\n".join(p.read_text(errors="replace") for p in stack.logdir.glob("worker*.log"))


def test_task_queues_are_quorum_queues(stack: Stack) -> None:
    """The three task queues are quorum queues, and the delayed-delivery levels too; the
    node runs with a consumer_timeout far above the longest a task holds its message."""
    queues = _node(stack).queues()
    for name in TASK_QUEUES:
        assert queues[name]["type"] == "quorum", (name, queues.get(name))
    delayed = {n: q for n, q in queues.items() if n.startswith("celery_delayed_")}
    assert len(delayed) == 28, sorted(delayed)
    assert {q["type"] for q in delayed.values()} == {"quorum"}
    timeout_ms = _node(stack).consumer_timeout_ms()
    # A message is held unacked from a second before its ETA to the end of its task, which
    # the hard time limit bounds (300 s): RabbitMQ must not close the channel first.
    assert timeout_ms is None or timeout_ms > (TASK_TIME_LIMIT_S + 60) * 1000


def _parked(stack: Stack) -> int:
    """Messages waiting in the delayed-delivery queues."""
    queues = _node(stack).queues()
    return sum(int(q["messages"]) for n, q in queues.items() if n.startswith("celery_delayed_"))


def test_posts_publish_at_their_time_through_delayed_delivery(
    api: httpx.Client, stack: Stack
) -> None:
    """ETA tasks wait in RabbitMQ's delayed-delivery queues, not in a worker, and come out
    at their time: each post is published once, never early."""
    tenant = make_tenant("Delayed", sandbox_url=stack.sandbox_url, extra_accounts=6)
    cid = upload(api, tenant)
    posts = schedule(api, tenant, cid, at(12), tenant.extra_accounts)
    ids = [p["id"] for p in posts]
    rows = wait_until(
        lambda: (r := _rows(ids)) and all(row.dispatched_at for row in r.values()) and r,
        30,
        what="dispatched",
    )
    lead = min(row.scheduled_for - row.dispatched_at for row in rows.values())  # type: ignore[operator]
    if lead > timedelta(seconds=4):
        # Sent well ahead of their time (a loaded machine may dispatch them late): their
        # messages wait in RabbitMQ until then.
        wait_until(
            lambda: _parked(stack) >= len(ids),
            lead.total_seconds() - 2,
            interval=0.2,
            what="the ETA messages in the delayed-delivery queues",
        )
    rows = _settle(stack, ids, timeout=40)
    for pid, row in rows.items():
        assert row.status == "published", (pid, row.status, row.last_error)
        assert row.published_at >= row.scheduled_for  # type: ignore[operator]


def test_cancel_revokes_the_delayed_task(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """A cancel answers 200 and its revoke reaches the workers (the pidbox broadcast): the
    delayed message, when it comes out, is discarded, and nothing is uploaded."""
    post_id = _one_post(api, live_tenant, seconds=5)
    row = wait_until(lambda: (r := _rows([post_id])[post_id]).task_id and r, 30, what="dispatched")
    r = api.request(
        "DELETE",
        f"/v1/scheduled-posts/{post_id}",
        headers=live_tenant.headers,
        json={"reason": "held for legal review"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    discarded = f"Discarding revoked task: publishing.publish[{row.task_id}]"
    wait_until(
        lambda: discarded in _worker_logs(stack),
        30,
        interval=0.25,
        what="the revoked task discarded",
    )
    rows = _settle(stack, [post_id], timeout=5)
    assert rows[post_id].status == "canceled"
    assert stack.ledger()["requests"] == 0


def test_worker_killed_before_its_claim_gets_the_message_back(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """kill -9 of the process running the task before it acked (acks late): RabbitMQ hands
    the same message out again, and the post goes out once."""
    stack.arm(before_claim=60)
    post_id = _one_post(api, live_tenant)
    pid = stack.failpoint_pid("before_claim", post_id)
    task_id = _rows([post_id])[post_id].task_id
    token = _rows([post_id])[post_id].dispatch_version
    stack.arm()
    os.kill(pid, signal.SIGKILL)
    rows = _settle(stack, [post_id], timeout=40)
    assert rows[post_id].status == "published"
    assert task_id is not None

    def ran_again() -> bool:
        # The same message ran again: it claimed the post or, had the post been re-dispatched
        # meanwhile (a new token), it found its own token stale.
        stale = f'"postId":"{post_id}","token":{token}'
        return _claimed_by_task(post_id, task_id) or any(
            "stale task" in line and stale in line for line in _worker_logs(stack).splitlines()
        )

    wait_until(ran_again, 10, what="the killed task's message delivered again")


def test_broker_restarted_keeps_its_messages(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """RabbitMQ stopped and started on its data while tasks run with their messages unacked
    and ETA messages wait in it: the roles reconnect, the running ones are delivered again
    and find their post done (acks late), and every post goes out once, never early, the
    queues still quorum queues."""
    tenant = make_tenant("Restart", sandbox_url=stack.sandbox_url, extra_accounts=8)
    cid = upload(api, tenant)
    stack.arm(before_claim=5)
    soon = schedule(api, tenant, cid, at(1), tenant.extra_accounts[:2])
    later = schedule(api, tenant, cid, at(20), tenant.extra_accounts[2:])
    ids = [p["id"] for p in soon + later]
    wait_until(lambda: all(r.task_id for r in _rows(ids).values()), 30, what="dispatched")
    for post in soon:  # their tasks run, holding their messages unacked
        stack.failpoint_pid("before_claim", post["id"], timeout=60)
    stack.arm()
    # Stopped and started on its data while the later posts' ETA messages wait in it (that
    # they wait there is test_posts_publish_at_their_time_through_delayed_delivery's).
    _node(stack).restart()
    # A node boots in seconds, in a minute or more on a loaded machine.
    rows = _settle(stack, ids, timeout=180)
    assert {r.status for r in rows.values()} == {"published"}
    for pid in ids:
        assert rows[pid].published_at >= rows[pid].scheduled_for  # type: ignore[operator]
    queues = _node(stack).queues()
    assert {queues[name]["type"] for name in TASK_QUEUES} == {"quorum"}


def test_broker_restarted_empty_redeclares_its_quorum_queues(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """After a wipe the workers declare the quorum queues and the delayed-delivery topology
    again on reconnecting, and new posts go out through them."""
    faults.restart_broker_empty(stack)
    queues = wait_until(
        lambda: (q := _node(stack).queues()) and all(n in q for n in TASK_QUEUES) and q,
        90,
        what="the queues declared again",
    )
    assert {queues[name]["type"] for name in TASK_QUEUES} == {"quorum"}
    post_id = _one_post(api, live_tenant, seconds=3)
    rows = _settle(stack, [post_id], timeout=90)
    assert rows[post_id].status == "published"


def test_flower_sees_the_workers_and_tasks(
    api: httpx.Client, stack: Stack, live_tenant: TenantFixture
) -> None:
    """Flower on the amqp broker: the workers answer its inspect calls and the publish task
    shows with its outcome."""
    url = stack.flower_url or stack.start_flower("ops", "s3cret-flower")
    auth = ("ops", "s3cret-flower")
    post_id = _one_post(api, live_tenant)

    def task() -> dict[str, Any] | None:
        tasks = httpx.get(f"{url}/api/tasks", auth=auth, params={"limit": 1000}).json()
        for t in tasks.values():
            if t.get("name") == "publishing.publish" and post_id in str(t.get("args")):
                return t if t.get("state") == "SUCCESS" else None  # type: ignore[no-any-return]
        return None

    found = wait_until(task, 30, what="the task in flower")
    assert found["result"] == "'published'"
    workers = wait_until(
        lambda: httpx.get(f"{url}/api/workers", auth=auth, params={"refresh": 1}).json(),
        30,
        what="workers in flower",
    )
    assert any(name.startswith("worker0@") for name in workers), workers


# The fault tests of tests/test_faults.py that hold on any broker, run again on this one.
test_worker_killed_at_a_protocol_step = faults.test_worker_killed_at_a_protocol_step
test_worker_killed_mid_upload = faults.test_worker_killed_mid_upload
test_broker_restarted_empty = faults.test_broker_restarted_empty
test_task_delivered_twice = faults.test_task_delivered_twice
test_worker_healthcheck = faults.test_worker_healthcheck
