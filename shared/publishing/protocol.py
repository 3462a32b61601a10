"""The publish protocol, step by step (docs/design.md): claim, prepare, point of no return,
upload, record. Each step that touches the row is one short transaction; none is held
open across the platform call."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import Any

from shared.content.containers import payload_source
from shared.kit import failpoints, logs, metrics
from shared.kit.clock import utcnow
from shared.kit.db import Tx, run_in_transaction
from shared.kit.settings import Settings, get_settings
from shared.models import ScheduledPost, SocialAccount
from shared.publishing import posts
from shared.publishing.platforms import (
    PlatformAdapter,
    PlatformError,
    Uploaded,
    UploadPayload,
    adapter_for,
)
from shared.publishing.tasks import send_publish, send_reconcile

log = logging.getLogger("publisher.worker")

# An ETA task fires on time; this bounds how often a task that fired early waits and retries.
MAX_EARLY_WAITS = 5


class Outcome(StrEnum):
    PUBLISHED = "published"
    FAILED = "failed"
    STALE = "stale"  # the post moved on (canceled, rescheduled, re-dispatched, done)
    CANCELED_BEFORE_UPLOAD = "canceled_before_upload"


@dataclass(frozen=True)
class Prepared:
    payload: UploadPayload
    adapter: PlatformAdapter


AdapterFactory = Callable[[SocialAccount, Settings], PlatformAdapter]


def _default_adapter(account: SocialAccount, settings: Settings) -> PlatformAdapter:
    return adapter_for(account.adapter, account.base_url, settings.platform_timeout_s)


def _prepare(post: ScheduledPost, make_adapter: AdapterFactory, settings: Settings) -> Prepared:
    """Build the payload from the post, its container and account. No lock held."""

    def read(tx: Tx) -> tuple[SocialAccount, dict[str, Any]]:
        account = tx.session.get(SocialAccount, post.social_account_id)
        assert account is not None
        return account, payload_source(tx.session, post.container_id)

    account, source = run_in_transaction(read)
    payload = UploadPayload(
        account_id=account.id,
        platform=post.platform,
        mode=post.mode,
        caption=post.caption_override if post.caption_override is not None else source["caption"],
        media=source["media"],
        first_comment=post.first_comment_override,
    )
    return Prepared(payload, make_adapter(account, settings))


def backoff(attempt: int, settings: Settings, retry_after: float | None = None) -> float:
    """Capped exponential backoff with jitter (half to all of the step); a platform's
    Retry-After wins if longer."""
    ceiling = min(settings.platform_backoff_cap_s, settings.platform_backoff_base_s * 2**attempt)
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 60.0))
    return delay


class _Unknown(Exception):
    """The platform may or may not hold the post, and could not say which."""


def _resolve(adapter: PlatformAdapter, key: str, settings: Settings) -> Uploaded | None:
    """Ask the platform whether the key made a post; _Unknown if it never answers."""
    for attempt in range(settings.platform_max_tries):
        try:
            return adapter.lookup(key)
        except PlatformError as exc:
            log.warning("platform lookup failed", extra={"postId": key, "error": str(exc)})
            time.sleep(backoff(attempt, settings, exc.retry_after))
    raise _Unknown


@dataclass(frozen=True)
class _Failure:
    code: str
    message: str
    platform_code: str | None


def _outcome_unknown(platform_code: str | None) -> _Failure:
    return _Failure(
        "UPLOAD_OUTCOME_UNKNOWN",
        "The platform may hold this post and could not confirm it",
        platform_code,
    )


def upload_with_retries(
    adapter: PlatformAdapter,
    key: str,
    payload: UploadPayload,
    settings: Settings,
    on_wait: Callable[[], None] = lambda: None,
) -> Uploaded | _Failure:
    """Upload under one idempotency key until it lands or fails for good.

    Transient errors retry with backoff; permanent ones fail at once; an ambiguous one (the
    platform may have acted) is resolved by lookup: found is success, confirmed absent is a
    retry, and no answer is UPLOAD_OUTCOME_UNKNOWN.
    """
    last: PlatformError | None = None
    for attempt in range(settings.platform_max_tries):
        try:
            return adapter.upload(key, payload)
        except PlatformError as exc:
            last = exc
            kind = (
                "permanent" if not exc.transient else "ambiguous" if exc.ambiguous else "transient"
            )
            metrics.PLATFORM_ERRORS.labels(kind).inc()
            if not exc.transient:
                return _Failure("PLATFORM_REJECTED", str(exc), exc.platform_code)
            log.info(
                "platform error", extra={"postId": key, "attempt": attempt + 1, "error": str(exc)}
            )
            if exc.ambiguous:
                try:
                    found = _resolve(adapter, key, settings)
                except _Unknown:
                    return _outcome_unknown(exc.platform_code)
                if found is not None:
                    return found
            on_wait()
            time.sleep(backoff(attempt, settings, exc.retry_after))
    # Every try failed; the last ones may still have landed. Ask once more before failing.
    try:
        found = _resolve(adapter, key, settings)
    except _Unknown:
        return _outcome_unknown(last.platform_code if last else None)
    if found is not None:
        return found
    return _Failure(
        "PLATFORM_UNAVAILABLE",
        f"The platform kept failing after {settings.platform_max_tries} tries: {last}",
        last.platform_code if last else None,
    )


def _upload_and_record(
    post_id: str, token: int, owner: str, prepared: Prepared, settings: Settings
) -> Outcome:
    """Steps 5 and 6: upload under the post's idempotency key, then record the outcome."""
    lease = timedelta(seconds=settings.lease_s)

    def renew() -> None:
        run_in_transaction(
            lambda tx: posts.renew_lease(
                tx.session, post_id, token, owner, now=utcnow(), lease=lease
            )
        )

    result = upload_with_retries(prepared.adapter, post_id, prepared.payload, settings, renew)
    failpoints.hit("after_upload", post_id)
    return _record(post_id, token, result)


def _record(post_id: str, token: int, result: Uploaded | _Failure) -> Outcome:
    if isinstance(result, Uploaded):
        recorded = run_in_transaction(
            lambda tx: posts.record_uploaded(
                tx.session,
                post_id,
                external_id=result.external_id,
                external_url=result.external_url,
                now=utcnow(),
            )
        )
        if recorded:
            logs.transition(post_id, None, "publishing->published", externalId=result.external_id)
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
    lease = timedelta(seconds=settings.lease_s)
    failpoints.hit("before_claim", post_id)

    # 2. Claim under the row lock (step 1, dispatch, sent this task).
    for _ in range(MAX_EARLY_WAITS):
        claimed = run_in_transaction(
            lambda tx: posts.claim(tx.session, post_id, token, owner, now=utcnow(), lease=lease)
        )
        if claimed.result != posts.ClaimResult.EARLY:
            break
        time.sleep(min(claimed.wait.total_seconds(), settings.dispatch_horizon_s))
    post = claimed.post
    if post is None:
        log.info("stale task, nothing to do", extra={"postId": post_id, "token": token})
        return Outcome.STALE
    logs.transition(
        post_id, post.organization_id, "queued->publishing", owner=owner, attempt=post.attempts
    )

    # 3. Prepare. A cancel arriving now still wins.
    failpoints.hit("after_claim", post_id)
    prepared = _prepare(post, make_adapter, settings)

    # 4. The point of no return.
    ours = run_in_transaction(
        lambda tx: posts.begin_upload(tx.session, post_id, token, owner, now=utcnow(), lease=lease)
    )
    if not ours:
        log.info("canceled before upload", extra={"postId": post_id})
        return Outcome.CANCELED_BEFORE_UPLOAD
    lag = (utcnow() - post.scheduled_for).total_seconds()
    metrics.DISPATCH_LAG.observe(max(0.0, lag))
    logs.transition(
        post_id, post.organization_id, "publishing:upload_started", lagMs=round(lag * 1000, 1)
    )

    # 5-6. Upload with the post id as the idempotency key, and record.
    return _upload_and_record(post_id, token, owner, prepared, settings)


def run_reconcile(
    post_id: str,
    token: int,
    *,
    make_adapter: AdapterFactory = _default_adapter,
    settings: Settings | None = None,
) -> Outcome:
    """Settle a post whose worker vanished after its upload started: ask the platform.

    Found: published. Confirmed absent: upload again under the same key (or fail once the
    attempts are spent). The platform cannot say: failed with UPLOAD_OUTCOME_UNKNOWN.
    """
    settings = settings or get_settings()
    lease = timedelta(seconds=settings.lease_s)
    post = run_in_transaction(
        lambda tx: posts.take_for_reconcile(tx.session, post_id, token, now=utcnow(), lease=lease)
    )
    if post is None:
        metrics.RECONCILIATIONS.labels("stale").inc()
        return Outcome.STALE
    owner = post.owner or ""
    prepared = _prepare(post, make_adapter, settings)
    try:
        found = _resolve(prepared.adapter, post_id, settings)
    except _Unknown:
        metrics.RECONCILIATIONS.labels("unknown").inc()
        unknown = _outcome_unknown(None)
        return _record(post_id, token, unknown)
    if found is not None:
        metrics.RECONCILIATIONS.labels("found").inc()
        return _record(post_id, token, found)
    if post.attempts > settings.max_attempts:
        metrics.RECONCILIATIONS.labels("exhausted").inc()
        spent = _Failure("ATTEMPTS_EXHAUSTED", f"Gave up after {post.attempts - 1} attempts", None)
        return _record(post_id, token, spent)
    metrics.RECONCILIATIONS.labels("absent_reuploaded").inc()
    log.info("reconciled: the platform has none; uploading again", extra={"postId": post_id})
    return _upload_and_record(post_id, token, owner, prepared, settings)


# --- the control ticks ----------------------------------------------------------------


def dispatch_once() -> int:
    """One dispatcher tick: send an ETA task for each post due within the horizon."""
    settings = get_settings()

    def tick(tx: Tx) -> int:
        due = posts.dispatch_due(
            tx.session,
            now=utcnow(),
            horizon=timedelta(seconds=settings.dispatch_horizon_s),
            grace=timedelta(seconds=settings.redispatch_grace_s),
            limit=settings.dispatch_batch,
        )
        for d in due:
            tx.after_commit(partial(send_publish, d))
        return len(due)

    sent = run_in_transaction(tick)
    if sent:
        log.info("dispatched %d post(s)", sent)
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
