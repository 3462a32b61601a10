"""The protocol on TikTok: the product's publish, poll, cancel and reconcile use cases against
the TikTok emulator over HTTP. `init` is the point of no return and completion asynchronous:
the post waits `publishing` with its `publish_id` and no lease while polls ask, and a lost
`init` answer is never retried blind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest

from harness.stack import wait_until
from shared.accounts.accounts import emulator_tiktok_account
from shared.accounts.credentials import Credentials, seal, unseal
from shared.events import Actor
from shared.kit.clock import utcnow
from shared.kit.db import transaction
from shared.kit.settings import Settings
from shared.models import AccountStatus, Mode, ScheduledPost, SocialAccount
from shared.publishing import posts
from shared.publishing.posts import CancelResult
from shared.publishing.protocol import Outcome, run_poll, run_publish
from shared.publishing.usecases import cancel_post
from shared.tenancy.tenants import create_tenant
from tests.checks import detached
from tests.emulators import IMAGE, VIDEO, Served, due_post, served_tiktok
from tests.factories import TenantFixture, fixture_of

SETTINGS = Settings(
    lease_s=60,
    platform_timeout_s=1.0,
    platform_backoff_base_s=0.01,
    platform_backoff_cap_s=0.05,
    poll_first_s=0.1,
    poll_cap_s=0.2,
)
OWNER = "test-worker"


@pytest.fixture
def tt() -> Iterator[Served]:
    # The per-token limits (30 status reads a minute) are the emulator's own tests' business;
    # here polls come every 0.1-0.2 s.
    with served_tiktok(
        processing_s=0.3, moderation_s=0.2, seed=3, enforce_rate_limits=False
    ) as served:
        yield served


def tiktok_tenant(name: str, url: str) -> TenantFixture:
    issued = emulator_tiktok_account(url, timeout=5)
    with transaction() as tx:
        t = create_tenant(
            tx.session,
            name,
            ["tiktok", "instagram"],
            sandbox_url="http://127.0.0.1:8900",
            issued={"tiktok": issued},
        )
    return fixture_of(t)


@pytest.fixture
def tok(tt: Served) -> TenantFixture:
    return tiktok_tenant("Tok", tt.url)


def _row(post_id: str) -> ScheduledPost:
    return detached(ScheduledPost, post_id)


def _account(account_id: str) -> SocialAccount:
    return detached(SocialAccount, account_id)


def _due(tenant: TenantFixture, caption: str, media: Any = None, mode: Mode = Mode.PUBLISH) -> Any:
    post_id, token = due_post(tenant, caption, media or [VIDEO], platform="tiktok")
    if mode == Mode.DRAFT:
        with transaction() as tx:
            row = tx.session.get(ScheduledPost, post_id)
            assert row is not None
            row.mode = mode.value
    return post_id, token


def _until_done(post_id: str, settings: Settings = SETTINGS) -> Outcome:
    """Run the poll task the way the worker would: each poll under the token it was armed
    with, until the post is no longer awaiting the platform."""
    outcome = Outcome.AWAITING_PLATFORM
    deadline = utcnow() + timedelta(seconds=30)
    while outcome == Outcome.AWAITING_PLATFORM:
        assert utcnow() < deadline, "the platform never completed the post"
        row = _row(post_id)
        due = min(row.poll_at or utcnow(), utcnow() + timedelta(seconds=1))
        wait_until(lambda: utcnow() >= due, 5, interval=0.02, what="the poll's time")  # noqa: B023
        outcome = run_poll(post_id, row.dispatch_version, settings=settings)
    return outcome


def test_a_video_goes_public_through_asynchronous_processing(
    tt: Served, tok: TenantFixture
) -> None:
    post_id, token = _due(tok, "a tiktok video #fyp")
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.AWAITING_PLATFORM
    waiting = _row(post_id)
    [entry] = tt.ledger()
    assert waiting.status == "publishing" and waiting.upload_started_at is not None
    assert waiting.platform_handle == entry["containerId"]  # the publish_id, saved at once
    assert waiting.lease_expires_at is None and waiting.awaiting_since is not None
    assert _until_done(post_id) == Outcome.PUBLISHED
    post = _row(post_id)
    [entry] = tt.ledger()
    assert post.status == "published"
    assert post.external_id == entry["externalId"] != entry["containerId"]
    assert entry["caption"] == "a tiktok video #fyp"


def test_a_draft_goes_to_the_inbox(tt: Served, tok: TenantFixture) -> None:
    post_id, token = _due(tok, "for the inbox", mode=Mode.DRAFT)
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.AWAITING_PLATFORM
    assert _until_done(post_id) == Outcome.PUBLISHED
    assert _row(post_id).status == "draft"
    [entry] = tt.ledger()
    assert entry["inbox"] is True


def test_photos_are_posted_with_their_caption(tt: Served, tok: TenantFixture) -> None:
    post_id, token = _due(tok, "three photos", media=[IMAGE, IMAGE, IMAGE])
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.AWAITING_PLATFORM
    assert _until_done(post_id) == Outcome.PUBLISHED
    [entry] = tt.ledger()
    assert (entry["mediaType"], entry["caption"]) == ("PHOTO", "three photos")


def test_a_cancel_during_the_creator_check_wins(tt: Served, tok: TenantFixture) -> None:
    tt.set_faults(latency_ms=3000)  # the creator check takes 3 s: the cancel lands inside it
    post_id, token = _due(tok, "never posted")
    outcome: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: outcome.append(run_publish(post_id, token, OWNER, settings=SETTINGS))
    )
    worker.start()
    wait_until(lambda: _row(post_id).status == "publishing", 10, what="the claim")
    actor = Actor(tok.organization_id, tok.key_id, "req")
    assert cancel_post(actor, post_id, "stop", now=utcnow()).result == CancelResult.WON
    worker.join(timeout=30)
    assert outcome == [Outcome.CANCELED_BEFORE_UPLOAD]
    assert tt.ledger() == []


def test_a_privacy_level_the_creator_lacks_fails_before_init(tt: Served) -> None:
    body = httpx.post(
        f"{tt.url}/emulator/accounts", json={"privacyLevelOptions": ["SELF_ONLY"]}
    ).json()
    tenant = tiktok_tenant("Private", tt.url)
    with transaction() as tx:  # bind the tenant's account to the private creator
        row = tx.session.get(SocialAccount, tenant.accounts["tiktok"])
        assert row is not None
        row.platform_user_id = body["openId"]
        row.credentials = seal(Credentials(body["accessToken"], body["refreshToken"]))
    post_id, token = _due(tenant, "public please")
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.FAILED
    post = _row(post_id)
    assert post.last_error is not None
    assert post.last_error["platformCode"] == "privacy_level_option_mismatch"
    assert post.upload_started_at is None
    assert tt.ledger() == []


def test_a_post_tiktok_fails_ends_failed_with_its_reason(tt: Served, tok: TenantFixture) -> None:
    tt.set_faults(rate_fail=1.0, fail_reason="spam_risk_text")
    post_id, token = _due(tok, "flagged")
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.AWAITING_PLATFORM
    assert _until_done(post_id) == Outcome.FAILED
    post = _row(post_id)
    assert post.last_error is not None
    assert (post.last_error["code"], post.last_error["platformCode"]) == (
        "PLATFORM_ERROR",
        "spam_risk_text",
    )


def test_a_lost_init_answer_is_found_in_the_video_list(tt: Served, tok: TenantFixture) -> None:
    tt.set_faults(rate_lost_init=1.0, processing_s=0, moderation_s=0)
    post_id, token = _due(tok, "lost but public")
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.PUBLISHED
    [entry] = tt.ledger()
    assert _row(post_id).external_id == entry["externalId"]


def test_a_lost_init_answer_nobody_can_confirm_is_outcome_unknown(
    tt: Served, tok: TenantFixture
) -> None:
    """Still processing, so not listed: it may exist. Failed for an operator, never a second
    init."""
    tt.set_faults(rate_lost_init=1.0, processing_s=60)
    post_id, token = _due(tok, "lost and processing")
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.FAILED
    post = _row(post_id)
    assert post.last_error is not None and post.last_error["code"] == "UPLOAD_OUTCOME_UNKNOWN"
    assert len(tt.ledger()) == 1


def test_the_reaper_leaves_an_awaiting_post_alone_and_a_lost_poll_is_rearmed(
    tt: Served, tok: TenantFixture
) -> None:
    tt.set_faults(processing_s=0.2)
    post_id, token = _due(tok, "awaiting")
    assert run_publish(post_id, token, OWNER, settings=SETTINGS) == Outcome.AWAITING_PLATFORM
    later = utcnow() + timedelta(hours=5)  # moderation can take hours
    with transaction() as tx:
        reaped = posts.reap_expired(
            tx.session, now=later, lease=timedelta(seconds=60), max_attempts=5, limit=100
        )
    assert post_id not in [r.post_id for r in reaped.reconcile + reaped.requeued]
    with transaction() as tx:
        [poll] = [
            p
            for p in posts.rearm_lost_polls(
                tx.session, now=later, grace=timedelta(seconds=15), limit=100
            )
            if p.post_id == post_id
        ]
    assert poll.token == token + 1
    assert run_poll(post_id, token, settings=SETTINGS) == Outcome.STALE  # the lost one
    assert _until_done(post_id) == Outcome.PUBLISHED


def test_two_workers_spend_a_rotating_refresh_token_once(tt: Served) -> None:
    tt.set_faults(rotate_refresh_tokens=True)
    tenant = tiktok_tenant("Rotating", tt.url)
    account_id = tenant.accounts["tiktok"]
    with transaction() as tx:  # as if issued 23 hours ago: an hour left
        row = tx.session.get(SocialAccount, account_id)
        assert row is not None
        row.token_refreshed_at = utcnow() - timedelta(hours=23)
        row.token_expires_at = utcnow() + timedelta(hours=1)
    before = unseal(_account(account_id).credentials or b"")
    ids = [_due(tenant, f"rotate {i}") for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(
            pool.map(lambda pt: run_publish(pt[0], pt[1], OWNER, settings=SETTINGS), ids)
        )
    assert outcomes == [Outcome.AWAITING_PLATFORM] * 2
    after = _account(account_id)
    creds = unseal(after.credentials or b"")
    assert after.status == AccountStatus.CONNECTED
    assert creds.refresh_token != before.refresh_token
    assert creds.access_token != before.access_token


def test_a_refresh_whose_answer_was_never_saved_is_reported(tt: Served) -> None:
    """The refresh token was spent (the worker crashed before saving the answer): the next
    refresh is refused and the account needs reauth, said out loud."""
    tt.set_faults(rotate_refresh_tokens=True)
    tenant = tiktok_tenant("Crashed", tt.url)
    account_id = tenant.accounts["tiktok"]
    creds = unseal(_account(account_id).credentials or b"")
    spent = httpx.post(
        f"{tt.url}/v2/oauth/token/",
        data={
            "grant_type": "refresh_token",
            "refresh_token": creds.refresh_token or "",
            "client_key": SETTINGS.tiktok_client_key,
            "client_secret": SETTINGS.tiktok_client_secret,
        },
    )
    assert spent.status_code == 200, spent.text
    with transaction() as tx:
        row = tx.session.get(SocialAccount, account_id)
        assert row is not None
        row.token_refreshed_at = utcnow() - timedelta(hours=23)
        row.token_expires_at = utcnow() + timedelta(hours=1)
    post_id, token = _due(tenant, "after the crash")
    run_publish(post_id, token, OWNER, settings=SETTINGS)
    account = _account(account_id)
    assert account.status == AccountStatus.REAUTH_REQUIRED
    assert account.status_reason and "invalid_grant" in account.status_reason
