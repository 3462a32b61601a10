"""Scheduled posts: the state machine and every transition on it.

Each transition takes the row lock (`SELECT ... FOR UPDATE`), checks the current state, writes
the new one, and leaves the commit to the caller's unit of work: one short transaction, never
held open across a platform call.

    queued --claim--> publishing --upload ok--> published | draft
       |                 |   '--permanent error / outcome unknown--> failed
       '--cancel--> canceled <--cancel (only before the upload starts)
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from psycopg.rows import dict_row
from sqlalchemy import Select, and_, bindparam, func, or_, select, true, tuple_
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, configure_mappers

from shared.events import Actor, EventType, post_event
from shared.kit import ids
from shared.kit.clock import ceil_second, iso
from shared.kit.db import driver_connection
from shared.kit.errors import Conflict, NotFound, PlatformRefused, Validation
from shared.kit.redispatch import lost_backoff, lost_backoff_delay
from shared.models import (
    INSTAGRAM_ADAPTER,
    SANDBOX_ADAPTER,
    TERMINAL,
    AccountStatus,
    ContentContainer,
    Mode,
    PostStatus,
    ScheduledPost,
    SocialAccount,
)
from shared.publishing import platform_rules
from shared.publishing.platforms import Quota, dead_token_code

# An ETA task may fire a hair early (clock granularity, broker timers); never by more than this.
EARLY_TOLERANCE = timedelta(milliseconds=50)


@dataclass(frozen=True)
class Dispatch:
    """One publish task to send after commit."""

    post_id: str
    token: int
    task_id: str
    eta: datetime


@dataclass(frozen=True)
class Scheduled:
    """The posts a schedule created, and the tasks to send once it commits (publish-now)."""

    posts: list[ScheduledPost]
    dispatches: list[Dispatch]


@dataclass(frozen=True)
class Target:
    """One target of a schedule request, already shape-checked by the edge."""

    social_account_id: str
    mode: Mode = Mode.PUBLISH
    scheduled_post_id: str | None = None
    caption_override: str | None = None
    first_comment_override: str | None = None


# Built once: every read and cancel of a post by its wire id runs one of them.
_BY_PUBLIC_ID: Final = select(ScheduledPost).where(
    ScheduledPost.organization_id == bindparam("organization_id"),
    ScheduledPost.public_id == bindparam("public_id"),
)
_BY_PUBLIC_ID_LOCKED: Final = _BY_PUBLIC_ID.with_for_update()


def get_post(
    session: Session, organization_id: str, post_id: str, *, lock: bool = False
) -> ScheduledPost:
    """The post with this wire id in this organization (row-locked with `lock`), or NotFound:
    a foreign id looks like a missing one."""
    if ids.is_valid(post_id, ids.SCHEDULED_POST):
        post = session.scalars(
            _BY_PUBLIC_ID_LOCKED if lock else _BY_PUBLIC_ID,
            {"organization_id": organization_id, "public_id": post_id},
        ).one_or_none()
        if post is not None:
            return post
    raise NotFound("Scheduled post not found")


def _lock_post(session: Session, organization_id: str, post_id: str) -> ScheduledPost:
    return get_post(session, organization_id, post_id, lock=True)


def schedule(
    session: Session,
    actor: Actor,
    container: ContentContainer,
    scheduled_for: datetime,
    targets: list[Target],
    *,
    now: datetime,
    task_id_for_now: bool = False,
    sandbox_only: bool = False,
) -> Scheduled:
    """Create one `queued` post per target, all or nothing, due at `scheduled_for` rounded
    up to a whole second (the resolution of `scheduledFor` on the wire).

    With `task_id_for_now` (publish-now) each post gets its task id at once, and the result
    holds the tasks to send right after commit instead of waiting for the dispatcher; a
    target whose platform refused the account's token is then PLATFORM_ERROR, nothing saved:
    the post would fail at once, and reconnecting the account is the caller's to do. (A
    schedule for later is taken: the account may be reconnected before its time.)
    """
    accounts = check_targets(session, actor, container, targets, sandbox_only=sandbox_only)
    if task_id_for_now:
        _refuse_dead_tokens(targets, accounts)
    scheduled_for = ceil_second(scheduled_for)
    posts = []
    for t in targets:
        account = accounts[t.social_account_id]
        key = ids.new_id(ids.SCHEDULED_POST)
        post = ScheduledPost(
            id=key,
            public_id=t.scheduled_post_id or key,
            organization_id=actor.organization_id,
            project_id=container.project_id,
            container_id=container.id,
            social_account_id=account.id,
            platform=account.platform,
            mode=t.mode.value,
            status=PostStatus.QUEUED.value,
            scheduled_for=scheduled_for,
            caption_override=t.caption_override,
            first_comment_override=t.first_comment_override,
            dispatch_version=1,
            task_id=str(uuid.uuid4()) if task_id_for_now else None,
            dispatched_at=now if task_id_for_now else None,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        session.add(post)
        posts.append(post)
    session.flush()
    for post in posts:
        post_event(session, EventType.POST_SCHEDULED, post, actor=actor)
    dispatches = [
        Dispatch(p.id, p.dispatch_version, p.task_id, p.scheduled_for)
        for p in posts
        if p.task_id is not None
    ]
    return Scheduled(posts, dispatches)


def check_targets(
    session: Session,
    actor: Actor,
    container: ContentContainer,
    targets: list[Target],
    *,
    sandbox_only: bool,
) -> dict[str, SocialAccount]:
    """Every target's account (row-shared until commit), or Validation with every issue: the
    checks of a schedule, also run on a schedule saved to wait for its content's approval."""
    issues: list[dict[str, str]] = []
    account_ids = [t.social_account_id for t in targets]
    accounts = {
        a.id: a
        for a in session.scalars(
            select(SocialAccount)
            .where(
                SocialAccount.id.in_(
                    [i for i in account_ids if ids.is_valid(i, ids.SOCIAL_ACCOUNT)]
                ),
                SocialAccount.organization_id == actor.organization_id,
                SocialAccount.project_id == container.project_id,
                # A `test` key reaches sandbox-bound accounts only; others look absent.
                SocialAccount.adapter == SANDBOX_ADAPTER if sandbox_only else true(),
            )
            # Shared: a disconnect (which takes the row for update) waits for this schedule's
            # commit, then cancels its posts too; a schedule after it sees `disconnected`.
            .with_for_update(read=True)
        )
    }
    wanted_ids = [t.scheduled_post_id for t in targets if t.scheduled_post_id]
    # Two requests naming the same new id: the second waits here, then sees it taken. Ids are
    # per organization, so another organization's choice of the same id is never "taken".
    for wanted in sorted(set(wanted_ids)):
        lock_key = func.hashtextextended(f"{actor.organization_id}\n{wanted}", 0)
        session.execute(select(func.pg_advisory_xact_lock(lock_key)))
    taken = set(
        session.scalars(
            select(ScheduledPost.public_id).where(
                ScheduledPost.organization_id == actor.organization_id,
                ScheduledPost.public_id.in_(wanted_ids),
            )
        )
        if wanted_ids
        else []
    )
    seen_accounts: set[str] = set()
    seen_ids: set[str] = set()
    for i, t in enumerate(targets):
        path = f"targets[{i}]"
        if t.social_account_id not in accounts:
            issues.append(
                {
                    "path": f"{path}.socialAccountId",
                    "message": "No such social account in this content's project",
                }
            )
        elif accounts[t.social_account_id].status == AccountStatus.DISCONNECTED:
            issues.append(
                {
                    "path": f"{path}.socialAccountId",
                    "message": "This social account is disconnected: connect it again first",
                }
            )
        elif t.social_account_id in seen_accounts:
            issues.append(
                {"path": f"{path}.socialAccountId", "message": "Social account is listed twice"}
            )
        seen_accounts.add(t.social_account_id)
        if t.scheduled_post_id is not None:
            if not ids.is_valid(t.scheduled_post_id, ids.SCHEDULED_POST):
                issues.append(
                    {"path": f"{path}.scheduledPostId", "message": "Must be sp_ followed by a UUID"}
                )
            elif t.scheduled_post_id in taken or t.scheduled_post_id in seen_ids:
                issues.append(
                    {"path": f"{path}.scheduledPostId", "message": "This id is already in use"}
                )
            seen_ids.add(t.scheduled_post_id)
        if t.social_account_id in accounts:
            issues += _platform_issues(path, accounts[t.social_account_id], container, t)
    if issues:
        raise Validation(issues)
    return accounts


def _refuse_dead_tokens(targets: list[Target], accounts: dict[str, SocialAccount]) -> None:
    for i, t in enumerate(targets):
        account = accounts[t.social_account_id]
        if account.status == AccountStatus.REAUTH_REQUIRED:
            raise PlatformRefused(
                f"{account.platform} refuses this social account's token: reconnect it"
                + (f" ({account.status_reason})" if account.status_reason else ""),
                {
                    "platformCode": account.status_platform_code
                    or dead_token_code(account.platform),
                    "socialAccountId": account.id,
                    "path": f"targets[{i}].socialAccountId",
                },
            )


def _platform_issues(
    path: str, account: SocialAccount, container: ContentContainer, target: Target
) -> list[dict[str, str]]:
    """What this target's platform would refuse, known now rather than at upload time."""
    platform = account.platform
    issues = []
    if target.mode == Mode.DRAFT and account.adapter == INSTAGRAM_ADAPTER:
        # The Graph API publishes or does nothing: there is no draft to leave behind.
        issues.append({"path": f"{path}.mode", "message": "instagram has no drafts; use publish"})
    overridden = target.caption_override is not None
    caption = target.caption_override if overridden else container.caption
    assert caption is not None
    if problem := platform_rules.caption_problem(platform, caption):
        where = f"{path}.captionOverride" if overridden else path
        issues.append({"path": where, "message": problem})
    if problem := platform_rules.media_problem(platform, container.media):
        issues.append({"path": f"{path}.socialAccountId", "message": problem})
    return issues


class CancelResult(StrEnum):
    WON = "won"  # canceled: the post never reaches the platform
    LOST_TO_UPLOAD = "lost_to_upload"  # the upload has started; the post will complete
    TERMINAL = "terminal"  # already published, draft, failed or canceled


@dataclass(frozen=True)
class Canceled:
    result: CancelResult
    post: ScheduledPost
    revoke_task_id: str | None
    previous_status: str


def cancel(
    session: Session, actor: Actor, post_id: str, reason: str | None, *, now: datetime
) -> Canceled:
    """Cancel under the row lock: wins before the upload starts; else changes nothing and
    says why (lost to the upload, or already terminal).

    `queued`, or `publishing` without `upload_started_at` -> `canceled` with a new fencing
    token, so any task still in flight does nothing. The caller revokes the old task after
    commit, as a courtesy.
    """
    post = (
        _post_row(
            session,
            _LOCK_FOR_CANCEL,
            {"organization_id": actor.organization_id, "public_id": post_id},
        )
        if ids.is_valid(post_id, ids.SCHEDULED_POST)
        else None
    )
    if post is None:
        raise NotFound("Scheduled post not found")
    return _cancel_locked(session, actor, post, reason, now)


def _cancel_locked(
    session: Session, actor: Actor, post: ScheduledPost, reason: str | None, now: datetime
) -> Canceled:
    """`cancel` on a post whose row lock this transaction holds."""
    if post.status in TERMINAL:
        return Canceled(CancelResult.TERMINAL, post, None, post.status)
    if post.upload_started_at is not None:
        return Canceled(CancelResult.LOST_TO_UPLOAD, post, None, post.status)
    old_task, previous = post.task_id, post.status
    canceled = _post_row(session, _CANCEL, {"id": post.id, "now": now, "reason": reason})
    assert canceled is not None  # the row is ours, locked
    post_event(
        session, EventType.POST_CANCELED, canceled, actor=actor, reason=reason, previous=previous
    )
    return Canceled(CancelResult.WON, canceled, old_task, previous)


@dataclass(frozen=True)
class AccountCanceled:
    """What disconnecting an account did to its posts: the ones canceled (each as a won
    cancel), and how many were past the point of no return and will complete."""

    canceled: list[Canceled]
    completing: int


def cancel_for_account(
    session: Session, actor: Actor, account_id: str, reason: str, *, now: datetime
) -> AccountCanceled:
    """Cancel every post of an account that has not reached its platform, under each row's
    lock (taken in id order), as a cancel would: `queued`, or `publishing` before the upload
    started. Posts whose upload started are left to complete. The caller holds the account's
    row lock and has marked it disconnected, so no new post joins it meanwhile."""
    rows = session.scalars(
        select(ScheduledPost)
        .where(
            ScheduledPost.social_account_id == account_id,
            ScheduledPost.status.in_([PostStatus.QUEUED, PostStatus.PUBLISHING]),
        )
        .order_by(ScheduledPost.id)
        .with_for_update()
    ).all()
    done = [_cancel_locked(session, actor, post, reason, now) for post in rows]
    return AccountCanceled(
        [d for d in done if d.result == CancelResult.WON],
        sum(d.result == CancelResult.LOST_TO_UPLOAD for d in done),
    )


@dataclass(frozen=True)
class Rescheduled:
    post: ScheduledPost
    revoke_task_id: str | None


def reschedule(
    session: Session, actor: Actor, post_id: str, scheduled_for: datetime, *, now: datetime
) -> Rescheduled:
    """Move a `queued` post to a new time; its old task is disarmed by the new token."""
    post = _lock_post(session, actor.organization_id, post_id)
    if post.status != PostStatus.QUEUED:
        raise Conflict(
            f"Only queued posts can be rescheduled; this one is {post.status}",
            {"status": post.status},
        )
    old_task = post.task_id
    previous = post.scheduled_for
    post.scheduled_for = ceil_second(scheduled_for)
    post.retry_at = None
    post.dispatch_version += 1
    post.task_id = None
    post.dispatched_at = None
    post.updated_at = now
    post_event(
        session, EventType.POST_RESCHEDULED, post, actor=actor, previousScheduledFor=iso(previous)
    )
    return Rescheduled(post, old_task)


# --- the worker's side -------------------------------------------------------------------


def dispatch_due(
    session: Session, *, now: datetime, horizon: timedelta, grace: timedelta, limit: int
) -> list[Dispatch]:
    """Give a task to each `queued` post due within the horizon that has no live task.

    A post whose task should have run by now but never claimed it (the message was lost with
    Redis) gets a copy of its task under the same token; should the first surface, the one
    that claims first wins. A post waiting out a platform outage is due at its `retry_at`,
    not before. Each time a post's task is given up as lost the next give-up waits twice as
    long (until a task claims it), so a backlog slower to drain than the grace costs a few
    copies per post, not one every grace (shared/kit/redispatch.py).
    """
    due_at = func.greatest(ScheduledPost.scheduled_for, ScheduledPost.retry_at)
    lost_after = lost_backoff(grace, ScheduledPost.redispatches)
    rows = session.scalars(
        select(ScheduledPost)
        .where(
            ScheduledPost.status == PostStatus.QUEUED,
            ScheduledPost.scheduled_for <= now + horizon,
            or_(ScheduledPost.retry_at.is_(None), ScheduledPost.retry_at <= now + horizon),
            or_(
                ScheduledPost.task_id.is_(None),
                and_(due_at < now - grace, ScheduledPost.dispatched_at < now - lost_after),
            ),
        )
        .order_by(ScheduledPost.scheduled_for)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    out = []
    for post in rows:
        if post.task_id is not None:
            # A copy of the lost task under the same token, not a replacement: if the first
            # is merely waiting behind a backlog it stays good, whichever claims first wins
            # and the other finds the post claimed (a new token would make the queued task
            # stale, and under a backlog slower than the grace only the newest copy, always
            # at the back of the queue, could claim).
            post.redispatches += 1
        post.task_id = str(uuid.uuid4())
        post.dispatched_at = now
        post.updated_at = now
        eta = max(post.scheduled_for, post.retry_at or post.scheduled_for)
        out.append(Dispatch(post.id, post.dispatch_version, post.task_id, eta))
    return out


class ClaimResult(StrEnum):
    CLAIMED = "claimed"
    STALE = "stale"  # canceled, rescheduled, re-dispatched or already done
    EARLY = "early"


@dataclass(frozen=True)
class Claim:
    result: ClaimResult
    post: ScheduledPost | None = None
    wait: timedelta = timedelta(0)


_LOCK_BY_ID: Final = (
    select(ScheduledPost).where(ScheduledPost.id == bindparam("post_id")).with_for_update()
)


def _lock_for_worker(session: Session, post_id: str) -> ScheduledPost | None:
    return session.scalars(_LOCK_BY_ID, {"post_id": post_id}).one_or_none()


# The hot path's statements, written once: the transitions every post makes (claim, point of
# no return, record) as single guarded UPDATEs, run on the session's own psycopg connection
# (in its transaction) with no ORM statement built or compiled per call.
_POST_COLUMNS: Final = ", ".join(column.name for column in ScheduledPost.__table__.columns)


def _driver_sql(sql: str) -> bytes:
    """`sql` with psycopg's placeholders, returning every column of the post."""
    return re.sub(r":(\w+)", r"%(\1)s", sql + " RETURNING " + _POST_COLUMNS).encode()


def _post_row(session: Session, sql: bytes, params: dict[str, Any]) -> ScheduledPost | None:
    """Run one of the statements below; the post as it left it (not in the session: what the
    caller reads of it, and the event it appends), or None if it matched nothing."""
    with driver_connection(session).cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(sql, params).fetchone()
    if row is None:
        return None
    # Filled as the ORM's own loading fills an instance: straight into its dict, without an
    # attribute event per column (a constructor's cost, and this is read-only).
    post = _new_post()
    post.__dict__.update(row)
    return post


def _new_post() -> ScheduledPost:
    configure_mappers()  # the attributes' loaders exist once any query ran; a no-op then
    post: ScheduledPost = sa_inspect(ScheduledPost).class_manager.new_instance()
    return post


_CLAIM: Final = _driver_sql(
    "UPDATE scheduled_posts SET status = 'publishing', attempted_at = :now, owner = :owner,"
    " lease_expires_at = :lease_until, attempts = attempts + 1, redispatches = 0,"
    " updated_at = :now"
    " WHERE id = :id AND status = 'queued' AND dispatch_version = :token"
    " AND scheduled_for <= :due_by"
)
_BEGIN_UPLOAD: Final = _driver_sql(
    "UPDATE scheduled_posts SET upload_started_at = :now, platform_handle = :handle,"
    " lease_expires_at = :lease_until, updated_at = :now"
    " WHERE id = :id AND status = 'publishing' AND dispatch_version = :token"
    " AND owner = :owner AND upload_started_at IS NULL"
)
# A cancel: the row lock on the post, then (if it wins) the one UPDATE. (The column list is
# the model's, never input.)
_LOCK_FOR_CANCEL: Final = (
    "SELECT " + _POST_COLUMNS + " FROM scheduled_posts"  # noqa: S608
    " WHERE organization_id = %(organization_id)s AND public_id = %(public_id)s FOR UPDATE"
).encode()
_CANCEL: Final = _driver_sql(
    "UPDATE scheduled_posts SET status = 'canceled', canceled_at = :now,"
    " cancel_reason = :reason, dispatch_version = dispatch_version + 1, task_id = NULL,"
    " owner = NULL, lease_expires_at = NULL, updated_at = :now WHERE id = :id"
)
_RECORD_UPLOADED: Final = _driver_sql(
    "UPDATE scheduled_posts SET"
    " status = CASE WHEN mode = 'draft' THEN 'draft' ELSE 'published' END,"
    " published_at = :now, external_id = :external_id, external_url = :external_url,"
    " last_error = NULL, owner = NULL, lease_expires_at = NULL, awaiting_since = NULL,"
    " poll_at = NULL, updated_at = :now"
    " WHERE id = :id AND status = 'publishing' AND upload_started_at IS NOT NULL"
)


def claim(
    session: Session, post_id: str, token: int, owner: str, *, now: datetime, lease: timedelta
) -> Claim:
    """Take a `queued` post for this task: `publishing`, with an owner and a lease.

    The common case is one guarded UPDATE: it takes the row lock as the SELECT ... FOR
    UPDATE below would, and under READ COMMITTED re-checks its guard on the row a racing
    cancel committed. Whatever it did not match (stale, early, our own earlier commit) is
    told apart under the lock."""
    post = _post_row(
        session,
        _CLAIM,
        {
            "id": post_id,
            "token": token,
            "owner": owner,
            "now": now,
            "due_by": now + EARLY_TOLERANCE,
            "lease_until": now + lease,
        },
    )
    if post is not None:
        post_event(
            session, EventType.POST_CLAIMED, post, token=token, owner=owner, attempt=post.attempts
        )
        return Claim(ClaimResult.CLAIMED, post)
    post = _lock_for_worker(session, post_id)
    if post is not None and _ours(post, token, owner):
        # Our own claim, committed before a connection error hid the commit from us.
        return Claim(ClaimResult.CLAIMED, post)
    if post is None or post.status != PostStatus.QUEUED or post.dispatch_version != token:
        return Claim(ClaimResult.STALE)
    if post.scheduled_for - now > EARLY_TOLERANCE:
        return Claim(ClaimResult.EARLY, wait=post.scheduled_for - now)
    post.status = PostStatus.PUBLISHING.value
    post.attempted_at = now
    post.owner = owner
    post.lease_expires_at = now + lease
    post.attempts += 1
    post.updated_at = now
    post_event(
        session, EventType.POST_CLAIMED, post, token=token, owner=owner, attempt=post.attempts
    )
    return Claim(ClaimResult.CLAIMED, post)


def _ours(post: ScheduledPost | None, token: int, owner: str) -> bool:
    return (
        post is not None
        and post.status == PostStatus.PUBLISHING
        and post.dispatch_version == token
        and post.owner == owner
    )


@dataclass(frozen=True)
class Begin:
    """The point of no return's verdict: true only if the upload may start."""

    started: bool
    quota_exhausted: bool = False

    def __bool__(self) -> bool:
        return self.started


def begin_upload(
    session: Session,
    post_id: str,
    token: int,
    owner: str,
    *,
    now: datetime,
    lease: timedelta,
    handle: str | None = None,
    quota: Quota | None = None,
    quota_read_at: datetime | None = None,
) -> Begin:
    """The point of no return: started (and `upload_started_at` stamped) only if still ours.

    A cancel that took the lock first has set `canceled` and bumped the token: we stop here
    without uploading. From the commit of this stamp on, a cancel answers 409. The platform
    handle prepare made is saved in the same commit, before the irreversible call.

    With a `quota` read before this, the account's row lock serializes its posts here: the
    platform's usage plus every publish of ours it may not count yet (in flight, or recorded
    since the read) must leave a slot, else the post fails PLATFORM_QUOTA_EXHAUSTED now
    rather than be refused after the point of no return.

    Without a quota, the common case is one guarded UPDATE (the row lock as in `claim`);
    anything it did not match is told apart under the lock.
    """
    if quota is None:
        post = _post_row(
            session,
            _BEGIN_UPLOAD,
            {
                "id": post_id,
                "token": token,
                "owner": owner,
                "now": now,
                "handle": handle,
                "lease_until": now + lease,
            },
        )
        if post is not None:
            post_event(
                session,
                EventType.POST_UPLOAD_STARTED,
                post,
                token=token,
                owner=owner,
                handle=handle,
            )
            return Begin(True)
    post = _lock_for_worker(session, post_id)
    if not _ours(post, token, owner):
        return Begin(False)
    assert post is not None
    if post.upload_started_at is None:  # else a retried commit: keep the first stamp
        if quota is not None and quota_read_at is not None:
            used = quota.usage + _unreported_publishes(session, post, quota_read_at)
            if used >= quota.total:
                _fail(
                    session,
                    post,
                    "PLATFORM_QUOTA_EXHAUSTED",
                    f"The account's publishing quota is used up ({used} of {quota.total} in "
                    "the platform's window); the post was not published",
                    None,
                )
                post.updated_at = now
                return Begin(False, quota_exhausted=True)
        post.upload_started_at = now
        post.platform_handle = handle
        post_event(
            session, EventType.POST_UPLOAD_STARTED, post, token=token, owner=owner, handle=handle
        )
    post.lease_expires_at = now + lease
    post.updated_at = now
    return Begin(True)


def _unreported_publishes(session: Session, post: ScheduledPost, since: datetime) -> int:
    """This account's publishes the platform's quota reading may not include: started and
    not yet recorded, or recorded after the reading. Taken under the account's row lock."""
    session.execute(
        select(SocialAccount.id).where(SocialAccount.id == post.social_account_id).with_for_update()
    )
    return (
        session.scalar(
            select(func.count())
            .select_from(ScheduledPost)
            .where(
                ScheduledPost.social_account_id == post.social_account_id,
                ScheduledPost.id != post.id,
                or_(
                    and_(
                        ScheduledPost.status == PostStatus.PUBLISHING,
                        ScheduledPost.upload_started_at.is_not(None),
                    ),
                    and_(
                        ScheduledPost.status.in_([PostStatus.PUBLISHED, PostStatus.DRAFT]),
                        ScheduledPost.published_at >= since,
                    ),
                ),
            )
        )
        or 0
    )


def save_handle(session: Session, post_id: str, token: int, owner: str, handle: str) -> bool:
    """Replace a spent platform handle (an expired container) before the next publish call."""
    post = _lock_for_worker(session, post_id)
    if not _ours(post, token, owner):
        return False
    assert post is not None
    post.platform_handle = handle
    post_event(session, EventType.POST_HANDLE_SAVED, post, token=token, handle=handle)
    return True


def renew_lease(
    session: Session, post_id: str, token: int, owner: str, *, now: datetime, lease: timedelta
) -> bool:
    """Extend our lease while a long upload runs; False once the post is no longer ours."""
    post = _lock_for_worker(session, post_id)
    if not _ours(post, token, owner):
        return False
    assert post is not None
    post.lease_expires_at = now + lease
    return True


class Waiting(StrEnum):
    QUEUED = "queued"  # not yet at the point of no return: back in the queue until retry_at
    RECONCILE = "reconcile"  # past it: still publishing, the reconciler asks again at retry_at


def wait_for_platform(
    session: Session,
    post_id: str,
    token: int,
    owner: str,
    *,
    now: datetime,
    retry_at: datetime,
    reason: str,
) -> Waiting | None:
    """The platform was down for every try: the post waits for it instead of failing.

    Not yet at the point of no return: `queued` again under a new token, dispatched at
    `retry_at` (a cancel wins until a worker claims it again). Past it: it stays
    `publishing` with its upload started (a cancel still answers 409), under a new token
    and a lease ending at `retry_at`, when the reaper hands it to the reconciler, which asks
    the platform before anything is sent again. Neither spends one of the post's attempts:
    nothing went wrong with the post. None if the post is no longer this worker's."""
    post = _lock_for_worker(session, post_id)
    if not _ours(post, token, owner):
        return None
    assert post is not None
    post.dispatch_version += 1
    post.attempts = max(0, post.attempts - 1)
    post.retry_at = retry_at
    post.updated_at = now
    if post.upload_started_at is None:
        post.status = PostStatus.QUEUED.value
        post.owner = None
        post.lease_expires_at = None
        post.task_id = None
        post.dispatched_at = None
        waiting = Waiting.QUEUED
    else:
        post.owner = f"waiting:{post.dispatch_version}"
        post.lease_expires_at = retry_at
        waiting = Waiting.RECONCILE
    post_event(
        session,
        EventType.POST_WAITING_FOR_PLATFORM,
        post,
        reason=reason,
        token=post.dispatch_version,
        retryAt=iso(retry_at),
        phase=waiting.value,
    )
    return waiting


class Recorded(StrEnum):
    """What `record_uploaded` found: it made the change, or the post was already recorded
    with the same platform post (a retried commit, or the reconciler got there first)."""

    NOW = "now"
    ALREADY = "already"


def record_uploaded(
    session: Session, post_id: str, *, external_id: str, external_url: str | None, now: datetime
) -> Recorded | None:
    """Record the platform's post: `published`, or `draft` for a draft-mode post; None when
    the post is no longer one to record (canceled before its upload, failed, reassigned).

    The platform's answer is the truth once the upload has started, whoever holds the lease.
    """
    # The common case in one guarded UPDATE (the row lock as in `claim`); the rest is told
    # apart under the lock.
    post = _post_row(
        session,
        _RECORD_UPLOADED,
        {"id": post_id, "now": now, "external_id": external_id, "external_url": external_url},
    )
    if post is not None:
        post_event(session, EventType.POST_PUBLISHED, post)
        return Recorded.NOW
    post = _lock_for_worker(session, post_id)
    if post is not None and post.external_id == external_id:
        return Recorded.ALREADY
    if post is None or post.status != PostStatus.PUBLISHING or post.upload_started_at is None:
        return None
    _deliver(post, external_id, external_url, now)
    post_event(session, EventType.POST_PUBLISHED, post)
    return Recorded.NOW


def _deliver(
    post: ScheduledPost, external_id: str | None, external_url: str | None, now: datetime
) -> None:
    """The platform holds the post: `published`, or `draft` for a draft-mode post."""
    post.status = (PostStatus.DRAFT if post.mode == Mode.DRAFT else PostStatus.PUBLISHED).value
    post.published_at = now
    post.external_id = external_id
    post.external_url = external_url
    post.last_error = None
    post.owner = None
    post.lease_expires_at = None
    post.awaiting_since = None
    post.poll_at = None
    post.updated_at = now


def record_failed(
    session: Session,
    post_id: str,
    token: int,
    *,
    code: str,
    message: str,
    platform_code: str | None,
    now: datetime,
) -> bool:
    """Record a permanent failure (a 4xx from the platform, or an outcome nobody can know)."""
    post = _lock_for_worker(session, post_id)
    # Only the current token holder may give up on a post; a worker the reaper replaced
    # leaves the verdict to the reconciler.
    if post is None or post.status != PostStatus.PUBLISHING or post.dispatch_version != token:
        return False
    post.updated_at = now
    _fail(session, post, code, message, platform_code)
    return True


@dataclass(frozen=True)
class Poll:
    """A poll task to send after commit: ask the platform about a post it is completing."""

    post_id: str
    token: int
    task_id: str
    eta: datetime


def _arm_poll(post: ScheduledPost, eta: datetime, now: datetime) -> Poll:
    post.poll_at = eta
    post.task_id = str(uuid.uuid4())
    post.dispatched_at = now
    post.updated_at = now
    return Poll(post.id, post.dispatch_version, post.task_id, eta)


def record_accepted(
    session: Session,
    post_id: str,
    token: int,
    owner: str,
    *,
    handle: str,
    now: datetime,
    first_poll: timedelta,
) -> Poll | None:
    """The platform took the post and completes it on its own (TikTok's `publish_id`): save
    the handle in the first commit after the answer, give up the lease, and arm a poll. The
    post stays `publishing`; the reaper leaves it alone (no lease), the dispatcher re-arms a
    lost poll."""
    post = _lock_for_worker(session, post_id)
    if post is not None and post.awaiting_since is not None and post.platform_handle == handle:
        return None  # a retried commit of this very record
    if not _ours(post, token, owner):
        return None
    assert post is not None
    post.platform_handle = handle
    post.awaiting_since = now
    post.owner = None
    post.lease_expires_at = None
    poll = _arm_poll(post, now + first_poll, now)
    post_event(
        session, EventType.POST_HANDLE_SAVED, post, token=token, handle=handle, awaiting=True
    )
    return poll


def _awaiting(post: ScheduledPost | None, token: int) -> bool:
    return (
        post is not None
        and post.status == PostStatus.PUBLISHING
        and post.awaiting_since is not None
        and post.dispatch_version == token
    )


def take_for_poll(session: Session, post_id: str, token: int) -> ScheduledPost | None:
    """The post, if it still awaits the platform under this poll's token."""
    post = _lock_for_worker(session, post_id)
    if not _awaiting(post, token):
        return None
    assert post is not None
    post.polls += 1
    post.redispatches = 0
    return post


def next_poll(
    session: Session, post_id: str, token: int, *, now: datetime, delay: timedelta
) -> Poll | None:
    """Ask again later: the platform is still processing (or could not answer)."""
    post = _lock_for_worker(session, post_id)
    if not _awaiting(post, token):
        return None
    assert post is not None
    return _arm_poll(post, now + delay, now)


def rearm_lost_polls(
    session: Session, *, now: datetime, grace: timedelta, limit: int
) -> list[Poll]:
    """Posts awaiting the platform whose poll should have run by now and did not (its message
    was lost with Redis): a new token and a poll due now. The lost one, should it surface,
    does nothing. (A new token, not a copy: two polls of one token that both hear "still
    processing" would each arm the next, two chains for ever.) A poll merely late behind a
    backlog is made stale by this, so each give-up of one post waits twice as long as the
    last, until a poll of it runs (shared/kit/redispatch.py)."""
    rows = session.scalars(
        select(ScheduledPost)
        .where(
            ScheduledPost.status == PostStatus.PUBLISHING,
            ScheduledPost.awaiting_since.is_not(None),
            ScheduledPost.poll_at < now - lost_backoff(grace, ScheduledPost.redispatches),
        )
        .order_by(ScheduledPost.poll_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    out = []
    for post in rows:
        post.dispatch_version += 1
        post.redispatches += 1
        out.append(_arm_poll(post, now, now))
    return out


@dataclass(frozen=True)
class Reconcile:
    """A post past its point of no return whose worker vanished: ask the platform."""

    post_id: str
    token: int
    task_id: str
    # Not before the old lease plus one platform call's timeout: a call the old worker
    # started in time has ended by then, so asking the platform tells the truth.
    eta: datetime


@dataclass(frozen=True)
class Reaped:
    requeued: list[Dispatch]
    reconcile: list[Reconcile]
    failed: list[str]


def reap_expired(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    max_attempts: int,
    limit: int,
    settle: timedelta = timedelta(0),
) -> Reaped:
    """Take back `publishing` posts whose lease expired (their worker died or hung).

    Not yet at the point of no return: back to `queued` with a new token and a new task, or
    `failed` with ATTEMPTS_EXHAUSTED once the attempts are spent. Past it: a new token and a
    reconcile task that asks the platform by idempotency key; never a blind second upload.
    """
    rows = session.scalars(
        select(ScheduledPost)
        .where(
            ScheduledPost.status == PostStatus.PUBLISHING,
            ScheduledPost.lease_expires_at < now,
        )
        .order_by(ScheduledPost.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    out = Reaped([], [], [])
    for post in rows:
        post.updated_at = now
        if post.upload_started_at is not None and _handed_out(post):
            out.reconcile.append(_reconcile_copy(post, now=now, settle=settle, lease=lease))
            continue
        post.dispatch_version += 1
        if post.upload_started_at is None and post.attempts >= max_attempts:
            _fail(
                session,
                post,
                "ATTEMPTS_EXHAUSTED",
                f"Gave up after {post.attempts} attempts; the post was never uploaded",
                None,
            )
            out.failed.append(post.id)
            continue
        post.task_id = str(uuid.uuid4())
        post.dispatched_at = now
        if post.upload_started_at is None:
            post.status = PostStatus.QUEUED.value
            post.owner = None
            post.lease_expires_at = None
            out.requeued.append(
                Dispatch(post.id, post.dispatch_version, post.task_id, max(post.scheduled_for, now))
            )
            post_event(session, EventType.POST_REQUEUED, post, token=post.dispatch_version)
        else:
            post.owner = f"{_HANDED_OUT}{post.task_id}"
            post.lease_expires_at = now + settle + lease
            post.redispatches = 0
            out.reconcile.append(
                Reconcile(post.id, post.dispatch_version, post.task_id, now + settle)
            )
            post_event(session, EventType.POST_RECONCILING, post, token=post.dispatch_version)
    return out


# A post's owner while its reconcile task is sent and not yet taken, then while it is taken.
_HANDED_OUT: Final = "reconcile:"
_RECONCILING: Final = "reconciling:"


def _handed_out(post: ScheduledPost) -> bool:
    return post.owner is not None and post.owner.startswith(_HANDED_OUT)


def _reconcile_copy(
    post: ScheduledPost, *, now: datetime, settle: timedelta, lease: timedelta
) -> Reconcile:
    """A reconcile task sent and never taken within its lease: lost (Redis emptied), or
    waiting behind a backlog. A copy under the same token, not a replacement, as for a lost
    publish task (shared/kit/redispatch.py): whichever copy is taken first reconciles and
    the other finds it taken; a new token would make the queued one stale, and under a
    backlog slower than the lease, every reaper pass would send another that could never
    run. Each copy waits twice as long as the last before the next."""
    post.redispatches += 1
    post.task_id = str(uuid.uuid4())
    post.dispatched_at = now
    post.owner = f"{_HANDED_OUT}{post.task_id}"
    post.lease_expires_at = now + settle + lost_backoff_delay(lease, post.redispatches)
    return Reconcile(post.id, post.dispatch_version, post.task_id, now + settle)


def take_for_reconcile(
    session: Session, post_id: str, token: int, *, now: datetime, lease: timedelta
) -> ScheduledPost | None:
    """The reconciler's claim: the post, if it still waits for a reconcile task of this
    token and no copy of that task has taken it (the owner says taken, under its lease)."""
    post = _lock_for_worker(session, post_id)
    if (
        post is None
        or post.status != PostStatus.PUBLISHING
        or post.dispatch_version != token
        or post.upload_started_at is None
        or (post.owner or "").startswith(_RECONCILING)
    ):
        return None
    post.attempts += 1
    post.owner = f"{_RECONCILING}{(post.owner or '').removeprefix(_HANDED_OUT)}"
    post.redispatches = 0
    post.lease_expires_at = now + lease
    post.updated_at = now
    return post


# --- the operator's side ------------------------------------------------------------------

OUTCOME_UNKNOWN = "UPLOAD_OUTCOME_UNKNOWN"
OPERATOR_SETTLED = "OPERATOR_SETTLED"


@dataclass(frozen=True)
class Settled:
    """An operator's verdict, recorded: the post as it is now, and what it was before."""

    post: ScheduledPost
    previous_status: str
    previous_error_code: str | None


def _settleable(post: ScheduledPost) -> bool:
    """Only a post nobody can finish on their own: failed with an unknown outcome, or stuck in
    `publishing` past the point of no return. Anything else has (or will get) its own truth."""
    if post.status == PostStatus.FAILED:
        return (post.last_error or {}).get("code") == OUTCOME_UNKNOWN
    return post.status == PostStatus.PUBLISHING and post.upload_started_at is not None


def settle(
    session: Session,
    organization_id: str,
    post_id: str,
    *,
    published: bool,
    external_id: str | None,
    external_url: str | None,
    reason: str | None,
    operator: str,
    now: datetime,
) -> Settled:
    """Record what an operator learned from the platform about a post the system cannot
    settle itself: `published` (or `draft` for a draft-mode post) with the platform's id, or
    `failed` with OPERATOR_SETTLED and the operator's reason.

    Under the row lock, with a new fencing token: a publish, poll or reconcile task still in
    flight for the post finds its token stale and does nothing. Refused (Conflict), changing
    nothing, for any other post, so settling twice is refused too.
    """
    if published and not external_id:
        raise Validation.at("externalId", "A post settled as published needs its external id")
    if not published and not reason:
        raise Validation.at("reason", "A post settled as failed needs a reason")
    post = _lock_post(session, organization_id, post_id)
    settled = Settled(post, post.status, (post.last_error or {}).get("code"))
    if not _settleable(post):
        shown = post.status + (f" ({settled.previous_error_code})" if post.last_error else "")
        raise Conflict(
            f"Only a post failed with {OUTCOME_UNKNOWN}, or publishing after its upload "
            f"started, can be settled; {post.public_id} is {shown}",
            {"status": post.status},
        )
    actor = Actor(organization_id, None, f"cli:{operator}")
    post.dispatch_version += 1
    post.updated_at = now
    if not published:
        assert reason is not None
        _fail(
            session,
            post,
            OPERATOR_SETTLED,
            reason,
            None,
            actor=actor,
            reason=reason,
            settledBy=operator,
            previous=settled.previous_status,
        )
        return settled
    _deliver(post, external_id, external_url, now)
    post_event(
        session,
        EventType.POST_PUBLISHED,
        post,
        actor=actor,
        reason=reason,
        settledBy=operator,
        previous=settled.previous_status,
    )
    return settled


def _fail(
    session: Session,
    post: ScheduledPost,
    code: str,
    message: str,
    platform_code: str | None,
    *,
    actor: Actor | None = None,
    reason: str | None = None,
    **more: Any,
) -> None:
    post.status = PostStatus.FAILED.value
    post.last_error = {"code": code, "message": message, "platformCode": platform_code}
    post.owner = None
    post.lease_expires_at = None
    post.awaiting_since = None
    post.poll_at = None
    post_event(session, EventType.POST_FAILED, post, actor=actor, reason=reason, **more)


# --- reads ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostFilter:
    statuses: list[PostStatus]
    social_account_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_posts_query(
    organization_id: str, project_id: str, flt: PostFilter, after: tuple[datetime, str] | None
) -> Select[ScheduledPost]:
    """Newest `scheduledFor` first, keyset-paginated on (scheduled_for, public_id)."""
    q = select(ScheduledPost).where(
        ScheduledPost.organization_id == organization_id,
        ScheduledPost.project_id == project_id,
    )
    if flt.statuses:
        q = q.where(ScheduledPost.status.in_([s.value for s in flt.statuses]))
    if flt.social_account_id is not None:
        q = q.where(ScheduledPost.social_account_id == flt.social_account_id)
    if flt.since is not None:
        q = q.where(ScheduledPost.scheduled_for >= flt.since)
    if flt.until is not None:
        q = q.where(ScheduledPost.scheduled_for <= flt.until)
    if after is not None:
        q = q.where(
            tuple_(ScheduledPost.scheduled_for, ScheduledPost.public_id)
            < tuple_(after[0], after[1])
        )
    return q.order_by(ScheduledPost.scheduled_for.desc(), ScheduledPost.public_id.desc())
