"""The error envelope and request ids on every kind of answer, and 500s that leak nothing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import ProgrammingError

from tests.api.helpers import BY_NAME, MEDIA, _broker_messages, _call, _own_id
from tests.checks import counts as _counts
from tests.checks import envelope_error as _error
from tests.factories import TenantFixture


def _requests_for_ids(tenant: TenantFixture) -> dict[str, tuple[str, str, dict[str, Any], int]]:
    return {
        "200": (
            "GET",
            f"/v1/projects/{tenant.project_id}/social-accounts",
            {"headers": tenant.headers},
            200,
        ),
        "201": (
            "POST",
            f"/v1/projects/{tenant.project_id}/content/upload",
            {"headers": tenant.headers, "json": {"caption": "x", "media": MEDIA}},
            201,
        ),
        "401": ("GET", f"/v1/projects/{tenant.project_id}/social-accounts", {"headers": {}}, 401),
        "403": (
            "GET",
            f"/v1/projects/{tenant.project_id}/social-accounts",
            {"headers": tenant.key_with("content:read")},
            403,
        ),
        "404 id": (
            "GET",
            f"/v1/scheduled-posts/sp_{uuid.uuid4()}",
            {"headers": tenant.headers},
            404,
        ),
        "404 route": ("GET", "/v1/nothing-here", {"headers": tenant.headers}, 404),
        "404 unauthenticated route": ("GET", "/nope", {"headers": {}}, 404),
        "405": ("PUT", f"/v1/scheduled-posts/sp_{uuid.uuid4()}", {"headers": tenant.headers}, 405),
        "422": (
            "GET",
            f"/v1/projects/{tenant.project_id}/scheduled-posts",
            {"headers": tenant.headers, "params": {"limit": 0}},
            422,
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["200", "201", "401", "403", "404 id", "404 route", "404 unauthenticated route", "405", "422"],
)
def test_request_id_is_echoed_or_minted(
    client: TestClient, tenant: TenantFixture, case: str
) -> None:
    method, url, kwargs, status = _requests_for_ids(tenant)[case]
    headers = kwargs.pop("headers")
    given = client.request(
        method, url, headers={**headers, "X-Request-Id": "caller-id.42"}, **kwargs
    )
    assert given.status_code == status, given.text
    assert given.headers["x-request-id"] == "caller-id.42"
    minted = [client.request(method, url, headers=headers, **kwargs) for _ in range(2)]
    for r in minted:
        assert r.status_code == status
        assert re.match(r"^req_[0-9a-f]{32}$", r.headers["x-request-id"])
    assert minted[0].headers["x-request-id"] != minted[1].headers["x-request-id"]
    if status >= 400:
        code = {401: "UNAUTHENTICATED", 403: "FORBIDDEN_SCOPE", 404: "NOT_FOUND", 422: "VALIDATION"}
        for r in (given, *minted):
            err = _error(r, status, code.get(status, "METHOD_NOT_ALLOWED"))
            assert err["requestId"] == r.headers["x-request-id"]


def test_an_unsafe_request_id_is_replaced(client: TestClient, tenant: TenantFixture) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    for bad in ("has spaces in it", "x" * 201, "<script>"):
        r = client.get(url, headers={**tenant.headers, "X-Request-Id": bad})
        assert r.status_code == 200
        assert re.match(r"^req_[0-9a-f]{32}$", r.headers["x-request-id"])


def _boom(*_: Any, **__: Any) -> Any:
    raise RuntimeError("secret SQL: SELECT secret_hash FROM api_keys")


def _db_boom(*_: Any, **__: Any) -> Any:
    raise ProgrammingError("SELECT secret_hash FROM api_keys", {}, Exception("secret SQL"))


@pytest.mark.parametrize(
    ("target", "ep_name", "raiser"),
    [
        ("shared.content.containers.get_container", "get_content", _boom),
        ("shared.content.containers.create_container", "upload", _boom),
        ("shared.publishing.posts.list_posts_query", "list_posts", _boom),
        ("shared.publishing.posts.schedule", "publish", _boom),
        ("shared.publishing.posts.cancel", "cancel", _boom),
        ("shared.publishing.posts.get_post", "get_post", _db_boom),
        ("api.deps.authenticate", "list_accounts", _boom),
    ],
)
def test_internal_errors_leak_nothing(
    client: TestClient,
    tenant: TenantFixture,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    ep_name: str,
    raiser: Callable[..., Any],
) -> None:
    ep = BY_NAME[ep_name]
    id_ = _own_id(client, ep, tenant)
    monkeypatch.setattr(target, raiser)
    before = _counts()
    headers = {**tenant.headers, "X-Request-Id": "boom-1", "Idempotency-Key": "k500"}
    r = _call(client, ep, id_, headers, tenant)
    err = _error(r, 500, "INTERNAL")
    assert err["requestId"] == "boom-1"
    assert err["details"] == {}
    for leak in ("secret", "SQL", "SELECT", "RuntimeError", "Traceback", "api_keys"):
        assert leak not in r.text
    assert _counts() == before
    assert _broker_messages() == []
    monkeypatch.undo()
    if ep.mutation and ep.method == "POST":
        # A 500 is not remembered: the retry with the same key does the work.
        retry = _call(client, ep, id_, headers, tenant)
        assert retry.status_code == ep.ok, retry.text
