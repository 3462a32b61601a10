"""Disconnecting an account: in one transaction it is `disconnected` (and evented), every
post of it that has not reached its platform is canceled as a cancel would, and those past
the point of no return complete; after it, nothing new is scheduled on it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cli.main import main
from shared.accounts.accounts import disconnect_account
from shared.kit.clock import utcnow
from shared.kit.db import new_session, transaction
from shared.kit.settings import get_settings
from shared.models import Event, ScheduledPost, SocialAccount, WebhookDelivery
from shared.publishing import posts
from shared.webhooks.endpoints import register
from tests.checks import envelope_error
from tests.emulators import due_post
from tests.factories import TenantFixture, at, upload


def _status(post_id: str) -> str:
    with new_session() as session:
        return session.scalars(
            select(ScheduledPost.status).where(ScheduledPost.public_id == post_id)
        ).one()


def _types(subject_id: str) -> list[str]:
    with new_session() as session:
        return list(
            session.scalars(
                select(Event.type).where(Event.subject_id == subject_id).order_by(Event.id)
            )
        )


def test_a_disconnect_cancels_what_has_not_gone_out_and_lets_the_rest_complete(
    tenant: TenantFixture,
) -> None:
    account = tenant.accounts["tiktok"]
    queued, _ = due_post(tenant, "queued", platform="tiktok")
    claimed, claimed_token = due_post(tenant, "claimed", platform="tiktok")
    started, started_token = due_post(tenant, "started", platform="tiktok")
    now = utcnow()
    lease = timedelta(minutes=5)
    with transaction() as tx:
        posts.claim(tx.session, claimed, claimed_token, "w1", now=now, lease=lease)
        posts.claim(tx.session, started, started_token, "w2", now=now, lease=lease)
        assert posts.begin_upload(tx.session, started, started_token, "w2", now=now, lease=lease)
        endpoint = register(
            tx.session,
            tenant.organization_id,
            "https://hooks.example.com/disconnect",
            ["post.canceled", "social_account.revoked"],
            None,
            settings=get_settings(),
            now=now,
        )
    done = disconnect_account(account, "the customer revoked access", operator="ops")
    assert sorted(done.canceled) == sorted([queued, claimed])
    assert done.completing == 1
    assert done.account.status == "disconnected"
    assert (_status(queued), _status(claimed), _status(started)) == (
        "canceled",
        "canceled",
        "publishing",
    )
    # The worker that claimed it stops at the point of no return; the started one records.
    with transaction() as tx:
        assert not posts.begin_upload(
            tx.session, claimed, claimed_token, "w1", now=utcnow(), lease=lease
        )
        assert (
            posts.record_uploaded(
                tx.session, started, external_id="ext-1", external_url=None, now=utcnow()
            )
            is posts.Recorded.NOW
        )
    # A late second record of the same platform post (a retried commit, a worker back from a
    # partition) finds it made and writes nothing.
    with transaction() as tx:
        assert (
            posts.record_uploaded(
                tx.session, started, external_id="ext-1", external_url=None, now=utcnow()
            )
            is posts.Recorded.ALREADY
        )
    assert _status(started) == "published"
    assert _types(started).count("post.published") == 1
    assert _types(account)[-1] == "social_account.revoked"
    with new_session() as session:
        canceled = session.scalars(
            select(Event).where(Event.subject_id == queued, Event.type == "post.canceled")
        ).one()
        assert (canceled.reason, canceled.request_id) == ("the customer revoked access", "cli:ops")
        row = session.get(SocialAccount, account)
        assert row is not None and row.status_reason == "the customer revoked access"
        # Each is notified: a delivery to the subscribed endpoint per canceled post, and one
        # for the account, committed with the disconnect.
        sent = session.execute(
            select(Event.type, Event.subject_id, Event.data)
            .join(WebhookDelivery, WebhookDelivery.event_id == Event.id)
            .where(WebhookDelivery.endpoint_id == endpoint.endpoint.id)
        ).all()
    assert sorted((t, i) for t, i, _ in sent) == sorted(
        [("post.canceled", queued), ("post.canceled", claimed), ("social_account.revoked", account)]
    )
    assert {d["status"] for t, _, d in sent if t == "post.canceled"} == {"canceled"}


def test_nothing_new_is_scheduled_on_a_disconnected_account(
    client: TestClient, tenant: TenantFixture
) -> None:
    disconnect_account(tenant.accounts["instagram"], "gone", operator="ops")
    cid = upload(client, tenant)
    r = client.post(
        f"/v1/content/{cid}/schedule",
        headers=tenant.headers,
        json={
            "scheduledFor": at(120),
            "targets": [{"socialAccountId": tenant.accounts["instagram"]}],
        },
    )
    err = envelope_error(r, 422, "VALIDATION")
    assert err["details"]["issues"][0]["path"] == "targets[0].socialAccountId"
    assert "disconnected" in err["details"]["issues"][0]["message"]
    # The list shows it, filtered by status.
    r = client.get(
        f"/v1/projects/{tenant.project_id}/social-accounts",
        headers=tenant.headers,
        params={"status": "disconnected"},
    )
    assert [a["id"] for a in r.json()["items"]] == [tenant.accounts["instagram"]]


def test_the_disconnect_command(tenant: TenantFixture, capsys: pytest.CaptureFixture[str]) -> None:
    queued, _ = due_post(tenant, "queued", platform="tiktok")
    account = tenant.accounts["tiktok"]
    argv = ["accounts", "disconnect", "--account", account, "--reason", "revoked"]
    assert main([*argv, "--operator", "ops", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"id": account, "status": "disconnected", "canceled": [queued], "completing": 0}
    # Again, or an unknown account, or no reason: one line, exit 1, nothing changed.
    for bad in (argv, ["accounts", "disconnect", "--account", "sa_x", "--reason", "r"]):
        assert main(bad) == 1
        err = capsys.readouterr().err
        assert err.startswith("publisher: ") and len(err.strip().splitlines()) == 1
    assert main(["accounts", "disconnect", "--account", account, "--reason", " "]) == 1
    assert _types(account).count("social_account.revoked") == 1
