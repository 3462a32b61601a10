"""The event log: every transition appends its event in its own transaction, with who asked;
a change that rolls back leaves none; the log refuses edits; the audit log's rows became
events when the schema moved on."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from shared.accounts.tokens import mark_reauth_required
from shared.events import DELIVERABLE, Actor, EventType, new_event_id
from shared.kit.clock import utcnow
from shared.kit.db import engine, new_session, transaction
from shared.kit.settings import Settings
from shared.models import Event
from shared.publishing import posts
from shared.publishing.protocol import reap_once
from shared.publishing.usecases import cancel_post
from tests.checks import migration_database, publish_with
from tests.conftest import TEST_DATABASE_URL
from tests.emulators import due_post
from tests.factories import TenantFixture

SETTINGS = Settings(lease_s=60)


def _events(subject_id: str) -> list[Event]:
    with new_session() as session:
        rows = session.scalars(
            select(Event).where(Event.subject_id == subject_id).order_by(Event.id)
        ).all()
        session.expunge_all()
        return list(rows)


def _types(subject_id: str) -> list[str]:
    return [e.type for e in _events(subject_id)]


def test_a_published_post_tells_its_whole_life(tenant: TenantFixture) -> None:
    post_id, token = due_post(tenant, "life", platform="tiktok")
    assert publish_with(post_id, token) == "published"
    events = _events(post_id)
    assert [e.type for e in events] == [
        "post.scheduled",
        "post.claimed",
        "post.upload_started",
        "post.published",
    ]
    scheduled, claimed, started, published = events
    # Who asked is on the API's transitions; the system's own carry no actor.
    assert (scheduled.actor_key_id, scheduled.request_id) == (tenant.key_id, "test")
    assert claimed.actor_key_id is None and claimed.request_id is None
    assert claimed.data is not None and started.data is not None and published.data is not None
    assert (claimed.data["token"], claimed.data["owner"], claimed.data["attempt"]) == (
        token,
        "w1",
        1,
    )
    assert claimed.data["status"] == "publishing"
    # The webhook payload API.md gives, as the post is after the transition.
    assert scheduled.data is not None
    assert published.data == {
        "scheduledPostId": post_id,
        "containerId": scheduled.data["containerId"],
        "socialAccountId": tenant.accounts["tiktok"],
        "platform": "tiktok",
        "status": "published",
        "scheduledFor": scheduled.data["scheduledFor"],
        "externalId": f"ext-{post_id}",
        "externalUrl": f"https://platform.test/{post_id}",
    }
    assert {e.organization_id for e in events} == {tenant.organization_id}
    assert all(e.subject_type == "scheduled_post" for e in events)


def test_a_refused_post_ends_with_post_failed_and_its_error(tenant: TenantFixture) -> None:
    post_id, token = due_post(tenant, "refused", platform="tiktok")
    assert publish_with(post_id, token, refuse=True) == "failed"
    failed = _events(post_id)[-1]
    assert failed.type == "post.failed"
    assert failed.data is not None
    assert failed.data["status"] == "failed"
    assert failed.data["lastError"]["platformCode"] == "bad_caption"


def test_a_cancel_is_audited_on_its_event(tenant: TenantFixture) -> None:
    post_id, _ = due_post(tenant, "cancel me", platform="tiktok")
    actor = Actor(tenant.organization_id, tenant.key_id, "req-42")
    done = cancel_post(actor, post_id, "wrong video", now=utcnow())
    assert done.result == posts.CancelResult.WON
    canceled = _events(post_id)[-1]
    assert canceled.type == "post.canceled"
    assert (canceled.actor_key_id, canceled.request_id, canceled.reason) == (
        tenant.key_id,
        "req-42",
        "wrong video",
    )
    assert canceled.data is not None and canceled.data["previous"] == "queued"
    # A cancel that changes nothing writes nothing.
    cancel_post(actor, post_id, "again", now=utcnow())
    assert _types(post_id).count("post.canceled") == 1


def test_a_transition_that_rolls_back_leaves_no_event(tenant: TenantFixture) -> None:
    post_id, _ = due_post(tenant, "rolled back", platform="tiktok")
    before = _types(post_id)
    actor = Actor(tenant.organization_id, tenant.key_id, "req")

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction() as tx:
        posts.cancel(tx.session, actor, post_id, "never", now=utcnow())
        tx.session.flush()  # the event row was written, inside the transaction
        raise Abort
    assert _types(post_id) == before
    with new_session() as session:
        post = posts.get_post(session, tenant.organization_id, post_id)
        assert post.status == "queued"


def test_the_reaper_s_decisions_are_events(tenant: TenantFixture) -> None:
    post_id, token = due_post(tenant, "reaped", platform="tiktok")
    with transaction() as tx:
        claim = posts.claim(
            tx.session, post_id, token, "gone", now=utcnow(), lease=timedelta(seconds=-1)
        )
        assert claim.result == posts.ClaimResult.CLAIMED
    reap_once()
    requeued = _events(post_id)[-1]
    assert requeued.type == "post.requeued"
    assert requeued.data is not None
    assert (requeued.data["status"], requeued.data["token"]) == ("queued", token + 1)


def test_account_events(tenant: TenantFixture) -> None:
    account_id = tenant.accounts["instagram"]
    assert _types(account_id) == ["social_account.connected"]
    with transaction() as tx:
        mark_reauth_required(tx.session, account_id, "token revoked by the user")
    connected, reauth = _events(account_id)
    assert reauth.type == "social_account.needs_reauth"
    assert reauth.reason == "token revoked by the user"
    assert reauth.data is not None
    assert (reauth.data["status"], reauth.data["platform"]) == ("reauth_required", "instagram")
    assert connected.data is not None and connected.data["status"] == "connected"


def test_the_log_refuses_edits_and_deletions(tenant: TenantFixture) -> None:
    for statement in ("UPDATE events SET reason = 'forged'", "DELETE FROM events"):
        with pytest.raises(DBAPIError, match="events is append-only"), engine().begin() as conn:
            conn.execute(text(statement))
    assert len(_events(tenant.accounts["tiktok"])) == 1


def test_event_ids_are_unique_time_ordered_and_shaped_as_documented() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"evt_[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)
    # Whole milliseconds apart, they sort by time as text.
    first = new_event_id()
    wait_ms = utcnow() + timedelta(milliseconds=3)
    while utcnow() < wait_ms:
        pass
    assert new_event_id()[:14] > first[:14]


def test_only_the_documented_types_are_deliverable() -> None:
    assert {t.value for t in DELIVERABLE} == {
        "post.scheduled",
        "post.published",
        "post.failed",
        "post.canceled",
        "content.approved",
        "content.rejected",
        "social_account.connected",
        "social_account.needs_reauth",
        "social_account.revoked",
    }
    assert EventType.POST_CLAIMED not in DELIVERABLE
    assert EventType.INTENT_SAVED not in DELIVERABLE


def test_the_audit_log_becomes_the_event_log_and_back() -> None:
    """Migration 0006 on a database that has audit rows: they become events under their new
    names, with event ids; downgrading gives the audit log back, without the events it never
    held."""
    with migration_database("publisher_test_events_migration", TEST_DATABASE_URL) as (cfg, db):
        command.upgrade(cfg, "0005")
        with db.begin() as conn:
            conn.execute(text("INSERT INTO organizations (id, name) VALUES ('org_1', 'O')"))
            conn.execute(
                text(
                    "INSERT INTO audit_log (organization_id, actor_key_id, action, target_type,"
                    " target_id, reason, request_id) VALUES ('org_1', 'key_1',"
                    " 'scheduled_post.cancel', 'scheduled_post', 'sp_1', 'why', 'req_1')"
                )
            )
        command.upgrade(cfg, "0006")
        with db.connect() as conn:
            row = conn.execute(
                text("SELECT type, subject_id, reason, request_id, public_id FROM events")
            ).one()
        assert tuple(row[:4]) == ("post.canceled", "sp_1", "why", "req_1")
        assert re.fullmatch(r"evt_[0-9A-F]{26}", row[4])
        with db.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (public_id, organization_id, type, subject_type,"
                    " subject_id) VALUES ('evt_X', 'org_1', 'post.claimed', 'scheduled_post',"
                    " 'sp_1')"
                )
            )
        command.downgrade(cfg, "0005")
        with db.connect() as conn:
            rows = conn.execute(text("SELECT action, target_id, reason FROM audit_log")).all()
        assert [tuple(r) for r in rows] == [("scheduled_post.cancel", "sp_1", "why")]
