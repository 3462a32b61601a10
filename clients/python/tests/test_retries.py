"""Retries against the fake API: what is retried (429, 503, transport failures), how long it
waits (Retry-After, full-jitter backoff), what never is (other 4xx, a 500, a second
rotation), the Idempotency-Key kept across one call's attempts, and a cancel whose answer was
lost. No test sleeps: the client's sleep records."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from fake_api import CONTAINER, DELIVERY, ENDPOINT, INTENT, POST, FakeAPI, envelope, ok

from layers_client import (
    CanceledPost,
    ConflictError,
    Layers,
    LayersConnectionError,
    LayersError,
    RateLimitedError,
    UnavailableError,
)
from layers_client._http import retry_after_s

SP = POST["id"]
CANCELED = {"id": SP, "status": "canceled", "canceledAt": "2026-04-18T19:22:41Z"}


def _lost() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("read timed out")


def _refused() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


def test_a_429_waits_its_retry_after_then_succeeds(fake: FakeAPI, layers: Layers) -> None:
    fake.script = [envelope(429, "RATE_LIMITED", headers={"Retry-After": "7"}), ok(POST)]
    post = layers.publishing.get_scheduled_post(id=SP)
    assert post.id == SP
    assert len(fake.requests) == 2
    # Backoff's first draw is at most 0.5 s: the wait is the server's 7 s.
    assert fake.sleeps == [7.0]


def test_a_retry_after_date_is_honoured() -> None:
    now = datetime(2026, 4, 18, 19, 22, 41, tzinfo=UTC)
    assert retry_after_s(format_datetime(now + timedelta(seconds=12), usegmt=True), now) == 12
    assert retry_after_s(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0
    assert retry_after_s("2.5") == 2.5
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


def test_a_retry_after_over_the_cap_is_raised_at_once(fake: FakeAPI) -> None:
    # The day's cap: Retry-After is the time to midnight, not worth blocking the caller on.
    details = {"limit": 10000, "class": "write-light", "window": "day"}
    fake.default = envelope(429, "RATE_LIMITED", details, {"Retry-After": "3600"})
    with fake.client(max_retry_after=60) as layers, pytest.raises(RateLimitedError) as err:
        layers.publishing.publish_now(container_id="cnt_1", targets=[{"social_account_id": "s"}])
    assert len(fake.requests) == 1 and fake.sleeps == []
    assert err.value.retry_after == 3600
    assert (err.value.limit, err.value.endpoint_class, err.value.window) == (
        10000,
        "write-light",
        "day",
    )


def test_429s_past_max_retries_raise_the_last(fake: FakeAPI) -> None:
    fake.default = envelope(429, "RATE_LIMITED", headers={"Retry-After": "1"})
    with fake.client(max_retries=2) as layers, pytest.raises(RateLimitedError):
        layers.social.list_accounts(project_id="prj_1")
    assert len(fake.requests) == 3
    assert len(fake.sleeps) == 2 and all(s >= 1 for s in fake.sleeps)


def test_503_is_retried_with_full_jitter_backoff(fake: FakeAPI) -> None:
    fake.default = envelope(503, "UNAVAILABLE")
    client = fake.client(max_retries=6, backoff_base=0.5, backoff_cap=4)
    with client as layers, pytest.raises(UnavailableError) as err:
        layers.content.get(id="cnt_1")
    assert err.value.status == 503
    assert len(fake.requests) == 7
    ceilings = [min(4.0, 0.5 * 2**n) for n in range(6)]
    assert len(fake.sleeps) == 6
    assert all(0 <= s <= c for s, c in zip(fake.sleeps, ceilings, strict=True))
    # Full jitter: drawn below the ceiling, not the ceiling itself.
    assert any(s < c * 0.9 for s, c in zip(fake.sleeps, ceilings, strict=True))


def test_connection_failures_are_retried_with_one_idempotency_key(fake: FakeAPI) -> None:
    fake.script = [_refused(), _lost(), ok(CONTAINER, 201)]
    with fake.client() as layers:
        container = layers.content.upload(
            project_id="prj_1", caption="Launch day", media=["https://cdn.example.com/a.mp4"]
        )
    assert container.id == "cnt_1"
    keys = {r.headers["Idempotency-Key"] for r in fake.requests}
    assert len(fake.requests) == 3 and len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4
    assert len(fake.sleeps) == 2


def test_the_callers_idempotency_key_is_sent_and_each_call_gets_its_own(
    fake: FakeAPI, layers: Layers
) -> None:
    fake.default = ok(CONTAINER, 201)
    upload = {"project_id": "prj_1", "caption": "c", "media": ["https://cdn.example.com/a.png"]}
    layers.content.upload(**upload, idempotency_key="launch-video")  # type: ignore[arg-type]
    layers.content.upload(**upload)  # type: ignore[arg-type]
    layers.content.upload(**upload)  # type: ignore[arg-type]
    keys = [r.headers["Idempotency-Key"] for r in fake.requests]
    assert keys[0] == "launch-video"
    assert len(set(keys)) == 3


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "UNAUTHENTICATED"),
        (403, "FORBIDDEN_SCOPE"),
        (403, "APPROVAL_REQUIRED"),
        (404, "NOT_FOUND"),
        (405, "METHOD_NOT_ALLOWED"),
        (408, "REQUEST_TIMEOUT"),
        (409, "CONFLICT"),
        (409, "CONTENT_REJECTED"),
        (409, "PLATFORM_ERROR"),
        (409, "IDEMPOTENCY_CONFLICT"),
        (413, "PAYLOAD_TOO_LARGE"),
        (422, "VALIDATION"),
        (500, "INTERNAL"),
    ],
)
def test_no_other_error_is_retried(fake: FakeAPI, layers: Layers, status: int, code: str) -> None:
    fake.default = envelope(status, code)
    with pytest.raises(LayersError) as err:
        layers.publishing.schedule(
            container_id="cnt_1",
            scheduled_for="2031-06-01T09:00:00Z",
            targets=[{"social_account_id": "sa_1"}],
        )
    assert err.value.code == code
    assert len(fake.requests) == 1 and fake.sleeps == []


def test_max_retries_zero_sends_once(fake: FakeAPI) -> None:
    fake.default = envelope(503, "UNAVAILABLE", headers={"Retry-After": "1"})
    with fake.client(max_retries=0) as layers, pytest.raises(UnavailableError) as err:
        layers.content.get(id="cnt_1")
    assert len(fake.requests) == 1 and err.value.retry_after == 1


def test_timeouts_that_outlast_the_retries_raise_a_connection_error(fake: FakeAPI) -> None:
    fake.default = _lost()
    with fake.client() as layers, pytest.raises(LayersConnectionError) as err:
        layers.publishing.get_scheduled_post(id=SP)
    assert len(fake.requests) == 4
    assert err.value.maybe_sent and err.value.status is None
    assert isinstance(err.value.__cause__, httpx.ReadTimeout)


def test_refused_connections_say_nothing_was_sent(fake: FakeAPI, layers: Layers) -> None:
    fake.default = _refused()
    with pytest.raises(LayersConnectionError) as err:
        layers.health.live()
    assert not err.value.maybe_sent
    assert err.value.code == "CONNECTION_ERROR"


def test_a_rotation_is_not_sent_twice_once_it_may_have_left(fake: FakeAPI) -> None:
    # A second rotation would retire the secret the first one answered with.
    fake.script = [_lost()]
    with fake.client() as layers, pytest.raises(LayersConnectionError) as err:
        layers.webhooks.rotate_secret(id="we_1")
    assert len(fake.requests) == 1 and err.value.maybe_sent
    # Refused before anything was sent: retried.
    fake.script = [_refused(), ok(DELIVERY | {"id": "wd_x"})]
    with fake.client() as layers:
        assert layers.webhooks.ping(id="we_1").id == "wd_x"
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    ("send", "body"),
    [
        (
            lambda layers: layers.webhooks.rotate_secret(id="we_1"),
            ENDPOINT | {"secret": "whsec_abc"},
        ),
        (lambda layers: layers.webhooks.ping(id="we_1"), DELIVERY),
        (lambda layers: layers.webhooks.replay_delivery(id="wd_1"), DELIVERY),
    ],
)
def test_a_503_of_a_post_the_api_does_not_deduplicate_is_raised_not_repeated(
    fake: FakeAPI, send: Callable[[Layers], object], body: dict[str, object]
) -> None:
    # The 503 may have come after the work committed: a repeat would do it twice.
    fake.script = [envelope(503, "UNAVAILABLE", headers={"Retry-After": "1"}), ok(body)]
    with fake.client() as layers, pytest.raises(UnavailableError):
        send(layers)
    assert len(fake.requests) == 1
    # A 429 did nothing: retried.
    fake.script = [envelope(429, "RATE_LIMITED", headers={"Retry-After": "0"}), ok(body)]
    with fake.client() as layers:
        send(layers)
    assert len(fake.requests) == 3


def test_a_cancel_answers_its_post_and_sends_the_reason(fake: FakeAPI, layers: Layers) -> None:
    fake.default = ok(CANCELED)
    result = layers.publishing.cancel(id=SP, reason="Legal review pending.")
    assert isinstance(result, CanceledPost)
    assert result.status == "canceled" and not result.recovered
    assert result.canceled_at == datetime(2026, 4, 18, 19, 22, 41, tzinfo=UTC)
    request = fake.requests[0]
    assert request.method == "DELETE" and request.url.path == f"/v1/scheduled-posts/{SP}"
    assert fake.body() == {"reason": "Legal review pending."}
    assert "Idempotency-Key" not in request.headers
    layers.publishing.cancel(id=SP)
    assert fake.requests[1].content == b""


@pytest.mark.parametrize("lost", [_lost, lambda: envelope(503, "UNAVAILABLE")])
def test_a_cancel_whose_answer_was_lost_recovers_from_the_retrys_409(
    fake: FakeAPI, layers: Layers, lost: object
) -> None:
    step = lost() if callable(lost) else lost
    fake.script = [step, envelope(409, "CONFLICT", {"status": "canceled"})]
    result = layers.publishing.cancel(id=SP, reason="oops")
    assert result.recovered and result.status == "canceled" and result.canceled_at is None
    assert result.id == SP
    assert len(fake.requests) == 2
    assert fake.body(0) == fake.body(1) == {"reason": "oops"}


def test_a_first_409_canceled_is_raised(fake: FakeAPI, layers: Layers) -> None:
    # Canceled before this call: not this call's win.
    fake.default = envelope(409, "CONFLICT", {"status": "canceled"})
    with pytest.raises(ConflictError) as err:
        layers.publishing.cancel(id=SP)
    assert err.value.current_status == "canceled" and err.value.status == 409


def test_a_409_canceled_after_only_429s_is_raised(fake: FakeAPI, layers: Layers) -> None:
    # A 429 did nothing: the post was canceled by someone else.
    fake.script = [
        envelope(429, "RATE_LIMITED", headers={"Retry-After": "1"}),
        envelope(409, "CONFLICT", {"status": "canceled"}),
    ]
    with pytest.raises(ConflictError):
        layers.publishing.cancel(id=SP)


def test_a_cancel_that_lost_to_the_upload_is_raised_after_a_retry(
    fake: FakeAPI, layers: Layers
) -> None:
    fake.script = [_lost(), envelope(409, "CONFLICT", {"status": "publishing"})]
    with pytest.raises(ConflictError) as err:
        layers.publishing.cancel(id=SP)
    assert err.value.current_status == "publishing"


def test_an_intent_cancel_whose_answer_was_lost_reads_the_intent(
    fake: FakeAPI, layers: Layers
) -> None:
    canceled = INTENT | {"status": "canceled"}
    fake.script = [_lost(), envelope(409, "CONFLICT", {"status": "canceled"}), ok(canceled)]
    intent = layers.publishing.cancel_schedule_intent(id="si_1")
    assert intent.status == "canceled"
    assert [r.method for r in fake.requests] == ["DELETE", "DELETE", "GET"]


def test_readiness_503_is_an_answer_not_retried(fake: FakeAPI, layers: Layers) -> None:
    body = {"status": "unavailable", "checks": {"database": "unavailable: X", "redis": "ok"}}
    fake.default = httpx.Response(503, json=body)
    health = layers.health.ready()
    assert not health.ok and health.checks["redis"] == "ok"
    assert len(fake.requests) == 1


def test_the_request_id_goes_on_every_attempt_and_comes_back(fake: FakeAPI, layers: Layers) -> None:
    fake.script = [envelope(503, "UNAVAILABLE"), ok(POST, request_id="trace-42")]
    post = layers.publishing.get_scheduled_post(id=SP, request_id="trace-42")
    assert [r.headers["X-Request-Id"] for r in fake.requests] == ["trace-42", "trace-42"]
    assert post.request_id == "trace-42"
    fake.default = envelope(404, "NOT_FOUND", request_id="trace-43")
    with pytest.raises(LayersError) as err:
        layers.publishing.get_scheduled_post(id=SP, request_id="trace-43")
    assert err.value.request_id == "trace-43"
