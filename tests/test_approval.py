"""The approval gate: a project's policy, content that waits for a decision, the schedules
saved meanwhile (202 blocked_on_approval) and what approval, rejection, the policy's delay and
a cancel make of them; and the races between those, each resolved under a lock."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from shared.accounts.accounts import disconnect_account
from shared.content import approval
from shared.content.containers import create_container
from shared.events import Actor
from shared.kit.clock import ceil_second, iso, utcnow
from shared.kit.db import new_session, transaction
from shared.kit.errors import Conflict
from shared.kit.settings import get_settings
from shared.models import (
    ContentContainer,
    Event,
    ScheduledPost,
    ScheduleIntent,
    WebhookDelivery,
)
from shared.publishing import protocol, usecases
from shared.publishing.posts import Target
from shared.webhooks.endpoints import register
from tests.checks import counts, envelope_error, migration_database
from tests.conftest import TEST_DATABASE_URL
from tests.factories import (
    TenantFixture,
    at,
    blocked_intent,
    pending_upload,
    set_policy,
    upload,
)

POLICY = "/v1/projects/{project}/approval-policy"


def _events(subject_id: str) -> list[str]:
    with new_session() as session:
        return list(
            session.scalars(
                select(Event.type).where(Event.subject_id == subject_id).order_by(Event.id)
            )
        )


def _posts_of(container_id: str) -> list[ScheduledPost]:
    with new_session() as session:
        return list(
            session.scalars(
                select(ScheduledPost)
                .where(ScheduledPost.container_id == container_id)
                .order_by(ScheduledPost.id)
            )
        )


def _intent(intent_id: str) -> ScheduleIntent:
    with new_session() as session:
        found = session.get(ScheduleIntent, intent_id)
        assert found is not None
        session.expunge(found)
        return found


def _decide(
    tenant: TenantFixture, container_id: str, *, approve: bool, now: datetime | None = None
) -> approval.Decided:
    actor = Actor(tenant.organization_id, tenant.key_id, "req-test")
    with transaction() as tx:
        return usecases.decide_content(
            actor, container_id, None, approve=approve, now=now or utcnow(), tx=tx
        )


# --- the policy --------------------------------------------------------------------------


def test_the_policy_is_off_until_set_and_put_replaces_it(
    client: TestClient, tenant: TenantFixture
) -> None:
    url = POLICY.format(project=tenant.project_id)
    off = {"requiresApproval": False, "firstNPostsBlocked": 0, "autoApproveAfter": None}
    assert client.get(url, headers=tenant.headers).json() == off
    put = set_policy(client, tenant, requiresApproval=True, autoApproveAfter="PT90M")
    # The duration comes back in its shortest form.
    assert put == {"requiresApproval": True, "firstNPostsBlocked": 0, "autoApproveAfter": "PT1H30M"}
    assert client.get(url, headers=tenant.headers).json() == put
    # PUT replaces: fields left out are off again.
    assert set_policy(client, tenant, firstNPostsBlocked=3) == {**off, "firstNPostsBlocked": 3}
    # Each change is on the project's event log; a PUT that changes nothing adds none.
    set_policy(client, tenant, firstNPostsBlocked=3)
    assert _events(tenant.project_id) == ["project.approval_policy_updated"] * 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("firstNPostsBlocked", 51),
        ("firstNPostsBlocked", -1),
        ("autoApproveAfter", "P1Y"),
        ("autoApproveAfter", "P1M"),
        ("autoApproveAfter", "PT0S"),
        ("autoApproveAfter", "PT1.5S"),
        ("autoApproveAfter", "P91D"),
        ("autoApproveAfter", "2 hours"),
        ("autoApproveAfter", 3600),
        ("requiresApproval", "yes"),
        ("everything", True),
    ],
)
def test_a_bad_policy_is_a_422_at_its_field_and_changes_nothing(
    client: TestClient, tenant: TenantFixture, field: str, value: Any
) -> None:
    url = POLICY.format(project=tenant.project_id)
    r = client.put(url, headers=tenant.headers, json={field: value})
    error = envelope_error(r, 422, "VALIDATION")
    assert [i["path"] for i in error["details"]["issues"]] == [field]
    assert client.get(url, headers=tenant.headers).json()["firstNPostsBlocked"] == 0


# --- content under the gate ---------------------------------------------------------------


def test_pending_content_saves_the_schedule_and_approval_makes_its_posts(
    client: TestClient, tenant: TenantFixture
) -> None:
    set_policy(client, tenant, requiresApproval=True)
    container = upload(client, tenant, "review me")
    got = client.get(f"/v1/content/{container}", headers=tenant.headers).json()
    assert got["status"] == "pending_approval"
    assert got["approval"] == {
        "status": "pending",
        "decidedAt": None,
        "auto": False,
        "reason": None,
    }

    # Schedule: 202, the intent saved, no post yet.
    when = at(3600)
    targets = [
        {"socialAccountId": tenant.accounts["tiktok"], "captionOverride": "for tiktok"},
        {"socialAccountId": tenant.accounts["instagram"]},
    ]
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers={**tenant.headers, "Idempotency-Key": "intent-1"},
        json={"scheduledFor": when, "targets": targets},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["gateStatus"] == "blocked_on_approval"
    assert body["containerId"] == container
    intent = body["intent"]
    assert intent["status"] == "blocked"
    assert intent["scheduledPostIds"] == []
    assert [t["socialAccountId"] for t in intent["targets"]] == [
        tenant.accounts["tiktok"],
        tenant.accounts["instagram"],
    ]
    assert intent["targets"][0]["captionOverride"] == "for tiktok"
    assert _posts_of(container) == []
    # A retry with the same key replays the 202 byte for byte, and saves nothing more.
    again = client.post(
        f"/v1/content/{container}/schedule",
        headers={**tenant.headers, "Idempotency-Key": "intent-1"},
        json={"scheduledFor": when, "targets": targets},
    )
    assert (again.status_code, again.content) == (202, r.content)
    listed = client.get(f"/v1/content/{container}/schedule-intents", headers=tenant.headers)
    assert [i["id"] for i in listed.json()["items"]] == [intent["id"]]

    # Publish-now of pending content: 403, and nothing saved.
    before = counts()
    r = client.post(
        f"/v1/content/{container}/publish",
        headers=tenant.headers,
        json={"targets": [{"socialAccountId": tenant.accounts["tiktok"]}]},
    )
    error = envelope_error(r, 403, "APPROVAL_REQUIRED")
    assert error["details"] == {"status": "pending_approval"}
    assert counts() == before

    # Approve: the content is completed, the intent's posts are queued at the intended time.
    r = client.post(
        f"/v1/content/{container}/approve", headers=tenant.headers, json={"reason": "fine"}
    )
    assert r.status_code == 200, r.text
    decided = r.json()
    assert decided["status"] == "completed"
    assert decided["approval"]["status"] == "approved"
    assert decided["approval"]["reason"] == "fine"
    assert decided["approval"]["auto"] is False
    made = _posts_of(container)
    assert sorted(p.platform for p in made) == ["instagram", "tiktok"]
    assert {p.status for p in made} == {"queued"}
    # At the intended time, to the second (rounded up, as every `scheduledFor`).
    assert {iso(p.scheduled_for) for p in made} == {intent["scheduledFor"]}
    assert intent["scheduledFor"] == iso(ceil_second(datetime.fromisoformat(when)))
    assert {p.caption_override for p in made} == {"for tiktok", None}
    promoted = client.get(f"/v1/schedule-intents/{intent['id']}", headers=tenant.headers).json()
    assert promoted["status"] == "promoted"
    assert sorted(promoted["scheduledPostIds"]) == sorted(p.public_id for p in made)
    # The posts' events name the key that scheduled them; the content's, its decision.
    assert _events(container) == ["content.approved"]
    assert _events(intent["id"]) == ["schedule_intent.saved", "schedule_intent.promoted"]
    for post in made:
        assert _events(post.id) == ["post.scheduled"]
    # Approved content schedules as any other: 201 posts at once.
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={
            "scheduledFor": at(7200),
            "targets": [{"socialAccountId": tenant.accounts["tiktok"]}],
        },
    )
    assert r.status_code == 201, r.text


def test_a_schedule_of_pending_content_is_checked_as_a_schedule_is(
    client: TestClient, tenant: TenantFixture
) -> None:
    container = pending_upload(client, tenant)
    before = counts()
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={
            "scheduledFor": at(600),
            "targets": [{"socialAccountId": "sa_00000000-0000-4000-8000-000000000000"}],
        },
    )
    error = envelope_error(r, 422, "VALIDATION")
    assert error["details"]["issues"][0]["path"] == "targets[0].socialAccountId"
    r = client.post(
        f"/v1/content/{container}/schedule",
        headers=tenant.headers,
        json={
            "scheduledFor": at(-600),
            "targets": [{"socialAccountId": tenant.accounts["tiktok"]}],
        },
    )
    assert envelope_error(r, 422, "VALIDATION")["details"]["issues"][0]["path"] == "scheduledFor"
    assert counts() == before


def test_an_intent_whose_time_has_passed_is_promoted_thirty_seconds_after_approval(
    client: TestClient, tenant: TenantFixture
) -> None:
    container = pending_upload(client, tenant)
    intent = blocked_intent(client, tenant, container, at(60), None)
    later = utcnow() + timedelta(hours=2)
    done = _decide(tenant, container, approve=True, now=later)
    assert [p.public_id for p in done.posts] == _intent(intent["id"]).scheduled_post_ids
    (post,) = _posts_of(container)
    assert post.scheduled_for == ceil_second(later + timedelta(seconds=30))


def test_rejected_content_is_never_scheduled(client: TestClient, tenant: TenantFixture) -> None:
    container = pending_upload(client, tenant)
    intent = blocked_intent(client, tenant, container, at(600), None)
    r = client.post(
        f"/v1/content/{container}/reject", headers=tenant.headers, json={"reason": "off brand"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    assert r.json()["approval"]["status"] == "rejected"
    assert r.json()["approval"]["reason"] == "off brand"
    assert _intent(intent["id"]).status == "rejected"
    assert _posts_of(container) == []
    targets = [{"socialAccountId": tenant.accounts["tiktok"]}]
    before = counts()
    for path, body in (
        ("schedule", {"scheduledFor": at(600), "targets": targets}),
        ("publish", {"targets": targets}),
    ):
        r = client.post(f"/v1/content/{container}/{path}", headers=tenant.headers, json=body)
        assert envelope_error(r, 409, "CONTENT_REJECTED")["details"] == {"status": "rejected"}
    assert counts() == before
    # The decision is final; repeating it changes nothing.
    approve = client.post(f"/v1/content/{container}/approve", headers=tenant.headers)
    assert envelope_error(approve, 409, "CONFLICT")["details"] == {"status": "rejected"}
    again = client.post(f"/v1/content/{container}/reject", headers=tenant.headers)
    assert again.status_code == 200
    assert again.json()["approval"]["reason"] == "off brand"
    assert _events(container) == ["content.rejected"]
    assert _events(intent["id"]) == ["schedule_intent.saved", "schedule_intent.rejected"]


def test_decisions_on_content_that_needs_none_or_has_one_are_conflicts(
    client: TestClient, tenant: TenantFixture
) -> None:
    free = upload(client, tenant)
    for decision in ("approve", "reject"):
        r = client.post(f"/v1/content/{free}/{decision}", headers=tenant.headers)
        assert envelope_error(r, 409, "CONFLICT")["details"] == {"status": "completed"}
    approved = pending_upload(client, tenant)
    assert client.post(f"/v1/content/{approved}/approve", headers=tenant.headers).status_code == 200
    again = client.post(f"/v1/content/{approved}/approve", headers=tenant.headers)
    assert again.status_code == 200
    reject = client.post(f"/v1/content/{approved}/reject", headers=tenant.headers)
    assert envelope_error(reject, 409, "CONFLICT")["details"] == {"status": "completed"}
    assert _events(approved) == ["content.approved"]


def test_first_n_holds_only_the_projects_first_containers(
    client: TestClient, tenant: TenantFixture
) -> None:
    set_policy(client, tenant, firstNPostsBlocked=2)
    made = [upload(client, tenant, f"c{i}") for i in range(4)]
    statuses = [
        client.get(f"/v1/content/{c}", headers=tenant.headers).json()["status"] for c in made
    ]
    assert statuses == ["pending_approval", "pending_approval", "completed", "completed"]


def test_a_cancel_of_the_intent_before_approval_makes_no_post(
    client: TestClient, tenant: TenantFixture
) -> None:
    container = pending_upload(client, tenant)
    kept = blocked_intent(client, tenant, container, at(600), None)
    dropped = blocked_intent(client, tenant, container, at(900), [tenant.accounts["instagram"]])
    r = client.request(
        "DELETE",
        f"/v1/schedule-intents/{dropped['id']}",
        headers=tenant.headers,
        json={"reason": "wrong week"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    _decide(tenant, container, approve=True)
    assert [p.platform for p in _posts_of(container)] == ["tiktok"]
    assert _intent(dropped["id"]).status == "canceled"
    # Once promoted, the intent is done: the 409 names the posts to cancel instead.
    r = client.delete(f"/v1/schedule-intents/{kept['id']}", headers=tenant.headers)
    error = envelope_error(r, 409, "CONFLICT")
    assert error["details"]["status"] == "promoted"
    assert error["details"]["scheduledPostIds"] == [_posts_of(container)[0].public_id]
    again = client.delete(f"/v1/schedule-intents/{dropped['id']}", headers=tenant.headers)
    assert envelope_error(again, 409, "CONFLICT")["details"] == {"status": "canceled"}


def test_an_intent_that_no_longer_schedules_fails_and_the_approval_stands(
    client: TestClient, tenant: TenantFixture
) -> None:
    container = pending_upload(client, tenant)
    doomed = blocked_intent(client, tenant, container, at(600), None)
    fine = blocked_intent(client, tenant, container, at(600), [tenant.accounts["instagram"]])
    disconnect_account(tenant.accounts["tiktok"], "revoked meanwhile", operator="ops")
    done = _decide(tenant, container, approve=True)
    assert done.container.status == "completed"
    failed = _intent(doomed["id"])
    assert failed.status == "failed"
    assert failed.last_error is not None
    assert failed.last_error["code"] == "VALIDATION"
    assert failed.last_error["details"]["issues"][0]["path"] == "targets[0].socialAccountId"
    assert _intent(fine["id"]).status == "promoted"
    assert [p.platform for p in _posts_of(container)] == ["instagram"]
    assert _events(doomed["id"]) == ["schedule_intent.saved", "schedule_intent.failed"]


def test_the_dispatcher_approves_content_after_the_policys_delay(
    client: TestClient, tenant: TenantFixture
) -> None:
    set_policy(client, tenant, requiresApproval=True, autoApproveAfter="PT1H")
    container = upload(client, tenant)
    intent = blocked_intent(client, tenant, container, at(600), None)
    created = utcnow()

    def sweep(after: timedelta) -> int:
        with transaction() as tx:
            return usecases.auto_approve(tx, now=created + after, limit=100)

    assert sweep(timedelta(minutes=59)) == 0
    assert sweep(timedelta(minutes=61)) == 1
    got = client.get(f"/v1/content/{container}", headers=tenant.headers).json()
    assert got["status"] == "completed"
    assert got["approval"]["auto"] is True
    assert _intent(intent["id"]).status == "promoted"
    assert sweep(timedelta(minutes=62)) == 0
    with new_session() as session:
        approved = session.scalars(
            select(Event).where(Event.subject_id == container, Event.type == "content.approved")
        ).one()
    assert approved.actor_key_id is None
    assert approved.data is not None and approved.data["auto"] is True


def test_the_dispatcher_tick_runs_the_auto_approval(
    client: TestClient, tenant: TenantFixture
) -> None:
    set_policy(client, tenant, requiresApproval=True, autoApproveAfter="PT1S")
    container = upload(client, tenant)
    blocked_intent(client, tenant, container, at(600), None)
    deadline = utcnow() + timedelta(seconds=30)
    while _posts_of(container) == [] and utcnow() < deadline:
        protocol.dispatch_once()
    assert [p.status for p in _posts_of(container)] == ["queued"]


def test_decisions_reach_the_webhooks_subscribed_to_them(
    client: TestClient, tenant: TenantFixture
) -> None:
    with transaction() as tx:
        register(
            tx.session,
            tenant.organization_id,
            "https://hooks.example.com/in",
            ["content.approved", "content.rejected"],
            None,
            settings=get_settings(),
            now=utcnow(),
        )
    approved, rejected = pending_upload(client, tenant), pending_upload(client, tenant)
    client.post(f"/v1/content/{approved}/approve", headers=tenant.headers)
    client.post(f"/v1/content/{rejected}/reject", headers=tenant.headers)
    with new_session() as session:
        sent = session.execute(
            select(Event.type, Event.data).join(
                WebhookDelivery, WebhookDelivery.event_id == Event.id
            )
        ).all()
    assert sorted((t, d["containerId"]) for t, d in sent) == sorted(
        [("content.approved", approved), ("content.rejected", rejected)]
    )


# --- races ---------------------------------------------------------------------------------

RACES = 60


def _race(pairs: list[tuple[Callable[[], Any], Callable[[], Any]]]) -> list[tuple[Any, Any]]:
    """Run each pair's two calls released together by a barrier; each side's result, or the
    exception it raised."""

    def both(pair: tuple[Callable[[], Any], Callable[[], Any]]) -> tuple[Any, Any]:
        start = threading.Barrier(2)

        def side(call: Callable[[], Any]) -> Any:
            start.wait(timeout=10)
            try:
                return call()
            except Conflict as exc:
                return exc

        with ThreadPoolExecutor(max_workers=2) as two:
            a, b = two.submit(side, pair[0]), two.submit(side, pair[1])
            return a.result(timeout=30), b.result(timeout=30)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(both, pairs))


def _pending_batch(tenant: TenantFixture, n: int) -> list[tuple[str, str]]:
    """n containers awaiting approval, each with one blocked intent on the tiktok account."""
    actor = Actor(tenant.organization_id, tenant.key_id, "req-setup")
    out = []
    with transaction() as tx:
        project = approval.get_project(tx.session, tenant.organization_id, tenant.project_id)
        project.approval_required = True
        tx.session.flush()
        for i in range(n):
            container = create_container(
                tx.session,
                project,
                f"race {i}",
                [("https://cdn.example.com/a.mp4", None)],
                now=utcnow(),
            )
            intent = approval.save_intent(
                tx.session,
                actor,
                container,
                utcnow() + timedelta(hours=1),
                [Target(tenant.accounts["tiktok"])],
                now=utcnow(),
                sandbox_only=False,
            )
            out.append((container.id, intent.id))
    return out


def test_an_approval_racing_a_cancel_of_its_intent_has_one_outcome(
    tenant: TenantFixture,
) -> None:
    batch = _pending_batch(tenant, RACES)
    actor = Actor(tenant.organization_id, tenant.key_id, "req-race")

    def later(call: Callable[[], Any], seed: str) -> Callable[[], Any]:
        # A seeded delay of up to an approval's length, so one side lands before, during or
        # after the other's transaction.
        delay = random.Random(seed).uniform(0, 0.03)

        def delayed() -> Any:
            time.sleep(delay)
            return call()

        return delayed

    def approve(container: str) -> Callable[[], Any]:
        return lambda: _decide(tenant, container, approve=True)

    def cancel(intent: str) -> Callable[[], Any]:
        return lambda: usecases.cancel_intent(actor, intent, "race", now=utcnow())

    # Half the pairs hold back the cancel, half the approval: each side gets its head starts.
    pairs = [
        (approve(c), later(cancel(i), i)) if n % 2 else (later(approve(c), i), cancel(i))
        for n, (c, i) in enumerate(batch)
    ]
    results = _race(pairs)
    canceled = promoted = 0
    for (container, intent_id), (_, cancel_result) in zip(batch, results, strict=True):
        intent, made = _intent(intent_id), _posts_of(container)
        if isinstance(cancel_result, Conflict):
            # The approval committed first: the intent is its posts, which the 409 names.
            promoted += 1
            assert intent.status == "promoted", intent_id
            assert [p.public_id for p in made] == intent.scheduled_post_ids
            assert cancel_result.details["scheduledPostIds"] == intent.scheduled_post_ids
        else:
            # The cancel won (200): the approval made no post of it, ever.
            canceled += 1
            assert intent.status == "canceled", intent_id
            assert made == [], f"{intent_id} was canceled (200) but has posts"
    print(f"\napproval vs cancel: {canceled} cancels won, {promoted} lost to the approval")
    assert canceled, "no cancel won: the cancels all came after the approvals, no race"
    assert promoted, "no approval won: the approvals all came after the cancels, no race"


def test_two_approvals_at_once_promote_each_intent_once(tenant: TenantFixture) -> None:
    batch = _pending_batch(tenant, RACES)

    def approve(container: str) -> Callable[[], Any]:
        return lambda: _decide(tenant, container, approve=True)

    results = _race([(approve(c), approve(c)) for c, _ in batch])
    for (container, intent_id), pair in zip(batch, results, strict=True):
        assert sorted(d.changed for d in pair) == [False, True], container
        assert len(_posts_of(container)) == 1, f"{container} was promoted twice"
        assert _events(container) == ["content.approved"]
        assert _intent(intent_id).status == "promoted"


def test_the_auto_approval_sweep_racing_manual_rejections_decides_each_once(
    tenant: TenantFixture,
) -> None:
    """The dispatcher's sweep runs while people reject: each container is decided once,
    approved (its intent promoted to one post) or rejected (no post), never both. One
    rejection holds its lock across the whole sweep, which must pass it by; the sweep starts
    once a few rejections have committed, while the others arrive; a quarter of the
    containers get no rejection, which the sweep must approve."""
    batch = _pending_batch(tenant, RACES)
    with transaction() as tx:
        project = approval.get_project(tx.session, tenant.organization_id, tenant.project_id)
        project.auto_approve_after_s = 60
        for container, _ in batch:
            row = tx.session.get(ContentContainer, container)
            assert row is not None
            row.created_at = utcnow() - timedelta(hours=1)
    actor = Actor(tenant.organization_id, tenant.key_id, "req-race")
    held, swept = threading.Event(), threading.Event()
    # The sweep starts once a few rejections have committed, the rest still arriving.
    decided, head_start = threading.Condition(), 5
    done = [0]

    def hold_a_rejection() -> Any:
        with transaction() as tx:
            decided = usecases.decide_content(
                actor, batch[0][0], None, approve=False, now=utcnow(), tx=tx
            )
            held.set()
            assert swept.wait(timeout=30)
            return decided

    def reject(container: str) -> Any:
        delay = random.Random(container).uniform(0, 0.03)
        time.sleep(delay)
        try:
            return _decide(tenant, container, approve=False)
        except Conflict as exc:
            return exc
        finally:
            with decided:
                done[0] += 1
                decided.notify_all()

    def sweep() -> list[approval.Decided]:
        assert held.wait(timeout=30)
        with decided:
            assert decided.wait_for(lambda: done[0] >= head_start, timeout=30)
        try:
            with transaction() as tx:
                return approval.auto_approve_due(tx.session, now=utcnow(), limit=100_000)
        finally:
            swept.set()

    rejected_by_hand = [c for n, (c, _) in enumerate(batch[1:], 1) if n % 4]
    with ThreadPoolExecutor(max_workers=6) as pool:
        holder = pool.submit(hold_a_rejection)
        sweeper = pool.submit(sweep)
        answers = list(pool.map(reject, rejected_by_hand))
        holder.result(timeout=60)
        swept_ids = {d.container.id for d in sweeper.result(timeout=60)}
    assert batch[0][0] not in swept_ids, "the sweep decided a container a rejection held"
    outcomes = {"content.approved": 0, "content.rejected": 0}
    for container, intent_id in batch:
        (decision,) = _events(container)
        outcomes[decision] += 1
        made, intent = _posts_of(container), _intent(intent_id)
        if decision == "content.approved":
            assert intent.status == "promoted" and len(made) == 1, container
        else:
            assert intent.status == "rejected" and made == [], container
    lost = sum(isinstance(a, Conflict) for a in answers)
    print(f"\nsweep vs rejections: {outcomes}; {lost} rejections came after the sweep")
    # The held one and the head start at least; those no one rejected at least.
    assert outcomes["content.rejected"] >= 1 + head_start
    assert outcomes["content.approved"] >= len(batch) - 1 - len(rejected_by_hand)


def test_an_approval_racing_a_rejection_has_one_outcome(tenant: TenantFixture) -> None:
    batch = _pending_batch(tenant, RACES)

    def decide(container: str, approve: bool) -> Callable[[], Any]:
        return lambda: _decide(tenant, container, approve=approve)

    results = _race([(decide(c, True), decide(c, False)) for c, _ in batch])
    outcomes = {"approved": 0, "rejected": 0}
    for (container, intent_id), (approved, rejected) in zip(batch, results, strict=True):
        winners = [r for r in (approved, rejected) if not isinstance(r, Conflict)]
        assert len(winners) == 1, container
        with new_session() as session:
            status = session.scalars(
                select(ContentContainer.status).where(ContentContainer.id == container)
            ).one()
        made = _posts_of(container)
        if status == "completed":
            outcomes["approved"] += 1
            assert isinstance(rejected, Conflict)
            assert len(made) == 1 and _intent(intent_id).status == "promoted"
        else:
            outcomes["rejected"] += 1
            assert status == "rejected" and isinstance(approved, Conflict)
            assert made == [] and _intent(intent_id).status == "rejected"
    print(f"\napproval vs rejection: {outcomes}")


def test_a_schedule_racing_the_approval_is_never_left_blocked(tenant: TenantFixture) -> None:
    """A schedule lands before the approval (its intent is promoted) or after it (posts at
    once): never a blocked intent on approved content."""
    batch = _pending_batch(tenant, RACES)
    actor = Actor(tenant.organization_id, tenant.key_id, "req-race")
    account = tenant.accounts["instagram"]

    def schedule(container: str) -> Callable[[], Any]:
        return lambda: usecases.schedule_posts(
            actor, container, utcnow() + timedelta(hours=2), [Target(account)], now=utcnow()
        )

    def approve(container: str) -> Callable[[], Any]:
        return lambda: _decide(tenant, container, approve=True)

    results = _race([(approve(c), schedule(c)) for c, _ in batch])
    saved = direct = 0
    for (container, _), (_, scheduled) in zip(batch, results, strict=True):
        if isinstance(scheduled, ScheduleIntent):
            saved += 1
        else:
            direct += 1
        with new_session() as session:
            blocked = session.scalar(
                select(func.count()).where(
                    ScheduleIntent.container_id == container, ScheduleIntent.status == "blocked"
                )
            )
        assert blocked == 0, f"{container} was approved with an intent left blocked"
        assert sorted(p.platform for p in _posts_of(container)) == ["instagram", "tiktok"]
    print(f"\nschedule vs approval: {saved} saved and promoted, {direct} scheduled after it")


def test_migrations_0009_and_0010_up_and_down() -> None:
    """0009 leaves existing content `completed` and needing no approval, and adds the policy
    (off) and intents; 0010 renames a stored refusal's code. Both go back down."""
    refused = '{"code": "PLATFORM_REJECTED", "message": "no", "platformCode": "spam_risk"}'
    with migration_database("publisher_test_approval_migration", TEST_DATABASE_URL) as (cfg, db):
        command.upgrade(cfg, "0008")
        with db.begin() as conn:
            for statement in (
                "INSERT INTO organizations (id, name) VALUES ('org_1', 'O')",
                "INSERT INTO projects (id, organization_id, name) VALUES ('prj_1', 'org_1', 'P')",
                "INSERT INTO content_containers (id, organization_id, project_id, status,"
                " caption, media) VALUES ('cnt_1', 'org_1', 'prj_1', 'completed', 'c', '[]')",
                "INSERT INTO social_accounts (id, organization_id, project_id, platform, handle,"
                " adapter, base_url) VALUES ('sa_1', 'org_1', 'prj_1', 'tiktok', 'h', 'sandbox',"
                " 'http://x')",
                "INSERT INTO scheduled_posts (id, public_id, organization_id, project_id,"
                " container_id, social_account_id, platform, mode, status, scheduled_for,"
                " dispatch_version, attempts, last_error) VALUES ('sp_1', 'sp_1', 'org_1',"
                " 'prj_1', 'cnt_1', 'sa_1', 'tiktok', 'publish', 'failed', now(), 1, 1,"
                " CAST(:refused AS jsonb))",
            ):
                conn.execute(
                    text(statement), {"refused": refused} if ":refused" in statement else {}
                )
        command.upgrade(cfg, "head")
        with db.connect() as conn:
            assert conn.execute(
                text("SELECT status, approval_required FROM content_containers")
            ).one() == ("completed", False)
            assert conn.execute(
                text("SELECT approval_required, approval_first_n FROM projects")
            ).one() == (False, 0)
            assert conn.execute(text("SELECT count(*) FROM schedule_intents")).scalar() == 0
            code = conn.execute(text("SELECT last_error->>'code' FROM scheduled_posts")).scalar()
            assert code == "PLATFORM_ERROR"
        command.downgrade(cfg, "0008")
        with db.connect() as conn:
            code = conn.execute(text("SELECT last_error->>'code' FROM scheduled_posts")).scalar()
            assert code == "PLATFORM_REJECTED"
            columns = conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'content_containers'"
                )
            ).scalars()
            assert "approval_required" not in set(columns)
