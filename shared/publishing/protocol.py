"""The publish protocol, step by step (docs/design.md): claim, prepare, point of no return,
upload, record. Each step that touches the row is one short transaction; none is held
open across the platform call."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any

from shared.accounts import tokens
from shared.content.containers import payload_source
from shared.kit import failpoints, logs, metrics
from shared.kit.clock import utcnow
from shared.kit.db import Tx, run_in_transaction
from shared.kit.settings import Settings, get_settings
from shared.models import AccountStatus, ScheduledPost, SocialAccount
from shared.publishing import posts, usecases
from shared.publishing.adapters import adapter_for, refresh_min_age, refresh_token
from shared.publishing.platforms import (
    Accepted,
    CompletesLater,
    Completion,
    CompletionState,
    PlatformAdapter,
    PlatformError,
    Preparation,
    Uploaded,
    UploadPayload,
)
from shared.publishing.tasks import send_delivery, send_poll, send_publish, send_reconcile
from shared.webhooks import deliveries

log = logging.getLogger("publisher.worker")

# An ETA task fires on time; this bounds how often a task that fired early waits and retries.
MAX_EARLY_WAITS = 5


class Outcome(StrEnum):
    PUBLISHED = "published"
    FAILED = "failed"
    STALE = "stale"  # the post moved on (canceled, rescheduled, re-dispatched, done)
    AWAITING_PLATFORM = "awaiting_platform"  # accepted; the platform completes it, polls ask
    CANCELED_BEFORE_UPLOAD = "canceled_before_upload"
    WAITING_FOR_PLATFORM = "waiting_for_platform"  # the platform is down; tried again later


# An irreversible call starts only with this much lease left beyond its own timeout.
LEASE_MARGIN_S = 5.0
# After an ambiguous irreversible call, wait this much beyond its timeout before asking.
SETTLE_MARGIN_S = 1.0


@dataclass(frozen=True)
class Prepared:
    payload: UploadPayload
    adapter: PlatformAdapter
    account_id: str


AdapterFactory = Callable[[SocialAccount, Settings], PlatformAdapter]


@dataclass(frozen=True)
class _Failure:
    code: str
    message: str
    platform_code: str | None
    # The platform was not there (every try failed transiently, or it could not be asked):
    # the post may wait for it rather than fail (`_record_or_wait`).
    outage: bool = False


class _Lost(Exception):
    """The post is no longer ours (canceled, reaped, re-dispatched): stop, touch nothing."""


class _Lease:
    """Our lease on the post as our own monotonic clock sees it, renewed in the database.

    A fencing token cannot stop a platform call, so time must: an irreversible call starts
    only while the lease outlasts the call's timeout (docs/design.md)."""

    def __init__(self, post_id: str, token: int, owner: str, settings: Settings) -> None:
        self.post_id, self.token, self.owner = post_id, token, owner
        self.lease_s = settings.lease_s
        self.deadline = time.monotonic() + self.lease_s

    def restart(self, since: float) -> None:
        """The database just set our lease to a full term, asked at monotonic `since`."""
        self.deadline = since + self.lease_s

    def renew(self) -> bool:
        since = time.monotonic()
        ours = run_in_transaction(
            lambda tx: posts.renew_lease(
                tx.session,
                self.post_id,
                self.token,
                self.owner,
                now=utcnow(),
                lease=timedelta(seconds=self.lease_s),
            )
        )
        if ours:
            self.restart(since)
        return ours

    def wait(self, seconds: float) -> bool:
        """Pause, renewing the lease on the way: False once the post is no longer ours (a
        cancel won, or the reaper took it)."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            time.sleep(max(0.0, min(left, self.lease_s / 3)))
            if not self.renew():
                return False
            if left <= self.lease_s / 3:
                return True

    def ensure(self, needed_s: float) -> None:
        """At least `needed_s` of lease left, renewing if short; _Lost if we lost the post."""
        if self.deadline - time.monotonic() < needed_s and not self.renew():
            raise _Lost


def _default_adapter(account: SocialAccount, settings: Settings) -> PlatformAdapter:
    return adapter_for(account, settings)


def _account_failure(account: SocialAccount) -> _Failure | None:
    if account.status == AccountStatus.CONNECTED:
        return None
    if account.status == AccountStatus.DISCONNECTED:
        return _Failure("ACCOUNT_DISCONNECTED", "The social account was disconnected", None)
    return _Failure(
        "ACCOUNT_REAUTH_REQUIRED",
        "The social account must be reconnected: "
        + (account.status_reason or "its token no longer works"),
        None,
    )


Sources = tuple[SocialAccount, dict[str, Any]]


def _sources(tx: Tx, post: ScheduledPost) -> Sources:
    """The post's account and the container fields its upload needs."""
    return payload_source(tx.session, post.social_account_id, post.container_id)


def _prepare(
    post: ScheduledPost,
    make_adapter: AdapterFactory,
    settings: Settings,
    sources: Sources | None = None,
) -> Prepared | _Failure:
    """Build the payload from the post, its container and account (`sources` if the caller
    read them already), refreshing the account's token if it is about to expire. No post
    lock held."""
    account, source = sources or run_in_transaction(lambda tx: _sources(tx, post))
    if account.status == AccountStatus.CONNECTED and tokens.refresh_due(
        account, settings, utcnow()
    ):
        account = tokens.ensure_fresh(
            account,
            settings,
            lambda a: refresh_token(a, settings),
            refresh_min_age(account, settings),
        )
    if failure := _account_failure(account):
        return failure
    payload = UploadPayload(
        account_id=account.id,
        platform=post.platform,
        mode=post.mode,
        caption=post.caption_override if post.caption_override is not None else source["caption"],
        media=source["media"],
        first_comment=post.first_comment_override,
    )
    return Prepared(payload, make_adapter(account, settings), account.id)


def backoff(attempt: int, settings: Settings, retry_after: float | None = None) -> float:
    """Capped exponential backoff with jitter (half to all of the step); a platform's
    Retry-After wins if longer."""
    ceiling = min(settings.platform_backoff_cap_s, settings.platform_backoff_base_s * 2**attempt)
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 60.0))
    return delay


def _count_error(exc: PlatformError) -> str:
    kind = "permanent" if not exc.transient else "ambiguous" if exc.ambiguous else "transient"
    metrics.PLATFORM_ERRORS.labels(kind).inc()
    return kind


def _refused(prepared: Prepared, exc: PlatformError) -> _Failure:
    """A final refusal: the post fails with the error's code; a dead token marks the account."""
    if exc.token_invalid:
        run_in_transaction(
            lambda tx: tokens.mark_reauth_required(
                tx.session, prepared.account_id, str(exc), exc.platform_code
            )
        )
    return _Failure(exc.failure_code or "PLATFORM_ERROR", str(exc), exc.platform_code)


def prepare_with_retries(
    prepared: Prepared, key: str, settings: Settings, lease: _Lease
) -> Preparation | _Failure:
    """The reversible work before the point of no return, retried on transient errors (a
    lost container answer only leaves an unused container behind). _Lost if a cancel won."""
    last: PlatformError | None = None
    for attempt in range(settings.platform_max_tries):
        lease.ensure(settings.platform_timeout_s + LEASE_MARGIN_S)
        try:
            preparation = prepared.adapter.prepare(key, prepared.payload, lease.wait)
        except PlatformError as exc:
            last = exc
            _count_error(exc)
            if not exc.transient:
                return _refused(prepared, exc)
            log.info(
                "platform error while preparing",
                extra={"postId": key, "attempt": attempt + 1, "error": str(exc)},
            )
            if not lease.wait(backoff(attempt, settings, exc.retry_after)):
                raise _Lost from exc
            continue
        if preparation is None:
            raise _Lost
        return preparation
    return _unavailable(last, settings)


def _unavailable(last: PlatformError | None, settings: Settings) -> _Failure:
    """Every try failed transiently: nothing was published, the platform was just not there."""
    return _Failure(
        "PLATFORM_UNAVAILABLE",
        f"The platform kept failing after {settings.platform_max_tries} tries: {last}",
        last.platform_code if last else None,
        outage=last is not None and last.unavailable,
    )


class _Unknown(Exception):
    """The platform may or may not hold the post, and could not say which: `outage` if it was
    not there to ask (it may say later), else it answered that it cannot tell."""

    def __init__(self, outage: bool) -> None:
        super().__init__("the platform could not say")
        self.outage = outage


def _resolve(
    prepared: Prepared, key: str, handle: str | None, since: datetime, settings: Settings
) -> Uploaded | None:
    """Ask the platform whether this publish made a post; _Unknown if it never answers."""
    outage = False
    for attempt in range(settings.platform_max_tries):
        try:
            return prepared.adapter.lookup(key, prepared.payload, handle, since)
        except PlatformError as exc:
            log.warning("platform lookup failed", extra={"postId": key, "error": str(exc)})
            outage = exc.unavailable
            time.sleep(backoff(attempt, settings, exc.retry_after))
    raise _Unknown(outage)


def _outcome_unknown(platform_code: str | None, *, outage: bool = False) -> _Failure:
    """`outage`: the platform's lookup kept failing (it may answer later); else nobody can
    ask it (the account is unusable)."""
    return _Failure(
        "UPLOAD_OUTCOME_UNKNOWN",
        "The platform may hold this post and could not confirm it",
        platform_code,
        outage=outage,
    )


def _settle(started: float, settings: Settings, lease: _Lease) -> None:
    """Let an ambiguous call's timeout pass, so it cannot still land after we ask."""
    wait = started + settings.platform_timeout_s + SETTLE_MARGIN_S - time.monotonic()
    if wait > 0 and not lease.wait(wait):
        raise _Lost


@dataclass
class Publication:
    """One post's irreversible step: the key, the platform's handle, when it was attempted."""

    key: str
    handle: str | None
    since: datetime
    # A publish call may already have been made for it (by a worker the reaper replaced):
    # then even a refusal is checked against the platform's lookup before the post fails.
    maybe_landed: bool = False


def publish_with_retries(
    prepared: Prepared, pub: Publication, settings: Settings, lease: _Lease
) -> Uploaded | Accepted | _Failure:
    """Publish until it lands or fails for good; never a blind second irreversible call.

    Transient errors retry with backoff; final ones fail at once. An ambiguous answer (the
    platform may have acted) is resolved through the platform's own lookup, after the call
    can no longer land on a platform without an idempotency key: found is success, confirmed
    absent a retry, no answer UPLOAD_OUTCOME_UNKNOWN. A spent handle (an expired container)
    is replaced by a new one, persisted first. _Lost if the post stops being ours.
    """
    adapter = prepared.adapter
    last: PlatformError | None = None
    maybe_landed = pub.maybe_landed
    for attempt in range(settings.platform_max_tries):
        lease.ensure(settings.platform_timeout_s + LEASE_MARGIN_S)
        started = time.monotonic()
        try:
            return adapter.publish(pub.key, prepared.payload, pub.handle)
        except PlatformError as exc:
            last = exc
            kind = _count_error(exc)
            log.info(
                "platform error",
                extra={"postId": pub.key, "attempt": attempt + 1, "kind": kind, "error": str(exc)},
            )
            if exc.ambiguous or (maybe_landed and not exc.transient):
                # A refusal after any ambiguous try may mean "already published": ask first.
                maybe_landed = True
                if not adapter.idempotent:
                    _settle(started, settings, lease)
                try:
                    found = _resolve(prepared, pub.key, pub.handle, pub.since, settings)
                except _Unknown as unknown:
                    return _outcome_unknown(exc.platform_code, outage=unknown.outage)
                if found is not None:
                    return found
            if exc.new_handle:
                _renew_handle(prepared, pub, settings, lease)
                continue
            if not exc.transient:
                return _refused(prepared, exc)
            if not lease.wait(backoff(attempt, settings, exc.retry_after)):
                raise _Lost from exc
    # Every try failed; the last ones may still have landed. Ask once more before failing.
    try:
        found = _resolve(prepared, pub.key, pub.handle, pub.since, settings)
    except _Unknown as unknown:
        return _outcome_unknown(last.platform_code if last else None, outage=unknown.outage)
    if found is not None:
        return found
    return _unavailable(last, settings)


def _renew_handle(prepared: Prepared, pub: Publication, settings: Settings, lease: _Lease) -> None:
    """The platform says the handle is spent and nothing went out with it: prepare again and
    persist the new handle before it is published."""
    preparation = prepare_with_retries(prepared, pub.key, settings, lease)
    if isinstance(preparation, _Failure) or preparation.handle is None:
        raise _HandleFailed(preparation if isinstance(preparation, _Failure) else None)
    handle = preparation.handle
    saved = run_in_transaction(
        lambda tx: posts.save_handle(tx.session, pub.key, lease.token, lease.owner, handle)
    )
    if not saved:
        raise _Lost
    pub.handle = handle


class _HandleFailed(Exception):
    def __init__(self, failure: _Failure | None) -> None:
        super().__init__("could not prepare a new handle")
        self.failure = failure or _Failure(
            "PLATFORM_ERROR", "The platform gave no new handle", None
        )


def _publish_and_record(
    post: ScheduledPost,
    token: int,
    prepared: Prepared,
    pub: Publication,
    settings: Settings,
    lease: _Lease,
) -> Outcome:
    """Steps 5 and 6: the irreversible call, then record the outcome."""
    post_id = post.id
    try:
        result = publish_with_retries(prepared, pub, settings, lease)
    except _HandleFailed as exc:
        result = exc.failure
    except _Lost:
        log.warning("lost the post mid-publish; the reconciler decides", extra={"postId": post_id})
        return Outcome.STALE
    failpoints.hit("after_upload", post_id)
    return _record_or_wait(post, token, result, lease.owner, settings)


def _outage_retry_at(scheduled_for: datetime, settings: Settings) -> datetime | None:
    """When a post the platform was down for tries again: after about as long as it is
    already late (half to all of it, so a recovering platform is not met by every waiting
    post at once), within the settings' bounds. None once it is too late to wait more."""
    now = utcnow()
    late = (now - scheduled_for).total_seconds()
    if late >= settings.platform_outage_max_delay_s:
        return None
    wait = min(settings.platform_outage_retry_cap_s, max(late, settings.platform_backoff_cap_s))
    return now + timedelta(seconds=random.uniform(wait / 2, wait))


def _record_or_wait(
    post: ScheduledPost,
    token: int,
    result: Uploaded | Accepted | _Failure,
    owner: str,
    settings: Settings,
) -> Outcome:
    """Record the outcome; but a post the platform was down for waits for it, up to the
    settings' maximum delay, instead of failing (posts.wait_for_platform)."""
    retry_at = None
    if isinstance(result, _Failure) and result.outage:
        retry_at = _outage_retry_at(post.scheduled_for, settings)
    if retry_at is None:
        return _record(post.id, token, result, owner, settings)
    assert isinstance(result, _Failure)
    reason = f"{result.code}: {result.message}"
    waiting = run_in_transaction(
        lambda tx: posts.wait_for_platform(
            tx.session, post.id, token, owner, now=utcnow(), retry_at=retry_at, reason=reason
        )
    )
    if waiting is None:
        return Outcome.STALE
    metrics.PLATFORM_WAITS.labels(waiting.value).inc()
    logs.transition(
        post.id,
        post.organization_id,
        f"publishing:waiting_for_platform ({waiting.value})",
        retryAt=retry_at.isoformat(),
        code=result.code,
    )
    return Outcome.WAITING_FOR_PLATFORM


def _record(
    post_id: str,
    token: int,
    result: Uploaded | Accepted | _Failure,
    owner: str = "",
    settings: Settings | None = None,
) -> Outcome:
    if isinstance(result, Accepted):
        return _record_accepted(post_id, token, owner, result, settings or get_settings())
    if isinstance(result, Uploaded):
        uploaded = run_in_transaction(
            lambda tx: posts.record_uploaded(
                tx.session,
                post_id,
                external_id=result.external_id,
                external_url=result.external_url,
                now=utcnow(),
            )
        )
        if uploaded is posts.Recorded.NOW:
            logs.transition(post_id, None, "publishing->published", externalId=result.external_id)
        elif uploaded is posts.Recorded.ALREADY:
            # A late record (a partitioned worker back after the reaper's reconciler): the
            # change was made, by another; nothing was written.
            log.info(
                "already recorded with this platform post",
                extra={"postId": post_id, "externalId": result.external_id},
            )
        return Outcome.PUBLISHED
    recorded = run_in_transaction(
        lambda tx: posts.record_failed(
            tx.session,
            post_id,
            token,
            code=result.code,
            message=result.message,
            platform_code=result.platform_code,
            now=utcnow(),
        )
    )
    if recorded:
        logs.transition(
            post_id, None, "publishing->failed", code=result.code, platformCode=result.platform_code
        )
    return Outcome.FAILED


def _record_accepted(
    post_id: str, token: int, owner: str, accepted: Accepted, settings: Settings
) -> Outcome:
    """Save the platform's handle in the first commit after its answer, and arm the poll."""

    def step(tx: Tx) -> posts.Poll | None:
        poll = posts.record_accepted(
            tx.session,
            post_id,
            token,
            owner,
            handle=accepted.handle,
            now=utcnow(),
            first_poll=timedelta(seconds=settings.poll_first_s),
        )
        if poll is not None:
            tx.after_commit(partial(send_poll, poll))
        return poll

    if run_in_transaction(step) is not None:
        logs.transition(post_id, None, "publishing:awaiting_platform", handle=accepted.handle)
    return Outcome.AWAITING_PLATFORM


def run_publish(
    post_id: str,
    token: int,
    owner: str,
    *,
    make_adapter: AdapterFactory = _default_adapter,
    settings: Settings | None = None,
) -> Outcome:
    """Carry one post from `queued` to a terminal state, or stop where the row says to."""
    outcome = _publish(post_id, token, owner, make_adapter, settings or get_settings())
    metrics.PUBLISHES.labels(outcome.value).inc()
    return outcome


def _publish(
    post_id: str, token: int, owner: str, make_adapter: AdapterFactory, settings: Settings
) -> Outcome:
    lease_td = timedelta(seconds=settings.lease_s)
    failpoints.hit("before_claim", post_id)

    # 2. Claim under the row lock (step 1, dispatch, sent this task), reading the account and
    # the container in the same transaction.
    def claim(tx: Tx) -> tuple[posts.Claim, Sources | None]:
        claimed = posts.claim(tx.session, post_id, token, owner, now=utcnow(), lease=lease_td)
        if claimed.post is None:
            return claimed, None
        return claimed, _sources(tx, claimed.post)

    for _ in range(MAX_EARLY_WAITS):
        since = time.monotonic()
        claimed, sources = run_in_transaction(claim)
        if claimed.result != posts.ClaimResult.EARLY:
            break
        time.sleep(min(claimed.wait.total_seconds(), settings.dispatch_horizon_s))
    post = claimed.post
    if post is None or sources is None:
        log.info("stale task, nothing to do", extra={"postId": post_id, "token": token})
        return Outcome.STALE
    lease = _Lease(post_id, token, owner, settings)
    lease.restart(since)
    logs.transition(
        post_id, post.organization_id, "queued->publishing", owner=owner, attempt=post.attempts
    )

    # 3. Prepare: reversible work only. A cancel arriving now still wins.
    failpoints.hit("after_claim", post_id)
    prepared = _prepare(post, make_adapter, settings, sources)
    if isinstance(prepared, _Failure):
        return _record(post_id, token, prepared)
    quota_read_at = utcnow()
    try:
        preparation = prepare_with_retries(prepared, post_id, settings, lease)
    except _Lost:
        log.info("canceled while preparing", extra={"postId": post_id})
        return Outcome.CANCELED_BEFORE_UPLOAD
    if isinstance(preparation, _Failure):
        return _record_or_wait(post, token, preparation, owner, settings)
    failpoints.hit("after_prepare", post_id)

    # 4. The point of no return; the platform's handle is saved with it.
    def point_of_no_return(tx: Tx) -> posts.Begin:
        begun = posts.begin_upload(
            tx.session,
            post_id,
            token,
            owner,
            now=utcnow(),
            lease=lease_td,
            handle=preparation.handle,
            quota=preparation.quota,
            quota_read_at=quota_read_at,
        )
        # Inside the transaction, holding the row lock: race tests widen this moment.
        failpoints.hit("at_point_of_no_return", post_id)
        return begun

    since = time.monotonic()
    begun = run_in_transaction(point_of_no_return)
    if begun.quota_exhausted:
        logs.transition(post_id, post.organization_id, "publishing->failed", code="QUOTA")
        return Outcome.FAILED
    if not begun:
        log.info("canceled before upload", extra={"postId": post_id})
        return Outcome.CANCELED_BEFORE_UPLOAD
    lease.restart(since)
    lag = (utcnow() - post.scheduled_for).total_seconds()
    metrics.DISPATCH_LAG.observe(max(0.0, lag))
    logs.transition(
        post_id, post.organization_id, "publishing:upload_started", lagMs=round(lag * 1000, 1)
    )

    # 5-6. The irreversible call (the sandbox dedupes it by the post id), and record.
    attempted = post.attempted_at or utcnow()
    pub = Publication(post_id, preparation.handle, attempted)
    return _publish_and_record(post, token, prepared, pub, settings, lease)


def run_reconcile(
    post_id: str,
    token: int,
    *,
    make_adapter: AdapterFactory = _default_adapter,
    settings: Settings | None = None,
) -> Outcome:
    """Settle a post whose worker vanished after its upload started: ask the platform.

    Found: published. Confirmed absent: publish again (or fail once the attempts are
    spent). The platform cannot say: failed with UPLOAD_OUTCOME_UNKNOWN.
    """
    settings = settings or get_settings()
    lease_td = timedelta(seconds=settings.lease_s)
    since = time.monotonic()
    post = run_in_transaction(
        lambda tx: posts.take_for_reconcile(
            tx.session, post_id, token, now=utcnow(), lease=lease_td
        )
    )
    if post is None:
        metrics.RECONCILIATIONS.labels("stale").inc()
        return Outcome.STALE
    owner = post.owner or ""
    lease = _Lease(post_id, token, owner, settings)
    lease.restart(since)
    prepared = _prepare(post, make_adapter, settings)
    if isinstance(prepared, _Failure):
        # The account cannot be asked (reauth, disconnected): nobody can tell.
        metrics.RECONCILIATIONS.labels("unknown").inc()
        return _record(post_id, token, _outcome_unknown(None))
    pub = Publication(
        post_id, post.platform_handle, post.attempted_at or utcnow(), maybe_landed=True
    )
    try:
        found = _resolve(prepared, post_id, pub.handle, pub.since, settings)
    except _Unknown as unknown:
        failure = _outcome_unknown(None, outage=unknown.outage)
        outcome = _record_or_wait(post, token, failure, owner, settings)
        waited = outcome == Outcome.WAITING_FOR_PLATFORM
        metrics.RECONCILIATIONS.labels("waiting" if waited else "unknown").inc()
        return outcome
    if found is not None:
        metrics.RECONCILIATIONS.labels("found").inc()
        return _record(post_id, token, found)
    if post.attempts > settings.max_attempts:
        metrics.RECONCILIATIONS.labels("exhausted").inc()
        spent = _Failure("ATTEMPTS_EXHAUSTED", f"Gave up after {post.attempts - 1} attempts", None)
        return _record(post_id, token, spent)
    metrics.RECONCILIATIONS.labels("absent_reuploaded").inc()
    log.info("reconciled: the platform has none; publishing again", extra={"postId": post_id})
    return _publish_and_record(post, token, prepared, pub, settings, lease)


def _poll_delay(polls: int, settings: Settings) -> timedelta:
    return timedelta(seconds=min(settings.poll_cap_s, settings.poll_first_s * 2 ** max(0, polls)))


def run_poll(
    post_id: str,
    token: int,
    *,
    make_adapter: AdapterFactory = _default_adapter,
    settings: Settings | None = None,
) -> Outcome:
    """Ask the platform about a post it accepted: done (published, draft or failed) is
    recorded; still processing, or no answer, asks again later with backoff. Holds no lease:
    a poll only reads the platform, and its token fences the record."""
    settings = settings or get_settings()
    post = run_in_transaction(lambda tx: posts.take_for_poll(tx.session, post_id, token))
    if post is None or post.platform_handle is None:
        metrics.POLLS.labels("stale").inc()
        return Outcome.STALE
    handle = post.platform_handle
    prepared = _prepare(post, make_adapter, settings)
    adapter = prepared.adapter if not isinstance(prepared, _Failure) else None
    completion = None
    if isinstance(adapter, CompletesLater):
        try:
            completion = adapter.completion(handle)
        except PlatformError as exc:
            log.info(
                "poll failed; asking again later", extra={"postId": post_id, "error": str(exc)}
            )
    else:
        # The account cannot be asked now (reauth, disconnected): keep asking, slowly, so the
        # post completes once it is reconnected; never guess.
        log.warning("cannot poll the platform", extra={"postId": post_id})
    if completion is not None and completion.state == CompletionState.PENDING:
        waited = utcnow() - (post.awaiting_since or utcnow())
        if completion.complete and waited > timedelta(seconds=settings.moderation_wait_s):
            completion = Completion(CompletionState.PUBLISHED, external_id=handle)
    if completion is None or completion.state == CompletionState.PENDING:
        delay = _poll_delay(post.polls, settings)

        def again(tx: Tx) -> None:
            poll = posts.next_poll(tx.session, post_id, token, now=utcnow(), delay=delay)
            if poll is not None:
                tx.after_commit(partial(send_poll, poll))

        run_in_transaction(again)
        metrics.POLLS.labels("pending").inc()
        return Outcome.AWAITING_PLATFORM
    metrics.POLLS.labels(completion.state.value).inc()
    if completion.state == CompletionState.FAILED:
        failure = _Failure(
            "PLATFORM_ERROR",
            f"The platform failed the post: {completion.reason}",
            completion.reason,
        )
        return _record(post_id, token, failure)
    return _record(
        post_id, token, Uploaded(completion.external_id or handle, completion.external_url)
    )


# --- the control ticks ----------------------------------------------------------------


def dispatch_once() -> int:
    """One dispatcher tick: send an ETA task for each post due within the horizon, re-arm lost
    polls and deliveries, and approve content past its policy's delay."""
    settings = get_settings()

    def tick(tx: Tx) -> int:
        # One instant and one grace for the sweeps: due posts, lost polls, lost webhook
        # deliveries, content to auto-approve.
        now, limit = utcnow(), settings.dispatch_batch
        grace = timedelta(seconds=settings.redispatch_grace_s)
        horizon = timedelta(seconds=settings.dispatch_horizon_s)
        due = posts.dispatch_due(tx.session, now=now, horizon=horizon, grace=grace, limit=limit)
        polls = posts.rearm_lost_polls(tx.session, now=now, grace=grace, limit=limit)
        lost = deliveries.rearm_lost(tx.session, now=now, grace=grace, limit=limit)
        # Last: the posts it makes are sent by the next tick (a second later), and the tick
        # takes its tables' locks in one order (posts, deliveries, then content).
        approved = usecases.auto_approve(tx, now=now, limit=limit)
        for d in due:
            tx.after_commit(partial(send_publish, d))
        for poll in polls:
            tx.after_commit(partial(send_poll, poll))
        for job in lost:
            tx.after_commit(partial(send_delivery, job))
        return approved + len(due) + len(polls) + len(lost)

    sent = run_in_transaction(tick)
    if sent:
        log.info("dispatcher: %d task(s) sent or container(s) approved", sent)
    return sent


def reap_once() -> posts.Reaped:
    """One reaper pass over expired leases."""
    settings = get_settings()

    def sweep(tx: Tx) -> posts.Reaped:
        reaped = posts.reap_expired(
            tx.session,
            now=utcnow(),
            lease=timedelta(seconds=settings.lease_s),
            max_attempts=settings.max_attempts,
            limit=settings.dispatch_batch,
            settle=timedelta(seconds=settings.platform_timeout_s + SETTLE_MARGIN_S),
        )
        for d in reaped.requeued:
            tx.after_commit(partial(send_publish, d))
        for r in reaped.reconcile:
            tx.after_commit(partial(send_reconcile, r))
        return reaped

    reaped = run_in_transaction(sweep)
    counts = {
        "requeued": len(reaped.requeued),
        "reconcile": len(reaped.reconcile),
        "failed": len(reaped.failed),
    }
    for action, count in counts.items():
        if count:
            metrics.LEASES_EXPIRED.labels(action).inc(count)
    if reaped.requeued or reaped.reconcile or reaped.failed:
        log.warning(
            "reaper: %d requeued, %d to reconcile, %d failed (attempts exhausted)",
            len(reaped.requeued),
            len(reaped.reconcile),
            len(reaped.failed),
        )
    return reaped
