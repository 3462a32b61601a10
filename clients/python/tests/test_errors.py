"""Every error code of the envelope is its own exception class, carrying code, message,
request id, details and status; anything else is a LayersError."""

from __future__ import annotations

import httpx
import pytest
from fake_api import FakeAPI, envelope, ok

import layers_client
from layers_client import (
    ApprovalRequiredError,
    ConflictError,
    ContentRejectedError,
    ForbiddenScopeError,
    IdempotencyConflictError,
    InternalError,
    Issue,
    Layers,
    LayersError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PlatformError,
    RateLimitedError,
    RequestTimeoutError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from layers_client.errors import ERROR_CLASSES

# Every code of docs/api.md's envelope table, with its status and class.
CODES = [
    (401, "UNAUTHENTICATED", UnauthenticatedError),
    (403, "FORBIDDEN_SCOPE", ForbiddenScopeError),
    (403, "APPROVAL_REQUIRED", ApprovalRequiredError),
    (404, "NOT_FOUND", NotFoundError),
    (405, "METHOD_NOT_ALLOWED", MethodNotAllowedError),
    (408, "REQUEST_TIMEOUT", RequestTimeoutError),
    (409, "CONFLICT", ConflictError),
    (409, "CONTENT_REJECTED", ContentRejectedError),
    (409, "PLATFORM_ERROR", PlatformError),
    (409, "IDEMPOTENCY_CONFLICT", IdempotencyConflictError),
    (413, "PAYLOAD_TOO_LARGE", PayloadTooLargeError),
    (422, "VALIDATION", ValidationError),
    (429, "RATE_LIMITED", RateLimitedError),
    (500, "INTERNAL", InternalError),
    (503, "UNAVAILABLE", UnavailableError),
]


def test_the_table_covers_every_class() -> None:
    assert {code: cls for _, code, cls in CODES} == dict(ERROR_CLASSES)


@pytest.mark.parametrize(("status", "code", "cls"), CODES)
def test_each_code_raises_its_class_with_everything_the_envelope_said(
    fake: FakeAPI, status: int, code: str, cls: type[LayersError]
) -> None:
    fake.default = envelope(status, code, {"status": "published"}, request_id="req_abc")
    with fake.client(max_retries=0) as layers, pytest.raises(cls) as err:
        layers.publishing.get_scheduled_post(id="sp_1")
    e = err.value
    assert type(e) is cls and isinstance(e, LayersError)
    assert (e.code, e.status, e.request_id) == (code, status, "req_abc")
    assert e.message == f"{code} message"
    assert e.details == {"status": "published"}
    assert code in str(e) and "req_abc" in str(e)


def test_the_details_read_as_attributes(fake: FakeAPI, layers: Layers) -> None:
    issues = [{"path": "targets[0].socialAccountId", "message": "No such social account"}]
    fake.script = [
        envelope(422, "VALIDATION", {"issues": issues}),
        envelope(403, "FORBIDDEN_SCOPE", {"requiredScope": "publish:write"}),
        envelope(409, "IDEMPOTENCY_CONFLICT", {"idempotencyKey": "k1"}),
        envelope(403, "APPROVAL_REQUIRED", {"status": "pending_approval"}),
    ]
    call = {"container_id": "cnt_1", "targets": [{"social_account_id": "sa_x"}]}
    with pytest.raises(ValidationError) as validation:
        layers.publishing.publish_now(**call)  # type: ignore[arg-type]
    assert validation.value.issues == [Issue("targets[0].socialAccountId", issues[0]["message"])]
    with pytest.raises(ForbiddenScopeError) as scope:
        layers.publishing.publish_now(**call)  # type: ignore[arg-type]
    assert scope.value.required_scope == "publish:write"
    with pytest.raises(IdempotencyConflictError) as idem:
        layers.publishing.publish_now(**call)  # type: ignore[arg-type]
    assert idem.value.idempotency_key == "k1"
    with pytest.raises(ApprovalRequiredError) as approval:
        layers.publishing.publish_now(**call)  # type: ignore[arg-type]
    assert approval.value.current_status == "pending_approval"


def test_an_unknown_code_is_a_layers_error_with_that_code(fake: FakeAPI, layers: Layers) -> None:
    fake.default = envelope(418, "HTTP_ERROR")
    with pytest.raises(LayersError) as err:
        layers.content.get(id="cnt_1")
    assert type(err.value) is LayersError and err.value.code == "HTTP_ERROR"
    fake.default = envelope(400, "SOMETHING_NEW", {"x": 1})
    with pytest.raises(LayersError) as err:
        layers.content.get(id="cnt_1")
    assert type(err.value) is LayersError and err.value.code == "SOMETHING_NEW"


def test_an_answer_without_the_envelope_is_http_error(fake: FakeAPI, layers: Layers) -> None:
    fake.default = httpx.Response(
        502, text="<html>Bad gateway</html>", headers={"X-Request-Id": "r"}
    )
    with pytest.raises(LayersError) as err:
        layers.content.get(id="cnt_1")
    assert (err.value.code, err.value.status, err.value.request_id) == ("HTTP_ERROR", 502, "r")
    assert err.value.details == {}


def test_a_success_of_an_unexpected_shape_is_invalid_response(
    fake: FakeAPI, layers: Layers
) -> None:
    fake.default = ok({"id": "cnt_1"})
    with pytest.raises(LayersError) as err:
        layers.content.get(id="cnt_1")
    assert err.value.code == "INVALID_RESPONSE" and isinstance(err.value.__cause__, KeyError)


def test_every_error_class_is_exported() -> None:
    for _, _, cls in CODES:
        assert getattr(layers_client, cls.__name__) is cls
