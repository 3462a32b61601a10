"""Network partitions: one worker node runs as a test host of its own, in a network namespace
(harness/netns.py), and is cut off from PostgreSQL, Redis or the platform for longer than its
lease, then healed. The rest of the stack (the API, beat, the reaper on the control worker,
another publishing worker) runs outside and keeps working. The invariants are checked as the
fault tier checks them (tests/test_faults.py `_settle`): every post terminal, one ledger entry
per published post and none for any other.

Skipped, with the reason, where namespaces cannot be made (no root, no `ip netns`)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from celery import Celery
from sqlalchemy import select

from harness import netns
from harness.netns import Namespace
from harness.stack import Stack, children_of, wait_until
from shared.kit.db import new_session
from shared.models import Event, ScheduledPost
from tests.conftest import database_of_its_own
from tests.factories import TenantFixture, at, make_tenant, schedule, upload
from tests.test_faults import _held_task_ids, _rows, _settle

pytestmark = pytest.mark.integration

LEASE_S = 5.0
NODE = "worker-partitioned"


@dataclass
class Partitioned:
    """The stack, the namespace its partitioned node runs in, and the platform's address as
    every worker (inside or out) reaches it."""

    stack: Stack
    ns: Namespace
    platform_url: str
    control: Celery

    @property
    def node_pid(self) -> int:
        return self.stack.procs[NODE].pid

    def only_partitioned_consumes(self) -> None:
        """The outside publishing worker stops taking publish tasks: the next post's task
        reaches the partitioned node."""
        self._consumer("cancel_consumer")

    def everyone_consumes(self) -> None:
        self._consumer("add_consumer")

    def _consumer(self, action: str) -> None:
        destination = [f"worker0@{socket.gethostname()}"]
        replies = getattr(self.control.control, action)(
            "publishing", destination=destination, reply=True, timeout=10
        )
        assert replies, f"{action}: no reply from worker0"

    def owned_by_partitioned(self, owner: str | None) -> bool:
        """Whether `owner` (host:pid:task of a publish task) is one of the node's processes."""
        parts = (owner or "").split(":")
        return len(parts) == 3 and int(parts[1]) in children_of(self.node_pid)


@pytest.fixture(scope="module")
def partition_database(database: str) -> Iterator[str]:
    """The tier's own database: the session's stack must not take these posts."""
    with database_of_its_own(database, "partitions") as own:
        yield own


@pytest.fixture(scope="module")
def part(partition_database: str) -> Iterator[Partitioned]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"the partition tier needs network namespaces: {reason}")
    stack = Stack(
        database_url=partition_database,
        workers=1,
        concurrency=2,
        env_overrides={
            "LEASE_S": str(LEASE_S),
            "REDISPATCH_GRACE_S": "3",
            "REAP_INTERVAL_S": "1",
            "PLATFORM_TIMEOUT_S": "3",
            "PLATFORM_BACKOFF_BASE_S": "0.05",
            "PLATFORM_BACKOFF_CAP_S": "0.5",
            "PLATFORM_OUTAGE_RETRY_CAP_S": "2",
            "RATE_LIMIT_MULTIPLIER": "1000000",
            "METRICS_POST_STATE_TTL_S": "0",
        },
    )
    ns: Namespace | None = None
    control: Celery | None = None
    try:
        stack.start()
        # Concurrency 1: while its one process is held in a partition, the node (prefetching
        # one message per process) takes no other task, so what the reaper hands out runs
        # outside.
        ns = stack.start_namespaced_worker(NODE, concurrency=1)
        control = Celery(broker=stack.redis_url)
        yield Partitioned(
            stack, ns, f"http://{ns.address('platform')}:{ns.port('platform')}", control
        )
    except Exception:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        if control is not None:
            control.close()
        if ns is not None:
            ns.close()
            assert ns.name not in netns.leftovers()


@pytest.fixture
def api(part: Partitioned) -> Iterator[httpx.Client]:
    part.stack.reset_sandbox()
    part.stack.arm()
    part.everyone_consumes()
    with httpx.Client(base_url=part.stack.api_url, timeout=30) as c:
        yield c
    for target in netns.TARGETS:
        part.ns.heal(target)
    part.everyone_consumes()


@pytest.fixture
def tenant(part: Partitioned) -> TenantFixture:
    return make_tenant("Partitioned", sandbox_url=part.platform_url, extra_accounts=6)


def _events(post_id: str, kind: str) -> list[Event]:
    with new_session() as session:
        return list(
            session.scalars(
                select(Event)
                .where(Event.subject_id == post_id, Event.type == kind)
                .order_by(Event.id)
            )
        )


def _claimed_by_partitioned(part: Partitioned, post_id: str) -> bool:
    return any(
        part.owned_by_partitioned(str((e.data or {})["owner"]))
        for e in _events(post_id, "post.claimed")
    )


def _node_log(part: Partitioned) -> str:
    return (part.stack.logdir / f"{NODE}.log").read_text(errors="replace")


def _late_records(part: Partitioned, post_id: str) -> int:
    """How many times the partitioned node came back from recording this post published and
    found it recorded already (with a transition of its own, the record would have written)."""
    lines = [line for line in _node_log(part).splitlines() if f'"postId":"{post_id}"' in line]
    assert not any('"transition":"publishing->published"' in line for line in lines), lines
    return sum('"event":"already recorded with this platform post"' in line for line in lines)


def _one_post_for_the_node(part: Partitioned, api: httpx.Client, tenant: TenantFixture) -> str:
    """A post due in a second that only the partitioned node may take: its id."""
    part.only_partitioned_consumes()
    cid = upload(api, tenant)
    (post,) = schedule(api, tenant, cid, at(1), [tenant.extra_accounts[0]])
    return str(post["id"])


def test_cut_from_postgres_after_the_point_of_no_return(
    part: Partitioned, api: httpx.Client, tenant: TenantFixture
) -> None:
    """The partitioned node uploads, and is cut from PostgreSQL before it records. Its lease
    runs out; the reaper (outside) hands the post to a reconcile task, which finds it on the
    platform by key and records it published. Healed, the node's late record lands on a row
    that is no longer `publishing` and writes nothing: one `post.published`, one ledger entry.

    What fences the late record: `posts.record_uploaded`'s guarded UPDATE (`_RECORD_UPLOADED`)
    matches only a `publishing` row, and the row is `published` already; under the row lock
    it then finds the same `external_id` and returns without a write. (The platform's answer
    is the truth whoever holds the lease, so this record carries no token; everything else the
    node could still try is token-fenced: `renew_lease`, `save_handle`, `record_accepted`
    through `_ours`, and `record_failed`'s `dispatch_version != token`, which the reaper's
    `reap_expired` bumped.)"""
    stack, ns = part.stack, part.ns
    stack.arm(after_upload=2)
    post_id = _one_post_for_the_node(part, api, tenant)
    pid = stack.failpoint_pid("after_upload", post_id)
    assert pid in children_of(part.node_pid), "the post went to the outside worker"
    ns.cut("postgres")
    cut_at = time.monotonic()
    stack.arm()
    part.everyone_consumes()

    def reconciled() -> ScheduledPost | None:
        row = _rows([post_id])[post_id]
        return row if row.status == "published" else None

    row = wait_until(reconciled, 60, interval=0.25, what="the reconciler to publish the post")
    assert _events(post_id, "post.reconciling"), "published by someone other than the reaper's"
    assert time.monotonic() - cut_at > LEASE_S
    recorded_at = row.updated_at
    # The node is still inside its task, its record stuck in the partition; healed, it
    # finishes and finds the post recorded with the same platform post: no write, no
    # transition of its own.
    assert _late_records(part, post_id) == 0
    ns.heal("postgres")
    wait_until(
        lambda: _late_records(part, post_id) == 1,
        60,
        what="the partitioned node's late record to finish",
    )
    rows = _settle(stack, [post_id])
    assert rows[post_id].status == "published"
    assert rows[post_id].updated_at == recorded_at
    assert len(_events(post_id, "post.published")) == 1
    assert stack.ledger()["requests"] == 1


def test_cut_from_redis_for_longer_than_a_lease(
    part: Partitioned, api: httpx.Client, tenant: TenantFixture
) -> None:
    """The node holds due posts' messages when it is cut from Redis; posts scheduled during
    the cut go to the outside worker. Every post publishes once. Healed, the node takes work
    from the broker again."""
    stack, ns = part.stack, part.ns
    part.only_partitioned_consumes()
    cid = upload(api, tenant)
    held = [p["id"] for p in schedule(api, tenant, cid, at(3), tenant.extra_accounts[:3])]
    wait_until(lambda: all(r.task_id for r in _rows(held).values()), 10, what="dispatched")
    # Held unacked by a worker, and only the node consumes the queue now.
    wait_until(
        lambda: {r.task_id for r in _rows(held).values()} <= _held_task_ids(stack),
        10,
        what="the node to hold the messages",
    )
    with ns.partitioned("redis"):
        cut_at = time.monotonic()
        part.everyone_consumes()
        during = [p["id"] for p in schedule(api, tenant, cid, at(1), tenant.extra_accounts[3:5])]
        _settle(stack, held + during, timeout=60)
        # The fault window: the cut lasts past a lease, whatever the posts did meanwhile.
        time.sleep(max(0.0, LEASE_S + 1 - (time.monotonic() - cut_at)))
    rows = _settle(stack, held + during)
    assert {r.status for r in rows.values()} == {"published"}
    part.only_partitioned_consumes()
    (after,) = schedule(api, tenant, cid, at(1), [tenant.extra_accounts[5]])
    rows = _settle(stack, [after["id"]], timeout=60)
    assert rows[after["id"]].status == "published"
    assert _claimed_by_partitioned(part, after["id"]), "the healed node took no work"


def test_cut_from_the_platform_mid_upload(
    part: Partitioned, api: httpx.Client, tenant: TenantFixture
) -> None:
    """The node's upload is in flight (the platform is slow) when it is cut from the
    platform: the platform makes the post, its answer never arrives (a read timeout, an
    ambiguous try), and the lookup by key that must come before any second try cannot
    connect. Still reaching PostgreSQL, the node keeps renewing its lease while it waits, then
    hands the post on past the point of no return (`posts.wait_for_platform`: a new token, a
    lease ending when the platform is to be asked again); the reaper gives it to a reconcile
    task, which asks by key, never uploads blind. Healed, the post is found and recorded: one
    ledger entry, nothing stuck."""
    stack, ns = part.stack, part.ns
    stack.set_faults(latency_ms=1500)
    post_id = _one_post_for_the_node(part, api, tenant)

    def uploading() -> ScheduledPost | None:
        row = _rows([post_id])[post_id]
        return row if row.upload_started_at is not None else None

    row = wait_until(uploading, 20, interval=0.05, what="upload started")
    assert row.owner is not None and part.owned_by_partitioned(row.owner)
    wait_until(lambda: stack.ledger()["requests"] >= 1, 5, interval=0.05, what="request sent")
    with ns.partitioned("platform"):
        cut_at = time.monotonic()
        part.everyone_consumes()
        wait_until(
            lambda: len(stack.ledger()["posts"]) == 1, 10, what="the platform to make the post"
        )
        # The fault window: past a lease, and until the node has given the post up.
        time.sleep(LEASE_S + 1)
        wait_until(
            lambda: not part.owned_by_partitioned(_rows([post_id])[post_id].owner),
            60,
            what="the post to leave the partitioned node",
        )
        assert time.monotonic() - cut_at > LEASE_S
    stack.set_faults(latency_ms=0)
    rows = _settle(stack, [post_id], timeout=90)
    assert rows[post_id].status == "published"
    assert _events(post_id, "post.reconciling"), "not settled through the reaper's reconcile"
    assert stack.ledger()["requests"] == 1
