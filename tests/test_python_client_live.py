"""The Python client (clients/python/) against the running stack: a post from upload to its
cancel, a cancel inside publish-now's window, a cancel too late as a typed ConflictError, the
approval gate, a real 429 waited out, and a webhook delivery verified with the client's
helper, before and after a secret rotation."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chaos.receiver import Receiver, serving
from harness.stack import Stack, wait_until
from layers_client import (
    ApprovalRequiredError,
    BlockedOnApproval,
    ConflictError,
    Layers,
    NotFoundError,
    RateLimitedError,
    ScheduledPosts,
)
from layers_client.webhooks import parse_event, verify
from tests.checks import contract_example
from tests.factories import TenantFixture

pytestmark = pytest.mark.integration

MEDIA = ["https://cdn.example.com/launch.mp4"]


@pytest.fixture
def layers(stack: Stack, api: httpx.Client, live_tenant: TenantFixture) -> Iterator[Layers]:
    # `api` resets the sandbox and disarms every failpoint before each test.
    with Layers(api_key=live_tenant.token, base_url=stack.api_url) as client:
        yield client


def _token(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _upload(layers: Layers, tenant: TenantFixture, caption: str) -> str:
    return layers.content.upload(project_id=tenant.project_id, caption=caption, media=MEDIA).id


def test_a_post_from_upload_to_cancel(layers: Layers, live_tenant: TenantFixture) -> None:
    tiktok = live_tenant.accounts["tiktok"]
    container = layers.content.upload(
        project_id=live_tenant.project_id, caption="client flow", media=MEDIA
    )
    assert container.status == "completed" and container.media[0].type == "video"
    assert container.request_id and container.created_at.tzinfo is not None
    assert layers.content.get(id=container.id) == container

    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    target = [{"social_account_id": tiktok, "caption_override": "from the client"}]
    scheduled = layers.publishing.schedule(
        container_id=container.id, scheduled_for=later, targets=target, idempotency_key="flow-1"
    )
    assert isinstance(scheduled, ScheduledPosts)
    (post,) = scheduled.items
    assert (post.status, post.scheduled_for, post.social_account_id) == ("queued", later, tiktok)
    # The same key and body: the first answer again, no second post.
    again = layers.publishing.schedule(
        container_id=container.id, scheduled_for=later, targets=target, idempotency_key="flow-1"
    )
    assert isinstance(again, ScheduledPosts) and again.items[0].id == post.id

    moved = layers.publishing.reschedule(id=post.id, scheduled_for=later + timedelta(hours=1))
    assert moved.scheduled_for == later + timedelta(hours=1)
    listed = list(
        layers.publishing.iter_scheduled_posts(
            project_id=live_tenant.project_id, status="queued", limit=1
        )
    )
    assert [p.id for p in listed] == [post.id]

    result = layers.publishing.cancel(id=post.id, reason="Brand asked us to hold.")
    assert (result.id, result.status, result.recovered) == (post.id, "canceled", False)
    assert result.canceled_at is not None and result.canceled_at.tzinfo is not None
    assert layers.publishing.get_scheduled_post(id=post.id).status == "canceled"
    # A second cancel is the contract's 409, typed, with the post's status.
    with pytest.raises(ConflictError) as err:
        layers.publishing.cancel(id=post.id)
    assert err.value.current_status == "canceled" and err.value.request_id


def test_publish_now_is_canceled_inside_its_window(
    layers: Layers, live_tenant: TenantFixture
) -> None:
    container_id = _upload(layers, live_tenant, "mistake")
    made = layers.publishing.publish_now(
        container_id=container_id, targets=[{"social_account_id": live_tenant.accounts["tiktok"]}]
    )
    (post,) = made.items
    # Due 30 s after the request: the window to take a mistaken publish back.
    assert post.scheduled_for > datetime.now(UTC) + timedelta(seconds=20)
    result = layers.publishing.cancel(id=post.id, reason="wrong video")
    assert result.status == "canceled"
    assert layers.publishing.get_scheduled_post(id=post.id).canceled_at == result.canceled_at


def test_a_cancel_after_the_publish_is_a_conflict_with_its_status(
    layers: Layers, live_tenant: TenantFixture
) -> None:
    container_id = _upload(layers, live_tenant, "goes out")
    made = layers.publishing.schedule(
        container_id=container_id,
        scheduled_for=datetime.now(UTC) + timedelta(seconds=1),
        targets=[{"social_account_id": live_tenant.accounts["tiktok"]}],
    )
    assert isinstance(made, ScheduledPosts)
    post_id = made.items[0].id
    published = wait_until(
        lambda: (p := layers.publishing.get_scheduled_post(id=post_id)).status == "published" and p,
        90,
        interval=0.2,
        what="the post published",
    )
    assert published.external_id and published.published_at is not None
    with pytest.raises(ConflictError) as err:
        layers.publishing.cancel(id=post_id, reason="too late")
    assert (err.value.status, err.value.code, err.value.current_status) == (
        409,
        "CONFLICT",
        "published",
    )


def test_the_accounts_and_the_approval_gate(layers: Layers, live_tenant: TenantFixture) -> None:
    project = live_tenant.project_id
    accounts = list(layers.social.iter_accounts(project_id=project, limit=1))
    assert {a.platform for a in accounts} == {"tiktok", "instagram"}
    instagram = layers.social.list_accounts(project_id=project, platform="instagram")
    assert [a.id for a in instagram.items] == [live_tenant.accounts["instagram"]]

    policy = layers.content.set_approval_policy(
        project_id=project, requires_approval=True, auto_approve_after=timedelta(hours=4)
    )
    assert (policy.requires_approval, policy.auto_approve_after) == (True, "PT4H")
    try:
        container_id = _upload(layers, live_tenant, "for review")
        assert layers.content.get(id=container_id).status == "pending_approval"
        target = [{"social_account_id": live_tenant.accounts["tiktok"]}]
        with pytest.raises(ApprovalRequiredError):
            layers.publishing.publish_now(container_id=container_id, targets=target)
        blocked = layers.publishing.schedule(
            container_id=container_id,
            scheduled_for=datetime.now(UTC) + timedelta(hours=2),
            targets=target,
        )
        assert isinstance(blocked, BlockedOnApproval) and blocked.intent.status == "blocked"
        approved = layers.content.approve(id=container_id, reason="legal ok")
        assert approved.status == "completed" and approved.approval is not None
        intent = layers.publishing.get_schedule_intent(id=blocked.intent.id)
        assert intent.status == "promoted" and len(intent.scheduled_post_ids) == 1
        assert [
            i.id for i in layers.publishing.iter_schedule_intents(container_id=container_id)
        ] == [intent.id]
        assert layers.publishing.cancel(id=intent.scheduled_post_ids[0]).status == "canceled"
    finally:
        layers.content.set_approval_policy(project_id=project)


class Recording(httpx.HTTPTransport):
    """A real transport that keeps the status of every answer."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


def test_a_real_429_is_typed_and_then_waited_out(
    stack: Stack, api: httpx.Client, live_tenant: TenantFixture
) -> None:
    # The key's own limit, which the stack's RATE_LIMIT_MULTIPLIER does not lift (it lifts
    # the tiers' only): 60 reads a minute, a burst of 60 then one a second, so Retry-After
    # is 1 s.
    token = _token(live_tenant.key_with("*", rate_limit_read=60))
    project = live_tenant.project_id
    with Layers(api_key=token, base_url=stack.api_url, max_retries=0) as bare:
        refused = None
        for _ in range(400):
            try:
                bare.social.list_accounts(project_id=project)
            except RateLimitedError as exc:
                refused = exc
                break
    assert refused is not None, "no 429 in 400 reads at 60 a minute"
    assert (refused.status, refused.endpoint_class, refused.window, refused.limit) == (
        429,
        "read-light",
        "minute",
        60,
    )
    assert refused.retry_after is not None and 1 <= refused.retry_after <= 60

    # The same key with retries: every call returns; the first that met a 429 slept its
    # Retry-After (and no longer than the cap) and was answered on a later attempt.
    recording = Recording()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with Layers(
        api_key=token, base_url=stack.api_url, transport=recording, sleep=sleep, max_retries=5
    ) as layers:
        for _ in range(400):
            page = layers.social.list_accounts(project_id=project)
            if 429 in recording.statuses:
                break
    assert 429 in recording.statuses, "no 429 in 400 reads at 60 a minute"
    assert recording.statuses[-1] == 200 and len(page.items) == 2
    assert slept and all(1 <= s <= 60 for s in slept)


def test_a_429_longer_than_the_cap_is_raised_without_waiting(
    stack: Stack, api: httpx.Client, live_tenant: TenantFixture
) -> None:
    # One write a minute: the second waits ~60 s, over this client's 5 s cap.
    token = _token(live_tenant.key_with("*", rate_limit_write=1))
    slept: list[float] = []
    with Layers(
        api_key=token, base_url=stack.api_url, max_retry_after=5, sleep=slept.append
    ) as layers:
        with pytest.raises(NotFoundError):  # counted like any write
            layers.publishing.cancel(id=f"sp_{uuid.uuid4()}")
        with pytest.raises(RateLimitedError) as err:
            layers.publishing.cancel(id=f"sp_{uuid.uuid4()}")
    assert slept == []
    assert err.value.endpoint_class == "write-light" and err.value.limit == 1
    assert err.value.retry_after is not None and err.value.retry_after > 5


@dataclass
class RawReceiver(Receiver):
    """The chaos receiver, keeping each delivery's raw bytes and signature header too."""

    raw: list[tuple[bytes, str]] = field(default_factory=list)
    raw_lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, event_id: str, body: bytes, signature: str) -> int:
        with self.raw_lock:
            self.raw.append((body, signature))
        return super().answer(event_id, body, signature)


def test_a_ping_verified_with_the_helper_across_a_rotation(layers: Layers) -> None:
    with serving(RawReceiver()) as receiver:
        endpoint = layers.webhooks.create_endpoint(
            url=receiver.url, event_types=["post.published"], description="client test"
        )
        old = endpoint.secret
        delivery = layers.webhooks.ping(id=endpoint.id)
        assert delivery.event_type == "test.ping"
        wait_until(lambda: len(receiver.raw) >= 1, 30, what="the ping delivered")
        body, header = receiver.raw[0]
        event = parse_event(verify(body, header, old))
        assert event.type == "test.ping" and event.data["endpointId"] == endpoint.id
        assert event.id == delivery.event_id

        rotated = layers.webhooks.rotate_secret(id=endpoint.id)
        assert rotated.secret != old and rotated.previous_secret_expires_at is not None
        layers.webhooks.ping(id=endpoint.id)
        wait_until(lambda: len(receiver.raw) >= 2, 30, what="the second ping delivered")
        body, header = receiver.raw[1]
        assert header.count("v1=") == 2
        # Either secret verifies it alone: a receiver switches over without missing one.
        assert verify(body, header, old) == verify(body, header, [rotated.secret])

    def succeeded() -> bool:
        items = layers.webhooks.list_deliveries(endpoint_id=endpoint.id).items
        return len(items) == 2 and all(d.status == "succeeded" for d in items)

    wait_until(succeeded, 30, what="both deliveries recorded as succeeded")
    walked = list(layers.webhooks.iter_deliveries(endpoint_id=endpoint.id, limit=1))
    assert all(d.attempts and d.attempts[0].status_code == 200 for d in walked)


def test_the_contracts_python_example_runs_unchanged_against_the_stack(
    layers: Layers, live_tenant: TenantFixture
) -> None:
    """docs/api.md's Python cancel, verbatim, with `layers` a client of the running API, on a
    post scheduled with the example's id."""
    example_id = "sp_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60"
    container = _upload(layers, live_tenant, "the seed's example")
    layers.publishing.schedule(
        container_id=container,
        scheduled_for=datetime.now(UTC) + timedelta(hours=1),
        targets=[
            {"social_account_id": live_tenant.accounts["tiktok"], "scheduled_post_id": example_id}
        ],
    )
    code = contract_example("python")
    assert example_id in code
    scope: dict[str, object] = {"layers": layers}
    exec(code, scope)  # noqa: S102 - the contract's own example, verbatim
    assert layers.publishing.get_scheduled_post(id=example_id).status == "canceled"
