"""`publisher posts`: the operator's view of posts, read from the event log and the post's
row, and the operator's verdict on a post the system cannot settle on its own.

A post is named by its wire id (`ScheduledPost.public_id`), which is unique only within an
organization: `--org` says which one when two organizations chose the same id.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.kit.errors import PublisherError, Validation

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.models import Event, ScheduledPost, SocialAccount

Handler = Callable[[argparse.Namespace], int]

# The event data worth a column in `posts show`, in the order shown; JSON output has it all.
EVENT_FIELDS = (
    "status",
    "token",
    "owner",
    "attempt",
    "handle",
    "awaiting",
    "externalId",
    "lastError",
    "previous",
    "previousScheduledFor",
    "settledBy",
)
MAX_OPERATOR = 100


class Refused(Exception):
    """A command that cannot do what it was asked: one line on stderr, and its exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _one_line_errors(handler: Handler) -> Handler:
    """Every refusal as one line and a non-zero exit: 2 for bad input, 1 for a post the
    command cannot act on (unknown, or not in a state it may change)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except Refused as exc:
            print(f"publisher: {exc.message}", file=sys.stderr)
            return exc.exit_code
        except Validation as exc:
            print(f"publisher: {exc.message}", file=sys.stderr)
            return 2
        except PublisherError as exc:
            print(f"publisher: {exc.message}", file=sys.stderr)
            return 1

    return run


# --- finding a post ------------------------------------------------------------------------


def organization_of(session: Session, post_id: str, org: str | None) -> str:
    """The organization whose post has this wire id. Only the id's column is read, so a
    transition that locks the row next loads it fresh under the lock."""
    from sqlalchemy import select

    from shared.kit import ids
    from shared.models import ScheduledPost

    where = f" in {org}" if org else ""
    if not ids.is_valid(post_id, ids.SCHEDULED_POST):
        raise Refused(f"no post {post_id}{where} (a post id is sp_ followed by a UUID)")
    query = select(ScheduledPost.organization_id).where(ScheduledPost.public_id == post_id)
    if org is not None:
        query = query.where(ScheduledPost.organization_id == org)
    found = sorted(set(session.scalars(query)))
    if not found:
        raise Refused(f"no post {post_id}{where}")
    if len(found) > 1:
        raise Refused(
            f"{post_id} names posts in {len(found)} organizations ({', '.join(found)}); "
            "pass --org to say which",
            exit_code=2,
        )
    return found[0]


def _events_of(session: Session, post: ScheduledPost) -> list[Event]:
    """The post's events, oldest first: the row lock orders a post's transitions, and the
    log's serial id follows that order."""
    from sqlalchemy import select

    from shared.models import Event

    return list(
        session.scalars(
            select(Event)
            .where(
                Event.organization_id == post.organization_id,
                Event.subject_type == "scheduled_post",
                Event.subject_id == post.id,
            )
            .order_by(Event.id)
        )
    )


# --- rendering -----------------------------------------------------------------------------


def _ms(value: datetime | None) -> str | None:
    """UTC to the millisecond: several transitions can fall within one second."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def account_view(account: SocialAccount) -> dict[str, Any]:
    """What an operator needs to ask the platform about the post: where the account posts
    and as whom. Never its credentials."""
    return {
        "id": account.id,
        "handle": account.handle,
        "adapter": account.adapter,
        "platformUserId": account.platform_user_id,
        "baseUrl": account.base_url,
        "status": account.status,
    }


def post_summary(post: ScheduledPost) -> dict[str, Any]:
    """The post's row as an operator reads it: where it stands and who holds it."""
    from shared.kit.clock import iso

    return {
        "id": post.public_id,
        "internalId": post.id,
        "organizationId": post.organization_id,
        "socialAccountId": post.social_account_id,
        "platform": post.platform,
        "mode": post.mode,
        "status": post.status,
        "scheduledFor": iso(post.scheduled_for),
        "attempts": post.attempts,
        "attemptedAt": iso(post.attempted_at),
        "fencingToken": post.dispatch_version,
        "owner": post.owner,
        "leaseExpiresAt": iso(post.lease_expires_at),
        "uploadStartedAt": iso(post.upload_started_at),
        "platformHandle": post.platform_handle,
        "externalId": post.external_id,
        "externalUrl": post.external_url,
        "publishedAt": iso(post.published_at),
        "lastError": post.last_error,
    }


def event_view(event: Event) -> dict[str, Any]:
    """One event as `--json` shows it: who asked, why, and its whole data."""
    return {
        "id": event.public_id,
        "type": event.type,
        "createdAt": _ms(event.created_at),
        "actorKeyId": event.actor_key_id,
        "requestId": event.request_id,
        "reason": event.reason,
        "data": event.data or {},
    }


def deliveries_of(session: Session, events: list[Event]) -> list[dict[str, Any]]:
    """The webhook deliveries of these events, oldest first, each with its attempts."""
    from sqlalchemy import select

    from shared.models import WebhookDelivery
    from shared.webhooks.deliveries import attempts_of

    by_id = {e.id: e for e in events}
    rows = list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.event_id.in_(list(by_id)))
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        )
    )
    attempts = attempts_of(session, [d.id for d in rows])
    return [
        {
            "id": d.id,
            "endpointId": d.endpoint_id,
            "eventId": d.event_public_id,
            "type": by_id[d.event_id].type,
            "replayOf": d.replay_of,
            "status": d.status,
            "attempts": [
                {
                    "number": a.number,
                    "startedAt": _ms(a.started_at),
                    "statusCode": a.status_code,
                    "error": a.error,
                    "durationMs": a.duration_ms,
                }
                for a in attempts[d.id]
            ],
        }
        for d in rows
    ]


def delivery_line(delivery: dict[str, Any]) -> str:
    """`type  endpoint  status  attempts: 503, 503, 200` for one webhook delivery."""
    tries = ", ".join(
        str(a["statusCode"]) if a["statusCode"] is not None else _value(a["error"] or "no answer")
        for a in delivery["attempts"]
    )
    replay = f" replay of {delivery['replayOf']}" if delivery["replayOf"] else ""
    return (
        f"{delivery['type']:<20}  {delivery['endpointId']}  {delivery['status']}"
        f"  attempts: {tries or '-'}  event {delivery['eventId']}{replay}"
    )


def _value(value: Any) -> str:
    """A bare word stays bare; anything with spaces or quotes is quoted, so a line splits on
    spaces unambiguously."""
    if isinstance(value, dict):
        value = f"{value.get('code')}: {value.get('message')}"
    text = value if isinstance(value, str) else json.dumps(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text)
    return text


def event_line(event: dict[str, Any]) -> str:
    """`time  type  status=… token=… … key=… request=… reason=…` for one event."""
    data = event["data"]
    fields = [(name, data.get(name)) for name in EVENT_FIELDS]
    fields += [
        ("key", event["actorKeyId"]),
        ("request", event["requestId"]),
        ("reason", event["reason"]),
    ]
    shown = " ".join(f"{name}={_value(value)}" for name, value in fields if value is not None)
    return f"{event['createdAt']}  {event['type']:<20}  {shown}".rstrip()


def _heading(summary: dict[str, Any]) -> list[str]:
    """Which post this is, and the account to ask the platform with."""
    internal = summary["internalId"]
    heading = f"{summary['id']} in {summary['organizationId']} ({summary['platform']}, "
    heading += f"{summary['mode']}" + ("" if internal == summary["id"] else f"; id {internal}")
    account = summary["account"]
    if account is None:
        return [heading + ")"]
    user = account["platformUserId"] or "-"
    return [
        heading + ")",
        f"account {account['id']} @{account['handle']} ({account['status']}): "
        f"{account['adapter']} at {account['baseUrl']}, platform user {user}",
    ]


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The row, one `name: value` a line, `-` where unset."""
    error = summary["lastError"]
    rows = {
        "status": summary["status"],
        "scheduledFor": summary["scheduledFor"],
        "attempts": summary["attempts"],
        "attemptedAt": summary["attemptedAt"],
        "fencingToken": summary["fencingToken"],
        "owner": summary["owner"],
        "leaseExpiresAt": summary["leaseExpiresAt"],
        "uploadStartedAt": summary["uploadStartedAt"],
        "platformHandle": summary["platformHandle"],
        "externalId": summary["externalId"],
        "externalUrl": summary["externalUrl"],
        "lastError": f"{error.get('code')}: {error.get('message')}" if error else None,
    }
    return [f"  {name}: {'-' if value is None else value}" for name, value in rows.items()]


# --- the commands --------------------------------------------------------------------------


@_one_line_errors
def cmd_show(args: argparse.Namespace) -> int:
    """A post's whole life from the event log, then where its row stands now."""
    from shared.kit.db import new_session
    from shared.models import SocialAccount
    from shared.publishing.posts import get_post

    with new_session() as session:
        org = organization_of(session, args.post_id, args.org)
        post = get_post(session, org, args.post_id)
        summary = post_summary(post)
        account = session.get(SocialAccount, post.social_account_id)
        summary["account"] = account_view(account) if account is not None else None
        rows = _events_of(session, post)
        events = [event_view(e) for e in rows]
        webhooks = deliveries_of(session, rows)
    if args.json:
        print(json.dumps({"post": summary, "events": events, "webhookDeliveries": webhooks}))
        return 0
    for line in _heading(summary):
        print(line)
    print(f"events, oldest first ({len(events)}):")
    for event in events:
        print(f"  {event_line(event)}")
    print(f"webhook deliveries ({len(webhooks)}):")
    for delivery in webhooks:
        print(f"  {delivery_line(delivery)}")
    print("now:")
    for line in summary_lines(summary):
        print(line)
    return 0


@_one_line_errors
def cmd_list(args: argparse.Namespace) -> int:
    """Posts by status and error code, newest `scheduledFor` first: the worklist of posts
    waiting for an operator (`--status failed --code UPLOAD_OUTCOME_UNKNOWN`)."""
    from sqlalchemy import select

    from shared.kit.clock import iso
    from shared.kit.db import new_session
    from shared.models import ScheduledPost

    if args.limit < 1:
        raise Refused("--limit must be at least 1", exit_code=2)
    query = select(ScheduledPost)
    if args.status:
        query = query.where(ScheduledPost.status.in_(args.status))
    if args.code is not None:
        query = query.where(ScheduledPost.last_error.op("->>")("code") == args.code)
    if args.org is not None:
        query = query.where(ScheduledPost.organization_id == args.org)
    query = query.order_by(
        ScheduledPost.scheduled_for.desc(), ScheduledPost.public_id.desc()
    ).limit(args.limit)
    with new_session() as session:
        items = [
            {
                "organizationId": p.organization_id,
                "id": p.public_id,
                "platform": p.platform,
                "status": p.status,
                "scheduledFor": iso(p.scheduled_for),
                "errorCode": (p.last_error or {}).get("code"),
            }
            for p in session.scalars(query)
        ]
    if args.json:
        print(json.dumps({"items": items}))
        return 0
    for item in items:
        print("  ".join("-" if value is None else str(value) for value in item.values()))
    return 0


def _settle_inputs(args: argparse.Namespace) -> str:
    """The checks argparse cannot make: what each verdict needs, and values that fit their
    columns. Returns the operator's name."""
    from shared.models import ScheduledPost

    if args.published and not args.external_id:
        raise Refused("--published needs --external-id (the platform's id for the post)", 2)
    if args.failed and not args.reason:
        raise Refused("--failed needs --reason (what the platform said)", 2)
    if args.failed and (args.external_id or args.external_url):
        raise Refused("--external-id and --external-url go with --published only", 2)
    columns = ScheduledPost.__table__.c
    for flag, value, column in (
        ("--external-id", args.external_id, columns.external_id),
        ("--external-url", args.external_url, columns.external_url),
    ):
        longest = getattr(column.type, "length", None)
        if value is not None and longest is not None and len(value) > longest:
            raise Refused(f"{flag} is longer than {longest} characters", 2)
    operator = (args.operator or login_name()).strip()
    if not operator or len(operator) > MAX_OPERATOR:
        raise Refused(f"--operator must be 1 to {MAX_OPERATOR} characters", 2)
    return str(operator)


def login_name() -> str:
    """Who runs the command, when --operator does not say: the event log keeps it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


@_one_line_errors
def cmd_settle(args: argparse.Namespace) -> int:
    """Record the operator's verdict on a post whose outcome only the platform knows: one
    transition (`posts.settle`), one transaction, one event with who decided and why."""
    from shared.kit.clock import utcnow
    from shared.kit.db import transaction
    from shared.publishing import posts

    operator = _settle_inputs(args)
    with transaction() as tx:
        org = organization_of(tx.session, args.post_id, args.org)
        done = posts.settle(
            tx.session,
            org,
            args.post_id,
            published=args.published,
            external_id=args.external_id,
            external_url=args.external_url,
            reason=args.reason,
            operator=operator,
            now=utcnow(),
        )
        summary = post_summary(done.post)
    previous = {"status": done.previous_status, "errorCode": done.previous_error_code}
    if args.json:
        print(json.dumps({"post": summary, "previous": previous, "settledBy": operator}))
        return 0
    was = done.previous_status + (
        f" ({done.previous_error_code})" if done.previous_error_code else ""
    )
    now = summary["status"]
    if summary["externalId"] is not None:
        now += f", externalId {summary['externalId']}"
    elif summary["lastError"]:
        now += f" ({summary['lastError']['code']})"
    print(
        f"settled {summary['id']} in {summary['organizationId']}: {was} -> {now}; "
        f"fencing token {summary['fencingToken']}; by {operator}"
    )
    return 0


# --- the parser ----------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """`publisher posts show|list|settle`, on the top-level subparsers `sub`."""
    from shared.models import PostStatus

    posts = sub.add_parser("posts", help="scheduled posts, for operators").add_subparsers(
        dest="action", required=True
    )
    org_help = "the post's organization (org_…): a wire id is unique only within one"

    show = posts.add_parser("show", help="a post's whole life from the event log, and its row")
    show.add_argument("post_id", help="the wire id (sp_…)")
    show.add_argument("--org", default=None, help=org_help)
    show.add_argument("--json", action="store_true")

    listing = posts.add_parser("list", help="posts by status and error code, newest first")
    listing.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in PostStatus],
        default=[],
        help="repeatable",
    )
    listing.add_argument("--code", default=None, help="lastError.code, e.g. UPLOAD_OUTCOME_UNKNOWN")
    listing.add_argument("--org", default=None, help="one organization's posts only")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")

    settle = posts.add_parser(
        "settle",
        help="record what the platform holds for a post failed UPLOAD_OUTCOME_UNKNOWN, or "
        "stuck publishing after its upload started",
    )
    settle.add_argument("post_id", help="the wire id (sp_…)")
    verdict = settle.add_mutually_exclusive_group(required=True)
    verdict.add_argument(
        "--published", action="store_true", help="the platform has it (draft for a draft post)"
    )
    verdict.add_argument("--failed", action="store_true", help="the platform has nothing")
    settle.add_argument("--external-id", default=None, help="the platform's id for the post")
    settle.add_argument("--external-url", default=None, help="its public URL, if any")
    settle.add_argument("--reason", default=None, help="why (required with --failed)")
    settle.add_argument("--org", default=None, help=org_help)
    settle.add_argument("--operator", default=None, help="who decides (default: the login name)")
    settle.add_argument("--json", action="store_true")


HANDLERS: dict[tuple[str, str | None], Handler] = {
    ("posts", "show"): cmd_show,
    ("posts", "list"): cmd_list,
    ("posts", "settle"): cmd_settle,
}
