"""`publisher posts show|list|settle`: a post's life read from the event log, the operator's
worklist, and the operator's verdict on a post whose outcome only the platform knows, as one
transition under the row lock with a new fencing token. Refusals are one line on stderr and
change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cli.main import main
from harness.stack import ROOT
from shared.content.containers import create_container, get_project
from shared.events import Actor
from shared.kit import ids
from shared.kit.clock import utcnow
from shared.kit.db import new_session, transaction
from shared.models import Event, Mode, ScheduledPost
from shared.publishing import posts
from tests.emulators import IMAGE, due_post
from tests.factories import TenantFixture, make_tenant

LEASE = timedelta(seconds=60)
UNKNOWN = "UPLOAD_OUTCOME_UNKNOWN"


# --- making posts through the transitions the worker uses -------------------------------------


def _claimed(tenant: TenantFixture, caption: str, platform: str = "instagram") -> tuple[str, int]:
    """A due post a worker (`w1`) has claimed: `publishing`, before the point of no return."""
    post_id, token = due_post(tenant, caption, platform=platform)
    with transaction() as tx:
        claim = posts.claim(tx.session, post_id, token, "w1", now=utcnow(), lease=LEASE)
        assert claim.result == posts.ClaimResult.CLAIMED
    return post_id, token


def _stuck(tenant: TenantFixture, caption: str) -> tuple[str, int]:
    """A post past its point of no return, its worker gone quiet: `publishing` with
    `upload_started_at` and the container id saved."""
    post_id, token = _claimed(tenant, caption)
    with transaction() as tx:
        assert posts.begin_upload(
            tx.session, post_id, token, "w1", now=utcnow(), lease=LEASE, handle="c-1"
        )
    return post_id, token


def _failed(tenant: TenantFixture, caption: str, code: str = UNKNOWN) -> tuple[str, int]:
    """A post that failed after its upload started, with `code`."""
    post_id, token = _stuck(tenant, caption)
    with transaction() as tx:
        assert posts.record_failed(
            tx.session,
            post_id,
            token,
            code=code,
            message="Instagram never said what became of the container",
            platform_code=None,
            now=utcnow(),
        )
    return post_id, token


def _published(tenant: TenantFixture, caption: str) -> str:
    """A post the worker published."""
    post_id, _ = _stuck(tenant, caption)
    with transaction() as tx:
        assert posts.record_uploaded(
            tx.session, post_id, external_id="m-1", external_url=None, now=utcnow()
        )
    return post_id


def _scheduled(
    tenant: TenantFixture,
    *,
    platform: str = "tiktok",
    mode: Mode = Mode.PUBLISH,
    public_id: str | None = None,
) -> tuple[str, int]:
    """A due post with a task, as publish-now makes it, optionally in draft mode or with an id
    the caller chose: (internal id, token)."""
    now = utcnow() - timedelta(seconds=1)
    actor = Actor(tenant.organization_id, tenant.key_id, "test")
    target = posts.Target(tenant.accounts[platform], mode=mode, scheduled_post_id=public_id)
    with transaction() as tx:
        project = get_project(tx.session, tenant.organization_id, tenant.project_id)
        container = create_container(tx.session, project, "chosen", [IMAGE], now=now)
        scheduled = posts.schedule(
            tx.session,
            actor,
            container,
            now,
            [target],
            now=utcnow() + timedelta(hours=1),
            task_id_for_now=True,
        )
    dispatch = scheduled.dispatches[0]
    return dispatch.post_id, dispatch.token


# --- reading back ---------------------------------------------------------------------------


def _row(post_id: str) -> ScheduledPost:
    """The post by internal id, detached."""
    with new_session() as session:
        post = session.get(ScheduledPost, post_id)
        assert post is not None
        session.expunge(post)
        return post


def _state(post_id: str) -> tuple[Any, ...]:
    """Everything a refused command must leave as it was."""
    post = _row(post_id)
    return (
        post.status,
        post.dispatch_version,
        post.last_error,
        post.external_id,
        post.owner,
        post.lease_expires_at,
        post.updated_at,
        len(_events(post_id)),
    )


def _events(post_id: str) -> list[Event]:
    with new_session() as session:
        rows = session.scalars(
            select(Event).where(Event.subject_id == post_id).order_by(Event.id)
        ).all()
        session.expunge_all()
        return list(rows)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """`publisher …` as an operator runs it: a process of its own, on the test database
    (conftest points DATABASE_URL at it)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *argv],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 1) -> str:
    """Run in-process; it must exit `code` with exactly one line on stderr and nothing on
    stdout. Returns the line."""
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("publisher: ")
    return lines[0]


def _settle_published(post_id: str, *extra: str) -> list[str]:
    return [
        "posts",
        "settle",
        post_id,
        "--published",
        "--external-id",
        "17900000000000001",
        "--external-url",
        "https://www.instagram.com/p/abc/",
        "--reason",
        "found the media in the account's list",
        "--operator",
        "ops-1",
        *extra,
    ]


def _settle_failed(post_id: str, *extra: str) -> list[str]:
    reason = "container reads EXPIRED; nothing was published"
    return [
        "posts",
        "settle",
        post_id,
        "--failed",
        "--reason",
        reason,
        "--operator",
        "ops-2",
        *extra,
    ]


# --- show -----------------------------------------------------------------------------------


def test_show_prints_every_event_in_order_with_who_asked(tenant: TenantFixture) -> None:
    post_id, token = _failed(tenant, "show me")
    done = _cli("posts", "show", post_id)
    assert done.returncode == 0, done.stderr
    heading, account, *lines = done.stdout.splitlines()
    assert heading == f"{post_id} in {tenant.organization_id} (instagram, publish)"
    assert account.startswith(f"account {tenant.accounts['instagram']} @")
    assert lines[0] == "events, oldest first (4):"
    scheduled, claimed, started, failed = (line.split() for line in lines[1:5])
    assert [e[1] for e in (scheduled, claimed, started, failed)] == [
        "post.scheduled",
        "post.claimed",
        "post.upload_started",
        "post.failed",
    ]
    # The caller's transition carries its key and request; the worker's carry the protocol.
    assert {"status=queued", f"key={tenant.key_id}", "request=test"} <= set(scheduled)
    assert {"status=publishing", f"token={token}", "owner=w1", "attempt=1"} <= set(claimed)
    assert not any(f.startswith(("key=", "request=")) for f in claimed)
    assert {"handle=c-1", "owner=w1"} <= set(started)
    assert "status=failed" in failed
    assert f'lastError="{UNKNOWN}: Instagram never said' in lines[4]
    assert lines[5] == "webhook deliveries (0):"
    now = lines[6:]
    assert now[0] == "now:"
    assert "  status: failed" in now
    assert "  attempts: 1" in now
    assert not any(line.startswith("  attemptedAt: -") for line in now)
    assert "  platformHandle: c-1" in now
    assert "  owner: -" in now
    assert "  externalId: -" in now
    assert f"  lastError: {UNKNOWN}: Instagram never said what became of the container" in now

    # Settled by an operator: the verdict is the newest line, with who decided and why.
    settled = _cli(*_settle_published(post_id))
    assert settled.returncode == 0, settled.stderr
    again = _cli("posts", "show", post_id).stdout.splitlines()
    assert again[2] == "events, oldest first (5):"
    last = again[7]
    assert "post.published" in last.split()
    assert "status=published externalId=17900000000000001" in last
    assert 'previous=failed settledBy=ops-1 request=cli:ops-1 reason="found the media' in last
    assert "key=" not in last
    assert "  status: published" in again


def test_show_json(tenant: TenantFixture, capsys: pytest.CaptureFixture[str]) -> None:
    post_id, token = _failed(tenant, "as json")
    assert main(["posts", "show", post_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    events = shown["events"]
    assert [e["type"] for e in events] == [
        "post.scheduled",
        "post.claimed",
        "post.upload_started",
        "post.failed",
    ]
    assert [e["id"] for e in events] == [e.public_id for e in _events(post_id)]
    assert (events[0]["actorKeyId"], events[0]["requestId"]) == (tenant.key_id, "test")
    assert events[1]["data"]["token"] == token and events[1]["requestId"] is None
    assert events[3]["data"]["lastError"]["code"] == UNKNOWN
    assert all(e["createdAt"].endswith("Z") for e in events)
    post = shown["post"]
    assert (post["id"], post["organizationId"], post["status"]) == (
        post_id,
        tenant.organization_id,
        "failed",
    )
    assert (post["attempts"], post["fencingToken"], post["platformHandle"]) == (1, token, "c-1")
    assert post["uploadStartedAt"] is not None and post["owner"] is None
    # The account to ask the platform with, never its credentials.
    assert post["account"]["id"] == tenant.accounts["instagram"]
    assert set(post["account"]) == {
        "id",
        "handle",
        "adapter",
        "platformUserId",
        "baseUrl",
        "status",
    }


def test_an_id_two_organizations_chose_needs_org(capsys: pytest.CaptureFixture[str]) -> None:
    acme, rival = make_tenant("Acme"), make_tenant("Rival")
    chosen = ids.new_id(ids.SCHEDULED_POST)
    acme_post, _ = _scheduled(acme, public_id=chosen)
    rival_post, _ = _scheduled(rival, public_id=chosen)
    assert acme_post != rival_post  # each organization's own internal key

    done = _cli("posts", "show", chosen)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert acme.organization_id in done.stderr and rival.organization_id in done.stderr
    assert "--org" in done.stderr
    line = _refused(["posts", "settle", chosen, "--failed", "--reason", "x"], capsys, code=2)
    assert acme.organization_id in line and rival.organization_id in line

    assert main(["posts", "show", chosen, "--org", rival.organization_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["post"]["id"] == chosen
    assert shown["post"]["internalId"] == rival_post
    assert shown["post"]["organizationId"] == rival.organization_id
    assert [e["type"] for e in shown["events"]] == ["post.scheduled"]


def test_an_unknown_id_is_one_line_and_exit_1(
    tenant: TenantFixture, other_tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = ids.new_id(ids.SCHEDULED_POST)
    assert missing in _refused(["posts", "show", missing], capsys)
    assert "no post not-an-id" in _refused(["posts", "show", "not-an-id"], capsys)
    post_id, _ = _failed(tenant, "elsewhere")
    # Another organization's post looks like a missing one.
    line = _refused(["posts", "show", post_id, "--org", other_tenant.organization_id], capsys)
    assert line == f"publisher: no post {post_id} in {other_tenant.organization_id}"
    assert "no post" in _refused([*_settle_failed(missing)], capsys)


# --- list -----------------------------------------------------------------------------------


def test_list_filters_by_status_and_code(
    tenant: TenantFixture, other_tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown, _ = _failed(tenant, "unknown")
    refused, _ = _failed(tenant, "refused", code="PLATFORM_ERROR")
    queued, _ = due_post(tenant, "queued", platform="tiktok")
    elsewhere, _ = _failed(other_tenant, "other org")

    def listed(*flags: str) -> list[dict[str, Any]]:
        assert main(["posts", "list", *flags, "--json"]) == 0
        items: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["items"]
        return items

    worklist = listed("--status", "failed", "--code", UNKNOWN)
    assert {i["id"] for i in worklist} == {unknown, elsewhere}
    assert {i["errorCode"] for i in worklist} == {UNKNOWN}
    mine = listed("--status", "failed", "--code", UNKNOWN, "--org", tenant.organization_id)
    assert [i["id"] for i in mine] == [unknown]
    assert mine[0] == {
        "organizationId": tenant.organization_id,
        "id": unknown,
        "platform": "instagram",
        "status": "failed",
        "scheduledFor": mine[0]["scheduledFor"],
        "errorCode": UNKNOWN,
    }
    assert {i["id"] for i in listed("--status", "failed")} == {unknown, refused, elsewhere}
    assert {i["id"] for i in listed("--status", "queued")} == {queued}
    both = listed("--status", "queued", "--status", "failed", "--org", tenant.organization_id)
    assert {i["id"] for i in both} == {unknown, refused, queued}
    assert listed("--code", "PLATFORM_ERROR")[0]["id"] == refused
    assert len(listed("--limit", "2")) == 2
    # Newest scheduledFor first.
    everything = listed()
    assert [i["scheduledFor"] for i in everything] == sorted(
        (i["scheduledFor"] for i in everything), reverse=True
    )

    done = _cli("posts", "list", "--status", "failed", "--code", UNKNOWN)
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    assert len(lines) == 2
    line = next(row for row in lines if unknown in row).split("  ")
    assert line[:4] == [tenant.organization_id, unknown, "instagram", "failed"]
    assert line[5] == UNKNOWN
    assert "PLATFORM_ERROR" not in done.stdout


def test_list_refuses_a_bad_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--limit" in _refused(["posts", "list", "--limit", "0"], capsys, code=2)


# --- settle ---------------------------------------------------------------------------------


def test_settle_published_records_the_platform_s_post(
    tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    post_id, token = _failed(tenant, "it went out")
    before = _row(post_id)
    assert main(_settle_published(post_id)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"settled {post_id} in {tenant.organization_id}: failed ({UNKNOWN})")
    assert f"-> published, externalId 17900000000000001; fencing token {token + 1}" in out
    post = _row(post_id)
    assert post.status == "published"
    assert (post.external_id, post.external_url) == (
        "17900000000000001",
        "https://www.instagram.com/p/abc/",
    )
    assert post.dispatch_version == before.dispatch_version + 1
    assert post.last_error is None and post.published_at is not None
    assert (post.owner, post.lease_expires_at, post.awaiting_since, post.poll_at) == (
        None,
        None,
        None,
        None,
    )
    event = _events(post_id)[-1]
    assert event.type == "post.published"
    assert (event.actor_key_id, event.request_id, event.reason) == (
        None,
        "cli:ops-1",
        "found the media in the account's list",
    )
    assert event.organization_id == tenant.organization_id
    assert event.data is not None
    assert (event.data["status"], event.data["externalId"], event.data["settledBy"]) == (
        "published",
        "17900000000000001",
        "ops-1",
    )
    assert event.data["previous"] == "failed" and "lastError" not in event.data


def test_settle_published_disarms_what_is_in_flight(tenant: TenantFixture) -> None:
    """A post stuck past the point of no return: the operator's verdict wins, and the worker
    or reconciler that wakes up later with the old token does nothing."""
    post_id, token = _stuck(tenant, "stuck")
    done = _cli(*_settle_published(post_id, "--json"))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["previous"] == {"status": "publishing", "errorCode": None}
    assert shown["settledBy"] == "ops-1"
    assert (shown["post"]["status"], shown["post"]["fencingToken"]) == ("published", token + 1)
    assert shown["post"]["owner"] is None and shown["post"]["leaseExpiresAt"] is None
    settled = _state(post_id)
    now = utcnow()
    with transaction() as tx:
        assert not posts.renew_lease(tx.session, post_id, token, "w1", now=now, lease=LEASE)
        assert not posts.record_failed(
            tx.session, post_id, token, code="X", message="late", platform_code=None, now=now
        )
        assert posts.take_for_reconcile(tx.session, post_id, token, now=now, lease=LEASE) is None
    assert _state(post_id) == settled


def test_settle_published_of_a_draft_mode_post_ends_draft(tenant: TenantFixture) -> None:
    post_id, token = _scheduled(tenant, mode=Mode.DRAFT)
    with transaction() as tx:
        claim = posts.claim(tx.session, post_id, token, "w1", now=utcnow(), lease=LEASE)
        assert claim.result == posts.ClaimResult.CLAIMED
    with transaction() as tx:
        assert posts.begin_upload(tx.session, post_id, token, "w1", now=utcnow(), lease=LEASE)
    with transaction() as tx:
        done = posts.settle(
            tx.session,
            tenant.organization_id,
            post_id,
            published=True,
            external_id="inbox-1",
            external_url=None,
            reason=None,
            operator="ops-3",
            now=utcnow(),
        )
        assert done.previous_status == "publishing"
    post = _row(post_id)
    assert (post.status, post.external_id, post.dispatch_version) == ("draft", "inbox-1", token + 1)
    event = _events(post_id)[-1]
    assert event.type == "post.published" and event.data is not None
    assert (event.data["status"], event.request_id, event.reason) == ("draft", "cli:ops-3", None)


def test_settle_failed(tenant: TenantFixture, capsys: pytest.CaptureFixture[str]) -> None:
    post_id, token = _stuck(tenant, "nothing went out")
    assert main(_settle_failed(post_id)) == 0
    out = capsys.readouterr().out
    assert "publishing -> failed (OPERATOR_SETTLED)" in out
    post = _row(post_id)
    assert post.status == "failed"
    assert post.last_error == {
        "code": "OPERATOR_SETTLED",
        "message": "container reads EXPIRED; nothing was published",
        "platformCode": None,
    }
    assert post.dispatch_version == token + 1
    assert (post.owner, post.lease_expires_at, post.external_id) == (None, None, None)
    event = _events(post_id)[-1]
    assert event.type == "post.failed"
    assert (event.actor_key_id, event.request_id, event.reason) == (
        None,
        "cli:ops-2",
        "container reads EXPIRED; nothing was published",
    )
    assert event.data is not None
    assert event.data["lastError"]["code"] == "OPERATOR_SETTLED"
    assert (event.data["settledBy"], event.data["previous"]) == ("ops-2", "publishing")
    # The worker that wakes up with the answer after the verdict records nothing.
    with transaction() as tx:
        assert not posts.record_uploaded(
            tx.session, post_id, external_id="late", external_url=None, now=utcnow()
        )
    assert _row(post_id).status == "failed"


def test_settle_failed_of_an_unknown_outcome(tenant: TenantFixture) -> None:
    post_id, token = _failed(tenant, "expired container")
    done = _cli(*_settle_failed(post_id, "--org", tenant.organization_id))
    assert done.returncode == 0, done.stderr
    assert f"failed ({UNKNOWN}) -> failed (OPERATOR_SETTLED)" in done.stdout
    post = _row(post_id)
    assert post.last_error is not None and post.last_error["code"] == "OPERATOR_SETTLED"
    assert post.dispatch_version == token + 1
    assert [e.type for e in _events(post_id)][-2:] == ["post.failed", "post.failed"]


def test_settle_is_refused_for_any_other_post_and_changes_nothing(
    tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    queued, _ = due_post(tenant, "queued", platform="tiktok")
    claimed, _ = _claimed(tenant, "claimed, not uploading yet")
    published = _published(tenant, "published")
    rejected, _ = _failed(tenant, "rejected", code="PLATFORM_ERROR")
    for post_id, shown in (
        (queued, "is queued"),
        (claimed, "is publishing"),
        (published, "is published"),
        (rejected, "is failed (PLATFORM_ERROR)"),
    ):
        before = _state(post_id)
        for argv in (_settle_published(post_id), _settle_failed(post_id)):
            line = _refused(argv, capsys)
            assert f"{post_id} {shown}" in line
            assert UNKNOWN in line
        assert _state(post_id) == before
    # As an operator sees it: exit 1, one line.
    done = _cli(*_settle_published(queued))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1 and "is queued" in done.stderr


def test_settling_twice_is_refused(
    tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = _failed(tenant, "once published")
    assert main(_settle_published(first)) == 0
    capsys.readouterr()
    settled = _state(first)
    assert "is published" in _refused(_settle_published(first), capsys)
    assert "is published" in _refused(_settle_failed(first), capsys)
    assert _state(first) == settled

    second, _ = _failed(tenant, "once failed")
    assert main(_settle_failed(second)) == 0
    capsys.readouterr()
    settled = _state(second)
    assert "is failed (OPERATOR_SETTLED)" in _refused(_settle_failed(second), capsys)
    assert "is failed (OPERATOR_SETTLED)" in _refused(_settle_published(second), capsys)
    assert _state(second) == settled


def test_settle_checks_its_input_before_touching_anything(
    tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    post_id, _ = _failed(tenant, "bad input")
    before = _state(post_id)
    assert "--external-id" in _refused(["posts", "settle", post_id, "--published"], capsys, 2)
    assert "--reason" in _refused(["posts", "settle", post_id, "--failed"], capsys, 2)
    mixed = ["posts", "settle", post_id, "--failed", "--reason", "r", "--external-id", "1"]
    assert "--published only" in _refused(mixed, capsys, 2)
    too_long = ["posts", "settle", post_id, "--published", "--external-id", "9" * 201]
    assert "longer than 200" in _refused(too_long, capsys, 2)
    nobody = [*_settle_failed(post_id)[:-2], "--operator", " "]
    assert "--operator" in _refused(nobody, capsys, 2)
    assert _state(post_id) == before


def test_show_lists_the_post_s_webhook_deliveries_with_their_attempts(
    tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its timeline ends with what reached each endpoint: every delivery, every attempt."""
    from chaos.receiver import Receiver, serving
    from shared.kit.settings import Settings
    from shared.models import WebhookDelivery
    from shared.webhooks import endpoints
    from shared.webhooks.deliveries import run_delivery

    with serving(Receiver(fail_first=1)) as rx:
        with transaction() as tx:
            made = endpoints.register(
                tx.session,
                tenant.organization_id,
                rx.url,
                ["post.scheduled", "post.failed"],
                None,
                settings=Settings(),
                now=utcnow(),
            )
        post_id, _ = _failed(tenant, "hooked")
        fast = Settings(webhook_retry_schedule_s="0,0")
        for _ in range(2):
            with new_session() as session:
                due = [(d.id, d.token) for d in session.scalars(select(WebhookDelivery))]
            for delivery_id, token in due:
                run_delivery(delivery_id, token, settings=fast)
    assert main(["posts", "show", post_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["webhookDeliveries"]
    assert [(d["type"], d["status"], d["endpointId"]) for d in shown] == [
        ("post.scheduled", "succeeded", made.endpoint.id),
        ("post.failed", "succeeded", made.endpoint.id),
    ]
    assert [[a["statusCode"] for a in d["attempts"]] for d in shown] == [[503, 200], [503, 200]]
    assert main(["posts", "show", post_id]) == 0
    out = capsys.readouterr().out
    assert "webhook deliveries (2):" in out
    assert "attempts: 503, 200" in out
