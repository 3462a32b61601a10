"""The cancel contract: a canceled post stays visible and audited, cancel wins until the
upload starts, and conflicts after."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from shared.kit.clock import utcnow
from shared.kit.db import engine, transaction
from shared.publishing import posts
from tests.api.helpers import ISO_Z, _cancel, _parse, _post_in
from tests.checks import count as _count
from tests.checks import envelope_error as _error
from tests.checks import post_row as _row
from tests.factories import TenantFixture


def test_cancel_keeps_the_post_visible_and_audits_the_reason(
    client: TestClient, tenant: TenantFixture
) -> None:
    post_id = _post_in(client, tenant, "queued")
    reason = "Brand asked us to hold - legal review pending."
    before = utcnow().replace(microsecond=0)
    r = _cancel(client, tenant, post_id, {"reason": reason}, **{"X-Request-Id": "req-cancel-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "status", "canceledAt"}
    assert body["id"] == post_id
    assert body["status"] == "canceled"
    assert ISO_Z.match(body["canceledAt"])
    assert before <= _parse(body["canceledAt"]) <= utcnow()

    got = client.get(f"/v1/scheduled-posts/{post_id}", headers=tenant.headers)
    assert got.status_code == 200
    assert got.json()["status"] == "canceled"
    assert got.json()["canceledAt"] == body["canceledAt"]
    listed = client.get(
        f"/v1/projects/{tenant.project_id}/scheduled-posts", headers=tenant.headers
    ).json()["items"]
    assert [(i["id"], i["status"]) for i in listed] == [(post_id, "canceled")]

    with engine().connect() as conn:
        audit = (
            conn.execute(
                text(
                    "SELECT reason, actor_key_id, request_id, organization_id FROM events"
                    " WHERE subject_id = :t AND type = 'post.canceled'"
                ),
                {"t": post_id},
            )
            .mappings()
            .all()
        )
    assert [dict(a) for a in audit] == [
        {
            "reason": reason,
            "actor_key_id": tenant.key_id,
            "request_id": "req-cancel-1",
            "organization_id": tenant.organization_id,
        }
    ]


@pytest.mark.parametrize("body", [None, {}, {"reason": None}])
def test_cancel_without_a_reason(client: TestClient, tenant: TenantFixture, body: Any) -> None:
    post_id = _post_in(client, tenant, "queued")
    r = _cancel(client, tenant, post_id, body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    with engine().connect() as conn:
        reasons = list(
            conn.execute(
                text("SELECT reason FROM events WHERE subject_id = :t AND type = 'post.canceled'"),
                {"t": post_id},
            ).scalars()
        )
    assert reasons == [None]


def test_cancel_reason_of_1024_chars_is_kept(client: TestClient, tenant: TenantFixture) -> None:
    post_id = _post_in(client, tenant, "queued")
    r = _cancel(client, tenant, post_id, {"reason": "r" * 1024})
    assert r.status_code == 200, r.text
    assert _row(post_id).cancel_reason == "r" * 1024


def test_cancel_twice_conflicts(client: TestClient, tenant: TenantFixture) -> None:
    post_id = _post_in(client, tenant, "queued")
    first = _cancel(client, tenant, post_id, {"reason": "once"})
    assert first.status_code == 200
    err = _error(_cancel(client, tenant, post_id, {"reason": "twice"}), 409, "CONFLICT")
    assert err["details"]["status"] == "canceled"
    # The first cancel's answer still stands.
    got = client.get(f"/v1/scheduled-posts/{post_id}", headers=tenant.headers).json()
    assert got["canceledAt"] == first.json()["canceledAt"]
    assert _row(post_id).cancel_reason == "once"
    assert _count("events WHERE type = 'post.canceled'") == 1


def test_cancel_wins_while_publishing_before_the_upload(
    client: TestClient, tenant: TenantFixture
) -> None:
    post_id = _post_in(client, tenant, "publishing")
    claimed = _row(post_id)
    r = _cancel(client, tenant, post_id, {"reason": "stop"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    # The worker that claimed it reaches the point of no return and stands down.
    with transaction() as tx:
        assert not posts.begin_upload(
            tx.session,
            post_id,
            claimed.dispatch_version,
            "w1",
            now=utcnow(),
            lease=timedelta(minutes=2),
        )
    row = _row(post_id)
    assert (row.status, row.upload_started_at) == ("canceled", None)


@pytest.mark.parametrize("state", ["uploading", "published", "draft", "failed"])
def test_cancel_conflicts_once_the_upload_started_or_terminal(
    client: TestClient, tenant: TenantFixture, state: str
) -> None:
    post_id = _post_in(client, tenant, state)
    before = _row(post_id)
    err = _error(_cancel(client, tenant, post_id, {"reason": "too late"}), 409, "CONFLICT")
    assert err["details"]["status"] == before.status
    after = _row(post_id)
    assert (after.status, after.canceled_at, after.dispatch_version) == (
        before.status,
        None,
        before.dispatch_version,
    )
    assert _count("events WHERE type = 'post.canceled'") == 0
    if state == "uploading":
        # The 409 promises the post completes: the worker can still record its outcome.
        with transaction() as tx:
            assert posts.record_uploaded(
                tx.session, post_id, external_id="x", external_url=None, now=utcnow()
            )
