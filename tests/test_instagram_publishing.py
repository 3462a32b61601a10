"""The protocol on Instagram: the product's own publish, cancel and reconcile use cases against
the Instagram emulator over HTTP, with no idempotency key anywhere. Every post goes out at most
once, the container is the handle, and a cancel wins exactly while no `media_publish` began."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from harness.stack import wait_until
from shared.accounts.credentials import Credentials, seal, unseal
from shared.content.containers import create_container, get_project
from shared.events import Actor
from shared.kit.clock import utcnow
from shared.kit.db import new_session, transaction
from shared.kit.errors import Validation
from shared.kit.settings import Settings
from shared.models import AccountStatus, Mode, ScheduledPost, SocialAccount
from shared.publishing import posts
from shared.publishing.adapters import adapter_for
from shared.publishing.platforms import PlatformAdapter, UploadPayload
from shared.publishing.posts import CancelResult
from shared.publishing.protocol import Outcome, run_publish, run_reconcile
from shared.publishing.usecases import cancel_post
from tests.checks import detached
from tests.emulators import IMAGE, VIDEO, Served, due_post, instagram_tenant, served_instagram
from tests.factories import TenantFixture

# Short timeouts and backoffs: an ambiguous publish waits out its call's timeout (plus a
# second) before the platform is asked, and the emulator answers in milliseconds.
SETTINGS = Settings(
    lease_s=60,
    platform_timeout_s=1.0,
    platform_backoff_base_s=0.01,
    platform_backoff_cap_s=0.05,
    instagram_container_wait_s=20,
)
# For seeded fault runs: enough tries that no post runs out of them.
PATIENT = SETTINGS.model_copy(update={"platform_max_tries": 12})
OWNER = "test-worker"


@pytest.fixture
def ig() -> Iterator[Served]:
    with served_instagram(image_processing_s=0.05, video_processing_s=0.2, seed=7) as served:
        yield served


@pytest.fixture
def ig_tenant(ig: Served) -> TenantFixture:
    return instagram_tenant("Gram", ig.url)


def _row(post_id: str) -> ScheduledPost:
    return detached(ScheduledPost, post_id)


def _account(account_id: str) -> SocialAccount:
    return detached(SocialAccount, account_id)


def _publish(post_id: str, token: int, **kwargs: Any) -> Outcome:
    return run_publish(post_id, token, OWNER, settings=kwargs.pop("settings", SETTINGS), **kwargs)


def _actor(tenant: TenantFixture) -> Actor:
    return Actor(tenant.organization_id, tenant.key_id, "req-test")


def _captions(ig: Served) -> list[str]:
    return [entry["caption"] for entry in ig.ledger()]


def test_an_image_post_goes_out_through_its_container(ig: Served, ig_tenant: TenantFixture) -> None:
    post_id, token = due_post(ig_tenant, "first light #sunrise")
    assert _publish(post_id, token) == Outcome.PUBLISHED
    post = _row(post_id)
    [entry] = ig.ledger()
    assert post.status == "published"
    assert (entry["caption"], entry["mediaType"]) == ("first light #sunrise", "IMAGE")
    # The container is the handle, saved before the point of no return; the media id is ours.
    assert post.platform_handle == entry["containerId"]
    assert post.external_id == entry["externalId"]
    assert post.external_url and "instagram.emulator.example" in post.external_url


@pytest.mark.parametrize(
    ("media", "media_type"),
    [([VIDEO], "REELS"), ([IMAGE, VIDEO, IMAGE], "CAROUSEL")],
)
def test_reels_and_carousels(
    ig: Served, ig_tenant: TenantFixture, media: list[tuple[str, str]], media_type: str
) -> None:
    post_id, token = due_post(ig_tenant, f"a {media_type}", media)
    assert _publish(post_id, token) == Outcome.PUBLISHED
    [entry] = ig.ledger()
    assert entry["mediaType"] == media_type
    assert len(entry["mediaUrls"]) == len(media)


def test_a_cancel_while_the_container_processes_wins(ig: Served, ig_tenant: TenantFixture) -> None:
    ig.set_faults(video_processing_s=30)
    post_id, token = due_post(ig_tenant, "never to be seen", [VIDEO])
    outcome: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcome.append(_publish(post_id, token)))
    worker.start()
    platform = ig.app.state.platform
    wait_until(lambda: platform._containers, 10, what="the container to be created")
    done = cancel_post(_actor(ig_tenant), post_id, "changed my mind", now=utcnow())
    assert done.result == CancelResult.WON
    worker.join(timeout=30)
    assert outcome == [Outcome.CANCELED_BEFORE_UPLOAD]
    assert ig.ledger() == []
    assert _row(post_id).status == "canceled"


def test_a_cancel_after_media_publish_began_is_refused(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    ig.set_faults(publish_latency_ms=1500)
    post_id, token = due_post(ig_tenant, "going out")
    outcome: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcome.append(_publish(post_id, token)))
    worker.start()
    wait_until(lambda: _row(post_id).upload_started_at, 10, what="the point of no return")
    done = cancel_post(_actor(ig_tenant), post_id, "too late", now=utcnow())
    assert done.result == CancelResult.LOST_TO_UPLOAD
    worker.join(timeout=30)
    assert outcome == [Outcome.PUBLISHED]
    assert _captions(ig) == ["going out"]


@pytest.mark.parametrize("how", ["502", "cut"])
def test_a_lost_media_publish_answer_is_resolved_through_the_container(
    ig: Served, ig_tenant: TenantFixture, how: str
) -> None:
    """The publish went out and its answer was lost: the container says PUBLISHED and the
    media list holds it. Even a platform that would post a container twice posts once."""
    ig.set_faults(rate_lost_publish=1.0, lost_response=how, duplicate_publish="post")
    post_id, token = due_post(ig_tenant, f"lost answer {how}")
    assert _publish(post_id, token) == Outcome.PUBLISHED
    [entry] = ig.ledger()
    assert _row(post_id).external_id == entry["externalId"]


def test_publishes_that_failed_outright_are_retried_on_the_same_container(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    """500s with nothing posted: the container still reads FINISHED, so publishing it again is
    safe. Seeded, with a fixed account and instant containers: the same calls meet the same
    faults on every run."""
    ig.set_faults(rate_server_error_publish=0.5, rate_limited=0.1, image_processing_s=0)
    tenant = instagram_tenant("Retry", ig.url, user_id="17840000000000001")
    ids = [due_post(tenant, f"retry {i}") for i in range(6)]
    outcomes = [_publish(post_id, token, settings=PATIENT) for post_id, token in ids]
    assert outcomes == [Outcome.PUBLISHED] * 6
    assert sorted(_captions(ig)) == sorted(f"retry {i}" for i in range(6))


def test_a_container_that_errors_is_made_again(ig: Served) -> None:
    ig.set_faults(rate_container_error=0.5, image_processing_s=0)
    tenant = instagram_tenant("Errors", ig.url, user_id="17840000000000002")
    ids = [due_post(tenant, f"errors {i}") for i in range(4)]
    assert [_publish(p, t, settings=PATIENT) for p, t in ids] == [Outcome.PUBLISHED] * 4
    assert sorted(_captions(ig)) == sorted(f"errors {i}" for i in range(4))


def test_a_container_that_always_errors_fails_the_post_with_nothing_posted(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    ig.set_faults(rate_container_error=1.0)
    post_id, token = due_post(ig_tenant, "broken media")
    assert _publish(post_id, token) == Outcome.FAILED
    post = _row(post_id)
    assert post.last_error is not None and post.last_error["code"] == "PLATFORM_UNAVAILABLE"
    assert post.upload_started_at is None  # it failed before the point of no return
    assert ig.ledger() == []


class _SlowAfterPrepare:
    """The real adapter, with a pause between prepare and publish (the container expires)."""

    def __init__(self, inner: PlatformAdapter, pause: float) -> None:
        self.inner, self.pause, self.idempotent = inner, pause, inner.idempotent
        self.prepared = 0

    def prepare(self, key: str, payload: Any, wait: Any) -> Any:
        self.prepared += 1
        preparation = self.inner.prepare(key, payload, wait)
        if self.prepared == 1:
            wait(self.pause)
        return preparation

    def publish(self, key: str, payload: Any, handle: str | None) -> Any:
        return self.inner.publish(key, payload, handle)

    def lookup(self, key: str, payload: Any, handle: str | None, since: Any) -> Any:
        return self.inner.lookup(key, payload, handle, since)


def test_an_expired_container_is_replaced_and_the_new_one_saved(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    ig.set_faults(container_lifetime_s=0.5)
    post_id, token = due_post(ig_tenant, "expired container")

    def slow(account: SocialAccount, settings: Settings) -> PlatformAdapter:
        return _SlowAfterPrepare(adapter_for(account, settings), 0.8)

    assert _publish(post_id, token, make_adapter=slow) == Outcome.PUBLISHED
    [entry] = ig.ledger()
    post = _row(post_id)
    assert post.platform_handle == entry["containerId"]
    assert len(ig.app.state.platform._containers) == 2  # the expired one and its successor


def test_an_exhausted_quota_fails_the_post_before_the_point_of_no_return(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    ig.set_faults(quota_total=1)
    first, second = due_post(ig_tenant, "quota one"), due_post(ig_tenant, "quota two")
    assert _publish(*first) == Outcome.PUBLISHED
    assert _publish(*second) == Outcome.FAILED
    post = _row(second[0])
    assert post.last_error is not None
    assert post.last_error["code"] == "PLATFORM_QUOTA_EXHAUSTED"
    assert post.upload_started_at is None
    assert _captions(ig) == ["quota one"]


def test_two_posts_racing_for_the_last_quota_slot(ig: Served, ig_tenant: TenantFixture) -> None:
    """Both read a quota with one slot left; the account's row lock at the point of no return
    lets exactly one through, and the platform never has to refuse a publish."""
    ig.set_faults(quota_total=1, publish_latency_ms=300)
    ids = [due_post(ig_tenant, f"slot {i}") for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(lambda pt: _publish(*pt), ids))
    assert outcomes == sorted([Outcome.PUBLISHED, Outcome.FAILED])
    failed = next(_row(p) for p, _ in ids if _row(p).status == "failed")
    assert failed.last_error is not None
    assert failed.last_error["code"] == "PLATFORM_QUOTA_EXHAUSTED"
    assert failed.upload_started_at is None
    assert len(ig.ledger()) == 1


def test_an_expired_token_needs_reauthorization(ig: Served) -> None:
    ig.set_faults(token_lifetime_s=1.5)
    tenant = instagram_tenant("Expiring", ig.url)
    account_id = tenant.accounts["instagram"]
    creds = unseal(_account(account_id).credentials or b"")
    wait_until(
        lambda: (
            httpx.get(f"{ig.url}/me", params={"access_token": creds.access_token}).status_code
            == 400
        ),
        10,
        what="the token to expire",
    )
    first, second = due_post(tenant, "expired one"), due_post(tenant, "expired two")
    assert _publish(*first) == Outcome.FAILED
    assert _publish(*second) == Outcome.FAILED
    for post_id, _ in (first, second):
        post = _row(post_id)
        assert post.last_error is not None
        assert post.last_error["code"] == "ACCOUNT_REAUTH_REQUIRED"
        assert post.upload_started_at is None
    assert _account(account_id).status == AccountStatus.REAUTH_REQUIRED
    assert ig.ledger() == []


def test_a_token_the_platform_refuses_marks_the_account(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    """Our records say the token is good; Graph answers 190: the account needs reauth."""
    account_id = ig_tenant.accounts["instagram"]
    with transaction() as tx:
        account = tx.session.get(SocialAccount, account_id)
        assert account is not None
        account.credentials = seal(Credentials("IGAAnot-a-token"))
    post_id, token = due_post(ig_tenant, "bad token")
    assert _publish(post_id, token) == Outcome.FAILED
    post = _row(post_id)
    assert post.last_error is not None and post.last_error["code"] == "ACCOUNT_REAUTH_REQUIRED"
    assert post.last_error["platformCode"] == "190"
    assert _account(account_id).status == AccountStatus.REAUTH_REQUIRED


def test_a_token_near_its_expiry_is_refreshed_once(ig: Served) -> None:
    """Two posts of one account claim at once: one refresh under the account's row lock; the
    new token is stored sealed and both posts go out with it."""
    ig.set_faults(token_lifetime_s=3600, refresh_min_age_s=0)
    tenant = instagram_tenant("Refresh", ig.url)
    account_id = tenant.accounts["instagram"]
    with transaction() as tx:  # as if issued 59 minutes ago: a minute left
        row = tx.session.get(SocialAccount, account_id)
        assert row is not None and row.token_expires_at is not None
        row.token_refreshed_at = utcnow() - timedelta(minutes=59)
        row.token_expires_at = utcnow() + timedelta(minutes=1)
    before = _account(account_id)
    old_token = unseal(before.credentials or b"").access_token
    settings = SETTINGS.model_copy(update={"instagram_refresh_min_age_s": 0})
    ids = [due_post(tenant, f"fresh {i}") for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda pt: _publish(*pt, settings=settings), ids))
    assert outcomes == [Outcome.PUBLISHED] * 2
    after = _account(account_id)
    assert unseal(after.credentials or b"").access_token != old_token
    assert after.token_expires_at and before.token_expires_at
    assert after.token_expires_at > before.token_expires_at
    assert old_token.encode() not in (after.credentials or b"")
    # One refresh: the emulator issued exactly two tokens for this account.
    platform = ig.app.state.platform
    issued = [t for t in platform._tokens.values() if t.user_id == after.platform_user_id]
    assert len(issued) == 2


# The vanished worker's lease: long enough that a running stack's reaper (which shares the
# database in the integration tier) leaves the post to this test's own reaper call.
VANISHED_LEASE = timedelta(minutes=10)


def _past_the_point_of_no_return(tenant: TenantFixture, ig: Served, caption: str) -> str:
    """A post whose worker prepared the container, stamped the point of no return and then
    vanished: its lease is left to expire."""
    post_id, token = due_post(tenant, caption)
    with transaction() as tx:
        assert posts.claim(tx.session, post_id, token, OWNER, now=utcnow(), lease=VANISHED_LEASE)
    account = _account(tenant.accounts["instagram"])
    adapter = adapter_for(account, SETTINGS)
    payload = UploadPayload(
        account.id, "instagram", "publish", caption, [{"url": IMAGE[0], "type": "image"}], None
    )
    preparation = adapter.prepare(post_id, payload, lambda s: True)
    assert preparation is not None
    with transaction() as tx:
        assert posts.begin_upload(
            tx.session,
            post_id,
            token,
            OWNER,
            now=utcnow(),
            lease=VANISHED_LEASE,
            handle=preparation.handle,
        )
    return post_id


def _reap_and_reconcile(post_id: str) -> Outcome:
    """This test's reaper, run as if the vanished worker's lease had run out: the integration
    tier's running stack shares the database, and its reaper must not take the post first."""
    with transaction() as tx:
        reaped = posts.reap_expired(
            tx.session,
            now=utcnow() + VANISHED_LEASE + timedelta(seconds=1),
            lease=timedelta(seconds=60),
            max_attempts=5,
            limit=100,
        )
    [job] = [r for r in reaped.reconcile if r.post_id == post_id]
    return run_reconcile(post_id, job.token, settings=SETTINGS)


def test_reconcile_binds_the_containers_own_media_never_the_newest(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    post_id = _past_the_point_of_no_return(ig_tenant, ig, "the vanished worker's post")
    handle = _row(post_id).platform_handle
    account = _account(ig_tenant.accounts["instagram"])
    adapter = adapter_for(account, SETTINGS)
    payload = UploadPayload(account.id, "instagram", "publish", "x", [], None)
    ours = adapter.publish(post_id, payload, handle)  # it went out just before the worker died
    # A newer post of the same account, published after ours.
    newer_id, newer_token = due_post(ig_tenant, "someone else's later post")
    assert _publish(newer_id, newer_token) == Outcome.PUBLISHED
    assert _reap_and_reconcile(post_id) == Outcome.PUBLISHED
    post = _row(post_id)
    assert post.external_id == ours.external_id != _row(newer_id).external_id
    assert len(ig.ledger()) == 2


def test_reconcile_of_a_container_that_never_published_publishes_it_once(
    ig: Served, ig_tenant: TenantFixture
) -> None:
    post_id = _past_the_point_of_no_return(ig_tenant, ig, "died before media_publish")
    assert _reap_and_reconcile(post_id) == Outcome.PUBLISHED
    [entry] = ig.ledger()
    assert entry["containerId"] == _row(post_id).platform_handle
    assert _row(post_id).external_id == entry["externalId"]


def test_instagram_has_no_drafts(ig_tenant: TenantFixture) -> None:
    actor = _actor(ig_tenant)
    with transaction() as tx:
        project = get_project(tx.session, ig_tenant.organization_id, ig_tenant.project_id)
        container = create_container(tx.session, project, "draft?", [IMAGE], now=utcnow())
        with pytest.raises(Validation) as refused:
            posts.schedule(
                tx.session,
                actor,
                container,
                utcnow() + timedelta(hours=1),
                [posts.Target(ig_tenant.accounts["instagram"], mode=Mode.DRAFT)],
                now=utcnow(),
            )
    assert refused.value.details["issues"][0]["path"] == "targets[0].mode"
    with new_session() as session:
        assert session.scalars(select(ScheduledPost)).all() == []
