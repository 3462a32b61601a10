"""`Layers`, the client: one attribute per tag of the API (content, social, publishing,
webhooks, health), one method per operation, keyword arguments only."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Required, TypedDict, TypeVar

import httpx

from layers_client._http import Answer, RetryPolicy, Transport, error_of, result
from layers_client.errors import ConflictError, LayersError
from layers_client.models import (
    ApprovalPolicy,
    BlockedOnApproval,
    CanceledPost,
    ContentContainer,
    Health,
    Page,
    RescheduledPost,
    ScheduledPost,
    ScheduledPosts,
    ScheduleIntent,
    ScheduleResult,
    SocialAccount,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.layers.com"

Mode = Literal["publish", "draft"]
Platform = Literal["tiktok", "instagram"]
PostStatus = Literal["queued", "publishing", "published", "draft", "failed", "canceled"]
AccountStatus = Literal["connected", "reauth_required", "disconnected"]
EventType = Literal[
    "post.scheduled",
    "post.published",
    "post.failed",
    "post.canceled",
    "content.approved",
    "content.rejected",
    "social_account.connected",
    "social_account.needs_reauth",
    "social_account.revoked",
]
Time = datetime | str


class MediaParams(TypedDict, total=False):
    url: Required[str]
    type: Literal["video", "image"]  # guessed from the URL when left out


class Target(TypedDict, total=False):
    """One account a schedule or publish-now goes to (camelCase keys are accepted too)."""

    social_account_id: Required[str]
    mode: Mode
    scheduled_post_id: str
    caption_override: str
    first_comment_override: str


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _wire_targets(targets: Sequence[Target | Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{_camel(k): v for k, v in t.items() if v is not None} for t in targets]


def _wire_media(media: Sequence[MediaParams | Mapping[str, Any] | str]) -> list[dict[str, Any]]:
    return [{"url": m} if isinstance(m, str) else dict(m) for m in media]


def _wire_time(name: str, value: Time | None) -> str | None:
    """A time as the API takes it: with an offset; a naive datetime is refused here rather
    than read in some time zone."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    return value.isoformat()


def iso_duration(value: timedelta | str | None) -> str | None:
    """A timedelta as the ISO 8601 duration the API takes (`PT1H30M`); strings pass."""
    if value is None or isinstance(value, str):
        return value
    seconds = value.total_seconds()
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError("a duration must be a positive number of whole seconds")
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")


def _walk(list_page: Callable[..., Page[T]], **filters: Any) -> Iterator[T]:
    """Every item of every page of `list_page(**filters)`, from the first on, following
    `next_cursor`; a page is fetched when it is reached. A cursor answered twice (the same
    one again, or a loop of several) would never end: LayersError INVALID_RESPONSE."""
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        page = list_page(cursor=cursor, **filters)
        yield from page.items
        if page.next_cursor is None:
            return
        if page.next_cursor in seen:
            raise LayersError(
                f"The API answered the same cursor again ({page.next_cursor})",
                code="INVALID_RESPONSE",
            )
        cursor = page.next_cursor
        seen.add(cursor)


def _page_of(
    item: Callable[[Mapping[str, Any], str | None], T],
) -> Callable[[Any, str | None], Page[T]]:
    return lambda body, rid: Page.from_wire(body, item, rid)


class _Resource:
    def __init__(self, transport: Transport) -> None:
        self._t = transport


class ContentAPI(_Resource):
    """Content containers and the approval gate (tag `content`)."""

    def upload(
        self,
        *,
        project_id: str,
        caption: str,
        media: Sequence[MediaParams | Mapping[str, Any] | str],
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> ContentContainer:
        """A content container: a caption and 1 to 10 media references (`https://` URLs,
        or `{"url", "type"}`)."""
        return self._t.call(
            ContentContainer.from_wire,
            "uploadContent",
            path={"projectId": project_id},
            json={"caption": caption, "media": _wire_media(media)},
            idempotency_key=idempotency_key,
            request_id=request_id,
        )

    def get(self, *, id: str, request_id: str | None = None) -> ContentContainer:
        return self._t.call(
            ContentContainer.from_wire,
            "getContent",
            path={"containerId": id},
            request_id=request_id,
        )

    def get_approval_policy(
        self, *, project_id: str, request_id: str | None = None
    ) -> ApprovalPolicy:
        return self._t.call(
            ApprovalPolicy.from_wire,
            "getApprovalPolicy",
            path={"projectId": project_id},
            request_id=request_id,
        )

    def set_approval_policy(
        self,
        *,
        project_id: str,
        requires_approval: bool = False,
        first_n_posts_blocked: int = 0,
        auto_approve_after: timedelta | str | None = None,
        request_id: str | None = None,
    ) -> ApprovalPolicy:
        """Replace the project's policy; what is left out takes its default (off)."""
        return self._t.call(
            ApprovalPolicy.from_wire,
            "setApprovalPolicy",
            path={"projectId": project_id},
            json={
                "requiresApproval": requires_approval,
                "firstNPostsBlocked": first_n_posts_blocked,
                "autoApproveAfter": iso_duration(auto_approve_after),
            },
            request_id=request_id,
        )

    def approve(
        self,
        *,
        id: str,
        reason: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> ContentContainer:
        """Approve content awaiting approval: its blocked intents become posts."""
        return self._decide("approveContent", id, reason, idempotency_key, request_id)

    def reject(
        self,
        *,
        id: str,
        reason: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> ContentContainer:
        """Reject content awaiting approval, for good."""
        return self._decide("rejectContent", id, reason, idempotency_key, request_id)

    def _decide(
        self,
        op_id: str,
        id: str,
        reason: str | None,
        idempotency_key: str | None,
        request_id: str | None,
    ) -> ContentContainer:
        return self._t.call(
            ContentContainer.from_wire,
            op_id,
            path={"containerId": id},
            json={"reason": reason} if reason is not None else {},
            idempotency_key=idempotency_key,
            request_id=request_id,
        )


class SocialAPI(_Resource):
    """Social accounts (tag `social`)."""

    def list_accounts(
        self,
        *,
        project_id: str,
        platform: Platform | None = None,
        status: AccountStatus | None = None,
        cursor: str | None = None,
        limit: int | None = None,
        request_id: str | None = None,
    ) -> Page[SocialAccount]:
        return self._t.call(
            _page_of(SocialAccount.from_wire),
            "listSocialAccounts",
            path={"projectId": project_id},
            params={"platform": platform, "status": status, "cursor": cursor, "limit": limit},
            request_id=request_id,
        )

    def iter_accounts(
        self,
        *,
        project_id: str,
        platform: Platform | None = None,
        status: AccountStatus | None = None,
        limit: int | None = None,
        request_id: str | None = None,
    ) -> Iterator[SocialAccount]:
        """Every account across pages (`limit`: the page size)."""
        return _walk(
            self.list_accounts,
            project_id=project_id,
            platform=platform,
            status=status,
            limit=limit,
            request_id=request_id,
        )


def _schedule_result(body: Any, rid: str | None) -> ScheduleResult:
    if isinstance(body, Mapping) and body.get("gateStatus") == "blocked_on_approval":
        return BlockedOnApproval.from_wire(body, rid)
    return ScheduledPosts.from_wire(body, rid)


class PublishingAPI(_Resource):
    """Scheduled posts and schedule intents (tag `publishing`)."""

    def schedule(
        self,
        *,
        container_id: str,
        scheduled_for: Time,
        targets: Sequence[Target | Mapping[str, Any]],
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> ScheduleResult:
        """One `queued` post per target at `scheduled_for` (ScheduledPosts), or, for content
        awaiting approval, the saved intent (BlockedOnApproval): `result.blocked` says which."""
        return self._t.call(
            _schedule_result,
            "scheduleContent",
            path={"containerId": container_id},
            json={
                "scheduledFor": _wire_time("scheduled_for", scheduled_for),
                "targets": _wire_targets(targets),
            },
            idempotency_key=idempotency_key,
            request_id=request_id,
        )

    def publish_now(
        self,
        *,
        container_id: str,
        targets: Sequence[Target | Mapping[str, Any]],
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> ScheduledPosts:
        """Posts due 30 s from now: the window in which `cancel` takes a mistake back."""
        return self._t.call(
            ScheduledPosts.from_wire,
            "publishContentNow",
            path={"containerId": container_id},
            json={"targets": _wire_targets(targets)},
            idempotency_key=idempotency_key,
            request_id=request_id,
        )

    def get_scheduled_post(self, *, id: str, request_id: str | None = None) -> ScheduledPost:
        return self._t.call(
            ScheduledPost.from_wire, "getScheduledPost", path={"id": id}, request_id=request_id
        )

    def list_scheduled_posts(
        self,
        *,
        project_id: str,
        status: PostStatus | Sequence[PostStatus] | None = None,
        social_account_id: str | None = None,
        since: Time | None = None,
        until: Time | None = None,
        cursor: str | None = None,
        limit: int | None = None,
        request_id: str | None = None,
    ) -> Page[ScheduledPost]:
        """A project's posts, newest `scheduled_for` first; `status` may name several."""
        statuses = [status] if isinstance(status, str) else list(status) if status else None
        return self._t.call(
            _page_of(ScheduledPost.from_wire),
            "listScheduledPosts",
            path={"projectId": project_id},
            params={
                "status": statuses,
                "socialAccountId": social_account_id,
                "since": _wire_time("since", since),
                "until": _wire_time("until", until),
                "cursor": cursor,
                "limit": limit,
            },
            request_id=request_id,
        )

    def iter_scheduled_posts(
        self,
        *,
        project_id: str,
        status: PostStatus | Sequence[PostStatus] | None = None,
        social_account_id: str | None = None,
        since: Time | None = None,
        until: Time | None = None,
        limit: int | None = None,
        request_id: str | None = None,
    ) -> Iterator[ScheduledPost]:
        """Every post across pages, with the same filters on each (`limit`: page size)."""
        return _walk(
            self.list_scheduled_posts,
            project_id=project_id,
            status=status,
            social_account_id=social_account_id,
            since=since,
            until=until,
            limit=limit,
            request_id=request_id,
        )

    def reschedule(
        self,
        *,
        id: str,
        scheduled_for: Time,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> RescheduledPost:
        """Move a `queued` post to a new time, at least 30 s ahead."""
        return self._t.call(
            RescheduledPost.from_wire,
            "rescheduleScheduledPost",
            path={"id": id},
            json={"scheduledFor": _wire_time("scheduled_for", scheduled_for)},
            idempotency_key=idempotency_key,
            request_id=request_id,
        )

    def cancel(
        self, *, id: str, reason: str | None = None, request_id: str | None = None
    ) -> CanceledPost:
        """Cancel a post that has not started its platform upload: a result means it never
        reaches the platform. Too late (the upload started, or the post is terminal) raises
        ConflictError, whose `current_status` says which.

        Retried like any call. A retry that follows a lost answer (a timeout, a dropped
        connection, a 503) and is told 409 with status `canceled` returns a CanceledPost with
        `recovered=True`: the post is canceled, which is what was asked. A 409 `canceled` on
        the first attempt, or after only 429s, is raised: someone else canceled it."""
        answer = self._t.send(
            "cancelScheduledPost",
            path={"id": id},
            json={"reason": reason} if reason is not None else None,
            request_id=request_id,
        )
        if _recovered_cancel(answer):
            return CanceledPost(
                id=id,
                status="canceled",
                canceled_at=None,
                recovered=True,
                request_id=answer.request_id,
            )
        return result(answer, CanceledPost.from_wire)

    def list_schedule_intents(
        self,
        *,
        container_id: str,
        cursor: str | None = None,
        limit: int | None = None,
        request_id: str | None = None,
    ) -> Page[ScheduleIntent]:
        return self._t.call(
            _page_of(ScheduleIntent.from_wire),
            "listScheduleIntents",
            path={"containerId": container_id},
            params={"cursor": cursor, "limit": limit},
            request_id=request_id,
        )

    def iter_schedule_intents(
        self, *, container_id: str, limit: int | None = None, request_id: str | None = None
    ) -> Iterator[ScheduleIntent]:
        return _walk(
            self.list_schedule_intents,
            container_id=container_id,
            limit=limit,
            request_id=request_id,
        )

    def get_schedule_intent(self, *, id: str, request_id: str | None = None) -> ScheduleIntent:
        return self._t.call(
            ScheduleIntent.from_wire,
            "getScheduleIntent",
            path={"intentId": id},
            request_id=request_id,
        )

    def cancel_schedule_intent(
        self, *, id: str, reason: str | None = None, request_id: str | None = None
    ) -> ScheduleIntent:
        """Cancel a `blocked` intent. Once promoted it is ConflictError, whose
        `details["scheduledPostIds"]` are the posts to cancel instead. A retry after a lost
        answer that is told `canceled` reads the intent and returns it, as `cancel` does."""
        answer = self._t.send(
            "cancelScheduleIntent",
            path={"intentId": id},
            json={"reason": reason} if reason is not None else None,
            request_id=request_id,
        )
        if _recovered_cancel(answer):
            try:
                return self.get_schedule_intent(id=id, request_id=request_id)
            except LayersError as exc:
                raise error_of(answer) from exc
        return result(answer, ScheduleIntent.from_wire)


def _recovered_cancel(answer: Answer) -> bool:
    """A 409 `canceled` answering the retry of a cancel whose earlier answer was lost."""
    if answer.status != 409 or not answer.earlier_attempt_unknown:
        return False
    error = error_of(answer)
    return isinstance(error, ConflictError) and error.current_status == "canceled"


class WebhooksAPI(_Resource):
    """Webhook endpoints and their deliveries (tag `webhooks`). To verify what arrives, see
    `layers_client.webhooks.verify`."""

    def create_endpoint(
        self,
        *,
        url: str,
        event_types: Sequence[EventType | str],
        description: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> WebhookEndpointWithSecret:
        """Register an endpoint; the answer's `secret` is shown this once."""
        body: dict[str, Any] = {"url": url, "eventTypes": list(event_types)}
        if description is not None:
            body["description"] = description
        return self._t.call(
            WebhookEndpointWithSecret.from_wire,
            "createWebhookEndpoint",
            json=body,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )

    def list_endpoints(
        self, *, cursor: str | None = None, limit: int | None = None, request_id: str | None = None
    ) -> Page[WebhookEndpoint]:
        return self._t.call(
            _page_of(WebhookEndpoint.from_wire),
            "listWebhookEndpoints",
            params={"cursor": cursor, "limit": limit},
            request_id=request_id,
        )

    def iter_endpoints(
        self, *, limit: int | None = None, request_id: str | None = None
    ) -> Iterator[WebhookEndpoint]:
        return _walk(self.list_endpoints, limit=limit, request_id=request_id)

    def get_endpoint(self, *, id: str, request_id: str | None = None) -> WebhookEndpoint:
        return self._t.call(
            WebhookEndpoint.from_wire,
            "getWebhookEndpoint",
            path={"endpointId": id},
            request_id=request_id,
        )

    def update_endpoint(
        self,
        *,
        id: str,
        url: str | None = None,
        event_types: Sequence[EventType | str] | None = None,
        description: str | None = None,
        status: Literal["enabled", "disabled"] | None = None,
        request_id: str | None = None,
    ) -> WebhookEndpoint:
        """Change what is given (None leaves a field as it is); `status="enabled"` also
        sends every delivery that waited."""
        body: dict[str, Any] = {
            "url": url,
            "eventTypes": list(event_types) if event_types is not None else None,
            "description": description,
            "status": status,
        }
        return self._t.call(
            WebhookEndpoint.from_wire,
            "updateWebhookEndpoint",
            path={"endpointId": id},
            json={k: v for k, v in body.items() if v is not None},
            request_id=request_id,
        )

    def rotate_secret(self, *, id: str, request_id: str | None = None) -> WebhookEndpointWithSecret:
        """A new signing secret; the previous one signs beside it for 24 h. Not retried
        once the request may have left (a second rotation would retire the secret this one
        returns the previous of)."""
        return self._t.call(
            WebhookEndpointWithSecret.from_wire,
            "rotateWebhookEndpointSecret",
            path={"endpointId": id},
            request_id=request_id,
        )

    def ping(self, *, id: str, request_id: str | None = None) -> WebhookDelivery:
        """Send a signed `test.ping` to this endpoint alone; the answer is its delivery."""
        return self._t.call(
            WebhookDelivery.from_wire,
            "pingWebhookEndpoint",
            path={"endpointId": id},
            request_id=request_id,
        )

    def list_deliveries(
        self,
        *,
        endpoint_id: str,
        cursor: str | None = None,
        limit: int | None = None,
        request_id: str | None = None,
    ) -> Page[WebhookDelivery]:
        """An endpoint's deliveries, newest first, with their attempts."""
        return self._t.call(
            _page_of(WebhookDelivery.from_wire),
            "listWebhookDeliveries",
            path={"endpointId": endpoint_id},
            params={"cursor": cursor, "limit": limit},
            request_id=request_id,
        )

    def iter_deliveries(
        self, *, endpoint_id: str, limit: int | None = None, request_id: str | None = None
    ) -> Iterator[WebhookDelivery]:
        return _walk(
            self.list_deliveries, endpoint_id=endpoint_id, limit=limit, request_id=request_id
        )

    def replay_delivery(self, *, id: str, request_id: str | None = None) -> WebhookDelivery:
        """Send a delivery's event again, as a new event whose body names the original."""
        return self._t.call(
            WebhookDelivery.from_wire,
            "replayWebhookDelivery",
            path={"deliveryId": id},
            request_id=request_id,
        )


class HealthAPI(_Resource):
    """Liveness and readiness (tag `health`; no key needed, none is refused)."""

    def live(self, *, request_id: str | None = None) -> Health:
        return self._t.call(Health.from_wire, "getLiveness", request_id=request_id)

    def ready(self, *, request_id: str | None = None) -> Health:
        """`ok` false (not an error, not retried) when the server answers 503: a dependency
        is down, `checks` says which."""
        answer = self._t.send("getReadiness", request_id=request_id, retry_unavailable=False)
        if answer.status == 503 and isinstance(answer.body, Mapping) and "checks" in answer.body:
            return Health.from_wire(answer.body, answer.request_id, ok=False)
        return result(answer, Health.from_wire)


class Layers:
    """The client of the Layers publishing API v1.

    `Layers(api_key="lp_live_…", base_url="https://…")`; the key and the URL default to the
    environment's LAYERS_API_KEY and LAYERS_BASE_URL. Retries: `max_retries` after the first
    attempt, with backoff from `backoff_base` up to `backoff_cap` seconds, and Retry-After
    waits up to `max_retry_after` (longer is raised at once). `sleep` and `rng` are what the
    waits use (tests pass their own); `transport` is httpx's (a proxy, a mock). Close it, or
    use it as a context manager."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._transport = Transport(
            api_key=api_key or os.environ.get("LAYERS_API_KEY", ""),
            base_url=base_url or os.environ.get("LAYERS_BASE_URL") or DEFAULT_BASE_URL,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            retry=RetryPolicy(max_retries, backoff_base, backoff_cap, max_retry_after),
            sleep=sleep,
            rng=rng,
            transport=transport,
        )
        self.content = ContentAPI(self._transport)
        self.social = SocialAPI(self._transport)
        self.publishing = PublishingAPI(self._transport)
        self.webhooks = WebhooksAPI(self._transport)
        self.health = HealthAPI(self._transport)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._transport.close()

    def __enter__(self) -> Layers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
