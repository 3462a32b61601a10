"""Each method sends its operation's request (method, path, query, body, headers) and parses
the answer into its model: snake_case attributes, aware datetimes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fake_api import ACCOUNT, CONTAINER, DELIVERY, ENDPOINT, INTENT, POST, FakeAPI, ok

from layers_client import (
    ApprovalPolicy,
    BlockedOnApproval,
    ContentContainer,
    Layers,
    Page,
    ScheduledPost,
    ScheduledPosts,
    WebhookEndpointWithSecret,
    __version__,
)
from layers_client.client import iso_duration

POLICY = {"requiresApproval": True, "firstNPostsBlocked": 2, "autoApproveAfter": "PT4H"}
SIGNING = "whsec_abc"
SECRET = ENDPOINT | {"secret": SIGNING}
T0 = datetime(2031, 6, 1, 9, 0, tzinfo=UTC)


def page(item: dict[str, Any]) -> dict[str, Any]:
    return {"items": [item], "nextCursor": None}


# (call, method, path, query, body, answer)
CASES: list[tuple[Callable[[Layers], Any], str, str, str, Any, httpx.Response]] = [
    (
        lambda c: c.content.upload(
            project_id="prj_1",
            caption="Launch day",
            media=["https://cdn.example.com/a.mp4", {"url": "https://x.io/b", "type": "image"}],
        ),
        "POST",
        "/v1/projects/prj_1/content/upload",
        "",
        {
            "caption": "Launch day",
            "media": [
                {"url": "https://cdn.example.com/a.mp4"},
                {"url": "https://x.io/b", "type": "image"},
            ],
        },
        ok(CONTAINER, 201),
    ),
    (lambda c: c.content.get(id="cnt_1"), "GET", "/v1/content/cnt_1", "", None, ok(CONTAINER)),
    (
        lambda c: c.content.get_approval_policy(project_id="prj_1"),
        "GET",
        "/v1/projects/prj_1/approval-policy",
        "",
        None,
        ok(POLICY),
    ),
    (
        lambda c: c.content.set_approval_policy(
            project_id="prj_1",
            requires_approval=True,
            first_n_posts_blocked=2,
            auto_approve_after=timedelta(hours=4),
        ),
        "PUT",
        "/v1/projects/prj_1/approval-policy",
        "",
        POLICY,
        ok(POLICY),
    ),
    (
        lambda c: c.content.approve(id="cnt_1", reason="legal ok"),
        "POST",
        "/v1/content/cnt_1/approve",
        "",
        {"reason": "legal ok"},
        ok(CONTAINER),
    ),
    (
        lambda c: c.content.reject(id="cnt_1"),
        "POST",
        "/v1/content/cnt_1/reject",
        "",
        {},
        ok(CONTAINER | {"status": "rejected"}),
    ),
    (
        lambda c: c.social.list_accounts(
            project_id="prj_1", platform="tiktok", status="connected", limit=10
        ),
        "GET",
        "/v1/projects/prj_1/social-accounts",
        "platform=tiktok&status=connected&limit=10",
        None,
        ok(page(ACCOUNT)),
    ),
    (
        lambda c: c.publishing.schedule(
            container_id="cnt_1",
            scheduled_for=T0,
            targets=[
                {"social_account_id": "sa_1", "mode": "draft", "caption_override": "Soon."},
                {"socialAccountId": "sa_2", "scheduledPostId": "sp_x"},
            ],
        ),
        "POST",
        "/v1/content/cnt_1/schedule",
        "",
        {
            "scheduledFor": "2031-06-01T09:00:00+00:00",
            "targets": [
                {"socialAccountId": "sa_1", "mode": "draft", "captionOverride": "Soon."},
                {"socialAccountId": "sa_2", "scheduledPostId": "sp_x"},
            ],
        },
        ok({"items": [POST]}, 201),
    ),
    (
        lambda c: c.publishing.publish_now(
            container_id="cnt_1", targets=[{"social_account_id": "sa_1"}]
        ),
        "POST",
        "/v1/content/cnt_1/publish",
        "",
        {"targets": [{"socialAccountId": "sa_1"}]},
        ok({"items": [POST]}, 201),
    ),
    (
        lambda c: c.publishing.get_scheduled_post(id="sp_1"),
        "GET",
        "/v1/scheduled-posts/sp_1",
        "",
        None,
        ok(POST),
    ),
    (
        lambda c: c.publishing.list_scheduled_posts(
            project_id="prj_1",
            status=["queued", "failed"],
            social_account_id="sa_1",
            since=T0,
            until="2031-07-01T00:00:00Z",
            cursor="abc",
            limit=2,
        ),
        "GET",
        "/v1/projects/prj_1/scheduled-posts",
        "status=queued&status=failed&socialAccountId=sa_1&since=2031-06-01T09%3A00%3A00%2B00%3A00"
        "&until=2031-07-01T00%3A00%3A00Z&cursor=abc&limit=2",
        None,
        ok(page(POST)),
    ),
    (
        lambda c: c.publishing.reschedule(
            id="sp_1",
            scheduled_for=datetime(2031, 6, 1, 11, 0, tzinfo=timezone(timedelta(hours=2))),
        ),
        "POST",
        "/v1/scheduled-posts/sp_1/reschedule",
        "",
        {"scheduledFor": "2031-06-01T11:00:00+02:00"},
        ok(
            {
                "id": "sp_1",
                "status": "queued",
                "scheduledFor": "2031-06-01T09:00:00Z",
                "updatedAt": "2026-04-18T19:22:41Z",
            }
        ),
    ),
    (
        lambda c: c.publishing.list_schedule_intents(container_id="cnt_1", limit=5),
        "GET",
        "/v1/content/cnt_1/schedule-intents",
        "limit=5",
        None,
        ok(page(INTENT)),
    ),
    (
        lambda c: c.publishing.get_schedule_intent(id="si_1"),
        "GET",
        "/v1/schedule-intents/si_1",
        "",
        None,
        ok(INTENT),
    ),
    (
        lambda c: c.publishing.cancel_schedule_intent(id="si_1", reason="not now"),
        "DELETE",
        "/v1/schedule-intents/si_1",
        "",
        {"reason": "not now"},
        ok(INTENT | {"status": "canceled"}),
    ),
    (
        lambda c: c.webhooks.create_endpoint(
            url="https://hooks.example.com/layers",
            event_types=["post.published"],
            description="ops",
        ),
        "POST",
        "/v1/webhook-endpoints",
        "",
        {
            "url": "https://hooks.example.com/layers",
            "eventTypes": ["post.published"],
            "description": "ops",
        },
        ok(SECRET, 201),
    ),
    (
        lambda c: c.webhooks.list_endpoints(limit=3),
        "GET",
        "/v1/webhook-endpoints",
        "limit=3",
        None,
        ok(page(ENDPOINT)),
    ),
    (
        lambda c: c.webhooks.get_endpoint(id="we_1"),
        "GET",
        "/v1/webhook-endpoints/we_1",
        "",
        None,
        ok(ENDPOINT),
    ),
    (
        lambda c: c.webhooks.update_endpoint(id="we_1", status="disabled"),
        "PATCH",
        "/v1/webhook-endpoints/we_1",
        "",
        {"status": "disabled"},
        ok(ENDPOINT | {"status": "disabled"}),
    ),
    (
        lambda c: c.webhooks.rotate_secret(id="we_1"),
        "POST",
        "/v1/webhook-endpoints/we_1/rotate-secret",
        "",
        None,
        ok(SECRET | {"previousSecretExpiresAt": "2026-04-19T19:22:41Z"}),
    ),
    (
        lambda c: c.webhooks.ping(id="we_1"),
        "POST",
        "/v1/webhook-endpoints/we_1/ping",
        "",
        None,
        ok(DELIVERY, 202),
    ),
    (
        lambda c: c.webhooks.list_deliveries(endpoint_id="we_1"),
        "GET",
        "/v1/webhook-endpoints/we_1/deliveries",
        "",
        None,
        ok(page(DELIVERY)),
    ),
    (
        lambda c: c.webhooks.replay_delivery(id="wd_1"),
        "POST",
        "/v1/webhook-deliveries/wd_1/replay",
        "",
        None,
        ok(DELIVERY | {"replayOf": "evt_1"}, 201),
    ),
    (lambda c: c.health.live(), "GET", "/healthz", "", None, ok({"status": "ok"})),
    (
        lambda c: c.health.ready(),
        "GET",
        "/readyz",
        "",
        None,
        ok({"status": "ok", "checks": {"database": "ok", "redis": "ok"}}),
    ),
]


@pytest.mark.parametrize(("call", "method", "path", "query", "body", "answer"), CASES)
def test_each_method_sends_its_request(
    fake: FakeAPI,
    layers: Layers,
    call: Callable[[Layers], Any],
    method: str,
    path: str,
    query: str,
    body: Any,
    answer: httpx.Response,
) -> None:
    fake.default = answer
    got = call(layers)
    request = fake.requests[0]
    assert (request.method, request.url.path, request.url.query.decode()) == (method, path, query)
    assert fake.body() == body
    assert request.headers["Authorization"] == "Bearer lp_test_key1_secret"
    assert request.headers["User-Agent"] == f"layers-client-python/{__version__}"
    assert ("Idempotency-Key" in request.headers) == (method == "POST")
    assert got.request_id == "req_ok"


def test_models_are_frozen_snake_case_and_aware(fake: FakeAPI, layers: Layers) -> None:
    fake.default = ok({"items": [POST | {"lastError": _LAST_ERROR}]}, 201)
    result = layers.publishing.publish_now(
        container_id="cnt_1", targets=[{"social_account_id": "a"}]
    )
    assert isinstance(result, ScheduledPosts) and not result.blocked
    post = result.items[0]
    assert isinstance(post, ScheduledPost)
    assert post.scheduled_for == T0 and post.scheduled_for.tzinfo is not None
    assert post.attempted_at is None and post.social_account_id == "sa_1"
    assert post.last_error is not None and post.last_error.platform_code == "spam_risk"
    with pytest.raises(AttributeError):
        post.status = "canceled"  # type: ignore[misc]


_LAST_ERROR = {"code": "PLATFORM_ERROR", "message": "refused", "platformCode": "spam_risk"}


def test_a_schedule_of_pending_content_is_blocked_on_approval(
    fake: FakeAPI, layers: Layers
) -> None:
    fake.default = ok(
        {"gateStatus": "blocked_on_approval", "containerId": "cnt_1", "intent": INTENT}, 202
    )
    result = layers.publishing.schedule(
        container_id="cnt_1", scheduled_for=T0, targets=[{"social_account_id": "sa_1"}]
    )
    assert isinstance(result, BlockedOnApproval) and result.blocked
    assert (
        result.intent.status == "blocked" and result.intent.targets[0].social_account_id == "sa_1"
    )


def test_other_models_parse(fake: FakeAPI, layers: Layers) -> None:
    pending = CONTAINER | {
        "status": "pending_approval",
        "approval": {"status": "pending", "decidedAt": None, "auto": False, "reason": None},
    }
    fake.script = [ok(pending), ok(POLICY), ok(SECRET, 201), ok(page(ACCOUNT))]
    container = layers.content.get(id="cnt_1")
    assert isinstance(container, ContentContainer)
    assert container.approval is not None and container.approval.status == "pending"
    assert container.media[0].type == "video"
    policy = layers.content.get_approval_policy(project_id="prj_1")
    assert policy == ApprovalPolicy(
        requires_approval=True, first_n_posts_blocked=2, auto_approve_after="PT4H"
    )
    endpoint = layers.webhooks.create_endpoint(
        url="https://h.example/x", event_types=["post.failed"]
    )
    assert isinstance(endpoint, WebhookEndpointWithSecret) and endpoint.secret == SIGNING
    assert SIGNING not in repr(endpoint)
    accounts = layers.social.list_accounts(project_id="prj_1")
    assert isinstance(accounts, Page) and accounts.next_cursor is None
    assert accounts.items[0].connected_at.tzinfo is not None


def test_ids_are_one_path_segment(fake: FakeAPI, layers: Layers) -> None:
    fake.default = ok(POST)
    layers.publishing.get_scheduled_post(id="sp_1/../../admin?x=1")
    assert fake.requests[0].url.raw_path == b"/v1/scheduled-posts/sp_1%2F..%2F..%2Fadmin%3Fx%3D1"
    with pytest.raises(ValueError, match="id"):
        layers.publishing.get_scheduled_post(id="")


def test_a_naive_time_is_refused_before_sending(fake: FakeAPI, layers: Layers) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        layers.publishing.schedule(
            container_id="cnt_1",
            scheduled_for=datetime(2031, 6, 1, 9, 0),  # naive: the point of the test
            targets=[{"social_account_id": "sa_1"}],
        )
    assert fake.requests == []


def test_durations_are_iso_8601() -> None:
    assert iso_duration(timedelta(minutes=90)) == "PT1H30M"
    assert iso_duration(timedelta(days=1, hours=12)) == "P1DT12H"
    assert iso_duration(timedelta(days=14)) == "P14D"
    assert iso_duration(timedelta(seconds=1)) == "PT1S"
    assert iso_duration("P2W") == "P2W" and iso_duration(None) is None
    with pytest.raises(ValueError):
        iso_duration(timedelta(seconds=1.5))


def test_the_key_and_url_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, fake: FakeAPI
) -> None:
    monkeypatch.delenv("LAYERS_API_KEY", raising=False)
    with pytest.raises(ValueError, match="API key"):
        Layers()
    monkeypatch.setenv("LAYERS_API_KEY", "lp_live_k_s")
    monkeypatch.setenv("LAYERS_BASE_URL", "https://self-hosted.example/api")
    fake.default = ok({"status": "ok"})
    with Layers(transport=httpx.MockTransport(fake.handle)) as layers:
        layers.health.live()
    assert str(fake.requests[0].url) == "https://self-hosted.example/api/healthz"
    assert fake.requests[0].headers["Authorization"] == "Bearer lp_live_k_s"


def test_the_context_manager_closes_the_connections(fake: FakeAPI) -> None:
    with fake.client() as layers:
        pass
    fake.default = ok({"status": "ok"})
    with pytest.raises(RuntimeError):
        layers.health.live()
