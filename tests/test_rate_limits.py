"""Rate limits: a bucket per key and endpoint class, each route declared as one class, the
tiers' limits and the overrides over them, and the organization's daily write cap, all
shared by every API process through Redis; the CLI that sets tiers; the migration.

No assertion here waits on time. A refusal by a minute bucket is asserted on a limit of 1 or
2 a minute (the bucket refills one request per 60 s or 30 s, far longer than the requests
between exhausting it and being refused take), and the daily cap runs on a day boundary
moved to 12 hours away (`RateLimiter(day_shift_ms=…)`), except in the one test of the real
boundary, which says nothing if the UTC day turned during it."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any, get_args

import pytest
import redis
from alembic import command
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from api import endpoint_classes
from api.app import create_app
from api.endpoint_classes import ROUTE_CLASSES
from api.ratelimit import RateLimiter, bucket_key, day_key
from api.routes import content, scheduled_posts, social_accounts, webhooks
from cli.main import main
from shared.kit.db import new_session, transaction
from shared.kit.settings import Settings, get_settings
from shared.models import TIER_CHECK, ApiKey, Organization
from shared.tenancy.keys import create_key, parse_token
from shared.tenancy.tenants import create_tenant, set_daily_write_cap, set_organization_tier
from shared.tenancy.tiers import TIERS, EndpointClass, Limits, Tier, limits_of
from tests.checks import migration_database
from tests.conftest import TEST_DATABASE_URL
from tests.factories import TenantFixture, make_tenant

DAY_MS = 86_400_000
ROUTERS = [m.router for m in (content, social_accounts, scheduled_posts, webhooks)]
MEDIA = [{"url": "https://cdn.example.com/a.png"}]


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _server_ms() -> int:
    """Now on the Redis server's clock, the one the limiter reads."""
    client = _redis()
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return int(seconds) * 1000 + int(micros) // 1000


def _key_id(headers: dict[str, str]) -> str:
    return parse_token(headers["Authorization"].removeprefix("Bearer "))[1]


def _read(client: TestClient, tenant: TenantFixture, headers: dict[str, str]) -> Any:
    return client.get(f"/v1/projects/{tenant.project_id}/social-accounts", headers=headers)


def _write(client: TestClient, headers: dict[str, str]) -> Any:
    """A write-light call: register a webhook endpoint."""
    body = {"url": "https://hooks.example.com/in", "eventTypes": ["post.published"]}
    return client.post("/v1/webhook-endpoints", headers=headers, json=body)


def _upload(client: TestClient, tenant: TenantFixture, headers: dict[str, str]) -> Any:
    """A long-running call: the content upload."""
    return client.post(
        f"/v1/projects/{tenant.project_id}/content/upload",
        headers=headers,
        json={"caption": "x", "media": MEDIA},
    )


def _refused(r: Any, klass: str, limit: int, window: str) -> None:
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["requestId"] == r.headers["x-request-id"]
    assert error["details"] == {"limit": limit, "class": klass, "window": window}
    assert r.headers["x-ratelimit-endpoint-class"] == klass
    assert r.headers["x-ratelimit-limit"] == str(limit)
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert int(r.headers["retry-after"]) >= 1


def _noon_shift() -> int:
    """A day shift that puts the limiter's day clock at noon now: 12 h from either boundary."""
    return DAY_MS // 2 - _server_ms() % DAY_MS


@pytest.fixture
def shifted() -> Iterator[tuple[TestClient, TestClient, int]]:
    """Two API apps, each with its own Redis client, on a day boundary 12 h away."""
    shift = _noon_shift()
    apps = [create_app(), create_app()]
    for app in apps:
        app.state.limiter = RateLimiter(os.environ["REDIS_URL"], day_shift_ms=shift)
    with (
        TestClient(apps[0], raise_server_exceptions=False) as one,
        TestClient(apps[1], raise_server_exceptions=False) as two,
    ):
        yield one, two, shift


# --- The declaration: every route one class -----------------------------------------------


def test_every_v1_route_is_declared_as_exactly_one_class() -> None:
    served = endpoint_classes.v1_routes(ROUTERS)
    assert len(served) == len(set(served)) == len(ROUTE_CLASSES)
    assert set(served) == set(ROUTE_CLASSES)
    assert all(isinstance(klass, EndpointClass) for klass in ROUTE_CLASSES.values())
    long_running = {op for op, klass in ROUTE_CLASSES.items() if klass == "long-running"}
    assert long_running == {
        ("POST", "/v1/projects/{projectId}/content/upload"),
        ("POST", "/v1/webhook-endpoints/{endpointId}/ping"),
        ("POST", "/v1/webhook-deliveries/{deliveryId}/replay"),
    }
    assert {op for op, klass in ROUTE_CLASSES.items() if klass == "read-light"} == {
        op for op in served if op[0] == "GET"
    }


def test_an_app_with_an_undeclared_route_does_not_start() -> None:
    extra = APIRouter(prefix="/v1")
    extra.add_api_route("/somewhere-new", lambda: None, methods=["POST"])
    with pytest.raises(RuntimeError, match="somewhere-new"):
        endpoint_classes.check([*ROUTERS, extra])
    with pytest.raises(RuntimeError, match="webhook-endpoints"):
        endpoint_classes.check(ROUTERS[:3])


def test_openapi_documents_each_operations_class_and_its_headers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    documented = {
        (method.upper(), path): op
        for path, ops in spec["paths"].items()
        if path.startswith("/v1/")
        for method, op in ops.items()
    }
    assert set(documented) == set(ROUTE_CLASSES)
    for (method, path), op in documented.items():
        klass = ROUTE_CLASSES[(method, path)]
        assert op["x-rate-limit-class"] == klass.value
        assert f"Rate limit: endpoint class `{klass}`" in op["description"]
        ok = next(s for s in op["responses"] if s.startswith("2"))
        assert set(op["responses"][ok]["headers"]) - {"X-Request-Id"} == {
            "X-RateLimit-Endpoint-Class",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        }, (method, path)
        refused = op["responses"]["429"]["headers"]
        assert refused["Retry-After"]["required"] is True
        assert refused["X-RateLimit-Endpoint-Class"]["schema"] == {
            "$ref": "#/components/schemas/EndpointClass"
        }
        assert not [h for h in op["responses"]["401"]["headers"] if h.startswith("X-RateLimit")]
    assert spec["components"]["schemas"]["EndpointClass"]["enum"] == [
        "read-light",
        "write-light",
        "long-running",
    ]
    health = spec["paths"]["/healthz"]["get"]["responses"]["200"]["headers"]
    assert set(health) == {"X-Request-Id"}


# --- Buckets per key and class ----------------------------------------------------------


def test_each_class_has_its_own_bucket_per_key(client: TestClient, tenant: TenantFixture) -> None:
    headers = tenant.key_with("*", rate_limit_write=1)
    first = _write(client, headers)
    assert first.status_code == 201, first.text
    assert first.headers["x-ratelimit-endpoint-class"] == "write-light"
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == (
        "1",
        "0",
    )
    _refused(_write(client, headers), "write-light", 1, "minute")
    # Read-light and long-running still answer, each from its own bucket (the tenant's tier
    # in these tests is partner: 6,000 and 300 a minute).
    read = _read(client, tenant, headers)
    assert read.status_code == 200
    assert read.headers["x-ratelimit-endpoint-class"] == "read-light"
    assert read.headers["x-ratelimit-limit"] == "6000"
    upload = _upload(client, tenant, headers)
    assert upload.status_code == 201, upload.text
    assert upload.headers["x-ratelimit-endpoint-class"] == "long-running"
    assert upload.headers["x-ratelimit-limit"] == "300"
    key_id = _key_id(headers)
    stored = _redis()
    try:
        assert all(stored.exists(bucket_key(key_id, klass)) for klass in EndpointClass)
    finally:
        stored.close()


def test_remaining_counts_down_and_keys_are_independent(
    client: TestClient, tenant: TenantFixture
) -> None:
    a = tenant.key_with("*", rate_limit_read=2)
    b = tenant.key_with("*", rate_limit_read=2)
    remaining = [int(_read(client, tenant, a).headers["x-ratelimit-remaining"]) for _ in range(2)]
    assert remaining == [1, 0]
    _refused(_read(client, tenant, a), "read-light", 2, "minute")
    assert _read(client, tenant, b).status_code == 200


def test_a_class_limit_holds_across_api_apps(tenant: TenantFixture) -> None:
    """Two app instances, as two API processes are, each with its own Redis client, share one
    bucket per key and class."""
    headers = tenant.key_with("*", rate_limit_long_running=1)
    with (
        TestClient(create_app(), raise_server_exceptions=False) as one,
        TestClient(create_app(), raise_server_exceptions=False) as two,
    ):
        assert _upload(one, tenant, headers).status_code == 201
        _refused(_upload(two, tenant, headers), "long-running", 1, "minute")
        _refused(_upload(one, tenant, headers), "long-running", 1, "minute")


def test_every_authenticated_answer_names_its_class(
    client: TestClient, tenant: TenantFixture
) -> None:
    # A 403 is authenticated but not counted: the class, and no budget.
    forbidden = _write(client, tenant.key_with("publish:read"))
    assert forbidden.status_code == 403
    assert forbidden.headers["x-ratelimit-endpoint-class"] == "write-light"
    assert "x-ratelimit-limit" not in forbidden.headers
    # A 404 is counted.
    missing = client.get("/v1/scheduled-posts/sp_nope", headers=tenant.headers)
    assert missing.status_code == 404
    assert missing.headers["x-ratelimit-endpoint-class"] == "read-light"
    assert "x-ratelimit-remaining" in missing.headers
    # HEAD is GET, counted as read-light.
    head = client.head(f"/v1/projects/{tenant.project_id}/social-accounts", headers=tenant.headers)
    assert head.headers["x-ratelimit-endpoint-class"] == "read-light"
    # Unauthenticated: nothing.
    anonymous = client.get(f"/v1/projects/{tenant.project_id}/social-accounts")
    assert anonymous.status_code == 401
    assert not any(h.startswith("x-ratelimit") for h in anonymous.headers)


def test_requests_go_through_when_redis_cannot_be_asked(tenant: TenantFixture) -> None:
    app = create_app()
    app.state.limiter = RateLimiter("redis://127.0.0.1:1/0")  # nothing listens there
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _write(c, tenant.key_with("*", rate_limit_write=1))
        again = _write(c, tenant.key_with("*", rate_limit_write=1))
    assert (r.status_code, again.status_code) == (201, 201)
    assert r.headers["x-ratelimit-endpoint-class"] == "write-light"
    assert "x-ratelimit-limit" not in r.headers


# --- Tiers and overrides --------------------------------------------------------------------


def test_the_tier_table_is_the_contracts() -> None:
    assert dict(TIERS) == {
        Tier.STANDARD: Limits(120, 60, 20, 10_000),
        Tier.PILOT: Limits(1_200, 600, 60, 100_000),
        Tier.PARTNER: Limits(6_000, 3_000, 300, 500_000),
    }
    # The setting, the check constraint and the table name the same tiers.
    assert set(get_args(Settings.model_fields["rate_limit_default_tier"].annotation)) == set(Tier)
    listed = ", ".join(f"'{t}'" for t in Tier)
    assert f"tier IN ({listed})" == TIER_CHECK
    assert Settings.model_fields["rate_limit_default_tier"].default == "standard"
    assert [klass.writes for klass in EndpointClass] == [False, True, True]


def test_a_standard_key_has_the_standard_limits_and_its_own_win(client: TestClient) -> None:
    with transaction() as tx:
        t = create_tenant(
            tx.session, "Std", ["tiktok"], sandbox_url="http://127.0.0.1:9", tier="standard"
        )
        own = create_key(tx.session, t.organization_id, ["*"], rate_limit_write=1)
    tenant = TenantFixture(t.organization_id, t.project_id, t.key.token, t.key.id, {})
    standard = tenant.headers
    assert t.key.tier == own.tier == "standard"
    assert _read(client, tenant, standard).headers["x-ratelimit-limit"] == "120"
    assert _write(client, standard).headers["x-ratelimit-limit"] == "60"
    assert _upload(client, tenant, standard).headers["x-ratelimit-limit"] == "20"
    # The key's own write-light limit wins over its tier's; its other classes stay the tier's.
    headers = {"Authorization": f"Bearer {own.token}"}
    assert _write(client, headers).headers["x-ratelimit-limit"] == "1"
    _refused(_write(client, headers), "write-light", 1, "minute")
    assert _read(client, tenant, headers).headers["x-ratelimit-limit"] == "120"


def test_a_keys_tier_is_its_organizations_unless_given(tenant: TenantFixture) -> None:
    with transaction() as tx:
        set_organization_tier(tx.session, tenant.organization_id, "pilot")
        inherited = create_key(tx.session, tenant.organization_id, ["*"])
        chosen = create_key(tx.session, tenant.organization_id, ["*"], tier="standard")
    assert (inherited.tier, chosen.tier) == ("pilot", "standard")
    # The tenant's own first key keeps the tier it was made with.
    with new_session() as session:
        first = session.get(ApiKey, tenant.key_id)
        assert first is not None and first.tier == "partner"


def test_the_multiplier_lifts_the_tiers_not_a_keys_own_limit(
    client: TestClient, tenant: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "rate_limit_multiplier", 1000)
    headers = tenant.key_with("*", rate_limit_write=1)
    # Its reads follow its tier (partner), lifted; its writes the 1 a minute set on it.
    assert _read(client, tenant, headers).headers["x-ratelimit-limit"] == "6000000"
    codes = [_write(client, headers).status_code for _ in range(2)]
    assert codes == [201, 429]


# --- The organization's daily write cap ---------------------------------------------------


def _day_state(organization_id: str) -> dict[str, int]:
    client = _redis()
    try:
        raw = client.hgetall(day_key(organization_id))
    finally:
        client.close()
    return {k.decode(): int(float(v)) for k, v in raw.items()}


def _retry_after_bounds(before_ms: int, after_ms: int, shift: int) -> tuple[int, int]:
    """The Retry-After a refusal made between two server instants must carry: the seconds
    from then to the next midnight of the limiter's day clock."""
    midnight = ((before_ms + shift) // DAY_MS + 1) * DAY_MS
    return (
        max(1, math.ceil((midnight - (after_ms + shift)) / 1000)),
        math.ceil((midnight - (before_ms + shift)) / 1000),
    )


def test_the_daily_cap_is_the_organizations_across_keys_classes_and_apps(
    shifted: tuple[TestClient, TestClient, int], tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    one, two, shift = shifted
    with transaction() as tx:
        set_daily_write_cap(tx.session, tenant.organization_id, 3)
    a, b = tenant.key_with("*"), tenant.key_with("*")
    assert _upload(one, tenant, a).status_code == 201
    assert _write(two, b).status_code == 201
    assert _write(one, a).status_code == 201
    # Reads never count.
    assert _read(two, tenant, b).status_code == 200
    key_bucket = bucket_key(_key_id(b), EndpointClass.LONG_RUNNING)
    before = _server_ms()
    refused = _upload(two, tenant, b)
    after = _server_ms()
    _refused(refused, "long-running", 3, "day")
    low, high = _retry_after_bounds(before, after, shift)
    assert low <= int(refused.headers["retry-after"]) <= high
    assert low <= int(refused.headers["x-ratelimit-reset"]) <= high
    _refused(_write(one, a), "write-light", 3, "day")
    # The refusals spent nothing: the day's count is the cap, and the refused request's
    # minute bucket was never touched.
    assert _day_state(tenant.organization_id)["count"] == 3
    stored = _redis()
    try:
        assert not stored.exists(key_bucket)
    finally:
        stored.close()
    # Reads still answer, and another organization writes on.
    assert _read(one, tenant, a).status_code == 200
    assert _write(one, other_tenant.headers).status_code == 201


def test_a_refusal_by_the_minute_costs_no_daily_write(
    shifted: tuple[TestClient, TestClient, int], tenant: TenantFixture
) -> None:
    one, _, _ = shifted
    headers = tenant.key_with("*", rate_limit_write=1)
    assert _write(one, headers).status_code == 201
    _refused(_write(one, headers), "write-light", 1, "minute")
    assert _day_state(tenant.organization_id)["count"] == 1


def test_the_daily_cap_starts_again_on_the_next_utc_day(tenant: TenantFixture) -> None:
    shift = _noon_shift()
    with transaction() as tx:
        set_daily_write_cap(tx.session, tenant.organization_id, 1)
    today, tomorrow = create_app(), create_app()
    today.state.limiter = RateLimiter(os.environ["REDIS_URL"], day_shift_ms=shift)
    tomorrow.state.limiter = RateLimiter(os.environ["REDIS_URL"], day_shift_ms=shift + DAY_MS)
    with (
        TestClient(today, raise_server_exceptions=False) as one,
        TestClient(tomorrow, raise_server_exceptions=False) as two,
    ):
        assert _write(one, tenant.headers).status_code == 201
        _refused(_write(one, tenant.headers), "write-light", 1, "day")
        day = _day_state(tenant.organization_id)["day"]
        assert _write(two, tenant.headers).status_code == 201
        assert _day_state(tenant.organization_id) == {"day": day + 1, "count": 1}
        _refused(_write(two, tenant.headers), "write-light", 1, "day")


def test_the_real_day_ends_at_utc_midnight(client: TestClient, tenant: TenantFixture) -> None:
    with transaction() as tx:
        set_daily_write_cap(tx.session, tenant.organization_id, 1)
    before = _server_ms()
    first = _write(client, tenant.headers)
    refused = _write(client, tenant.headers)
    after = _server_ms()
    if before // DAY_MS != after // DAY_MS:
        pytest.skip("the UTC day turned during the test: the cap started again")
    assert first.status_code == 201
    _refused(refused, "write-light", 1, "day")
    low, high = _retry_after_bounds(before, after, 0)
    assert low <= int(refused.headers["retry-after"]) <= high


def test_the_organizations_cap_is_its_tiers_unless_its_own(
    client: TestClient, tenant: TenantFixture
) -> None:
    def cap() -> int:
        with new_session() as session:
            org = session.get(Organization, tenant.organization_id)
            key = session.get(ApiKey, tenant.key_id)
            assert org is not None and key is not None
            return limits_of(key, org).daily_writes

    assert cap() == 500_000
    with transaction() as tx:
        set_organization_tier(tx.session, tenant.organization_id, "standard")
    assert cap() == 10_000
    with transaction() as tx:
        set_daily_write_cap(tx.session, tenant.organization_id, 7)
    assert cap() == 7
    with transaction() as tx:
        set_daily_write_cap(tx.session, tenant.organization_id, None)
    assert cap() == 10_000


# --- The CLI ----------------------------------------------------------------------------------


def _ok(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main([*argv, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("publisher: "), captured.err
    return lines[0]


def test_cli_tiers_on_tenants_and_keys(capsys: pytest.CaptureFixture[str]) -> None:
    made = _ok(["tenants", "create", "--name", "Tiered", "--adapter", "sandbox"], capsys)
    assert made["tier"] == "partner"  # RATE_LIMIT_DEFAULT_TIER, in these tests
    made = _ok(
        ["tenants", "create", "--name", "Pilot Co", "--adapter", "sandbox", "--tier", "pilot"],
        capsys,
    )
    org = made["organizationId"]
    assert made["tier"] == "pilot"
    key = _ok(["keys", "create", "--org", org, "--scopes", "*"], capsys)
    assert key["tier"] == "pilot"
    standard = ["--tier", "standard", "--rate-long-running", "5"]
    key = _ok(["keys", "create", "--org", org, "--scopes", "*", *standard], capsys)
    assert key["tier"] == "standard"
    limits = _ok(["keys", "set-limits", key["id"], "--rate-write", "7"], capsys)
    assert limits["perMinute"] == {"read-light": 120, "write-light": 7, "long-running": 5}
    assert limits["own"] == ["write-light", "long-running"]
    limits = _ok(
        ["keys", "set-limits", key["id"], "--tier", "partner", "--rate-long-running", "tier"],
        capsys,
    )
    assert limits["perMinute"] == {"read-light": 6000, "write-light": 7, "long-running": 300}
    assert limits["own"] == ["write-light"]
    cap = _ok(["tenants", "set-limits", "--org", org, "--daily-write-cap", "50"], capsys)
    assert cap == {
        "organizationId": org,
        "tier": "pilot",
        "dailyWriteCap": 50,
        "ownDailyWriteCap": 50,
        "keysMoved": 0,
    }
    cap = _ok(
        ["tenants", "set-limits", "--org", org, "--tier", "standard", "--daily-write-cap", "tier"],
        capsys,
    )
    assert (cap["tier"], cap["dailyWriteCap"], cap["ownDailyWriteCap"]) == (
        "standard",
        10_000,
        None,
    )
    # The organization's keys kept their tiers; --keys moves them along.
    with new_session() as session:
        tiers = {k.tier for k in session.query(ApiKey).filter_by(organization_id=org)}
        assert tiers == {"pilot", "partner"}
    cap = _ok(["tenants", "set-limits", "--org", org, "--tier", "partner", "--keys"], capsys)
    assert (cap["tier"], cap["dailyWriteCap"], cap["keysMoved"]) == ("partner", 500_000, 3)
    with new_session() as session:
        row = session.get(ApiKey, key["id"])
        assert row is not None
        assert (row.tier, row.rate_limit_write, row.rate_limit_long_running) == ("partner", 7, None)
        tiers = {k.tier for k in session.query(ApiKey).filter_by(organization_id=org)}
        assert tiers == {"partner"}


def test_cli_refuses_bad_tiers_and_limits_in_one_line(
    tenant: TenantFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    org = tenant.organization_id
    bad_tier = ["tenants", "create", "--name", "Gold", "--adapter", "sandbox", "--tier", "gold"]
    assert "standard, pilot, partner" in _one_line_error(bad_tier, capsys)
    with new_session() as session:
        assert session.query(Organization).filter_by(name="Gold").count() == 0
    assert "tier" in _one_line_error(
        ["keys", "create", "--org", org, "--scopes", "*", "--tier", "gold"], capsys
    )
    assert "no organization org_nope" in _one_line_error(
        ["keys", "create", "--org", "org_nope", "--scopes", "*"], capsys
    )
    assert "positive" in _one_line_error(
        ["keys", "create", "--org", org, "--scopes", "*", "--rate-write", "0"], capsys
    )
    for flags in (["--rate-read", "lots"], ["--rate-read", "-3"], ["--rate-read", "0"]):
        _one_line_error(["keys", "set-limits", tenant.key_id, *flags], capsys)
    assert "nothing to change" in _one_line_error(["keys", "set-limits", tenant.key_id], capsys)
    assert "no active key nope" in _one_line_error(
        ["keys", "set-limits", "nope", "--tier", "pilot"], capsys
    )
    assert "tier" in _one_line_error(
        ["keys", "set-limits", tenant.key_id, "--tier", "platinum"], capsys
    )
    assert "nothing to change" in _one_line_error(["tenants", "set-limits", "--org", org], capsys)
    assert "--tier" in _one_line_error(["tenants", "set-limits", "--org", org, "--keys"], capsys)
    assert "no organization org_nope" in _one_line_error(
        ["tenants", "set-limits", "--org", "org_nope", "--tier", "pilot"], capsys
    )
    assert "positive" in _one_line_error(
        ["tenants", "set-limits", "--org", org, "--daily-write-cap", "0"], capsys
    )
    # Nothing was changed by any of them.
    with new_session() as session:
        key = session.get(ApiKey, tenant.key_id)
        organization = session.get(Organization, org)
        assert key is not None and organization is not None
        assert (key.tier, key.rate_limit_read) == ("partner", None)
        assert (organization.tier, organization.daily_write_cap) == ("partner", None)


# --- The migration ----------------------------------------------------------------------------


def test_the_migration_makes_existing_keys_pilot_and_keeps_their_limits() -> None:
    insert_key = (
        "INSERT INTO api_keys (id, organization_id, env, secret_hash, scopes, name,"
        " rate_limit_read, rate_limit_write) VALUES (:id, 'org_1', 'live', '\\x00', '{*}', '',"
        " :read, :write)"
    )
    with migration_database("publisher_test_tiers_migration", TEST_DATABASE_URL) as (cfg, db):
        command.upgrade(cfg, "0007")
        with db.begin() as conn:
            conn.execute(text("INSERT INTO organizations (id, name) VALUES ('org_1', 'O')"))
            conn.execute(text(insert_key), {"id": "plain", "read": None, "write": None})
            conn.execute(text(insert_key), {"id": "own", "read": 5, "write": 3000})
        command.upgrade(cfg, "0008")
        with db.begin() as conn:
            keys = conn.execute(
                text(
                    "SELECT id, tier, rate_limit_read, rate_limit_write, rate_limit_long_running"
                    " FROM api_keys ORDER BY id"
                )
            ).all()
            assert [tuple(k) for k in keys] == [
                ("own", "pilot", 5, 3000, None),
                ("plain", "pilot", None, None, None),
            ]
            org = conn.execute(text("SELECT tier, daily_write_cap FROM organizations")).one()
            assert tuple(org) == ("pilot", None)
            # What is made from now on is standard.
            conn.execute(text("INSERT INTO organizations (id, name) VALUES ('org_2', 'N')"))
            new = conn.execute(text("SELECT tier FROM organizations WHERE id = 'org_2'"))
            assert new.scalar_one() == "standard"
        with pytest.raises(IntegrityError), db.begin() as conn:
            conn.execute(text("UPDATE api_keys SET tier = 'gold' WHERE id = 'own'"))
        command.downgrade(cfg, "0007")
        columns = {c["name"] for c in inspect(db).get_columns("api_keys")}
        assert "tier" not in columns and "rate_limit_long_running" not in columns
        assert "tier" not in {c["name"] for c in inspect(db).get_columns("organizations")}
        with db.connect() as conn:
            kept = conn.execute(
                text("SELECT id, rate_limit_read, rate_limit_write FROM api_keys ORDER BY id")
            )
            assert [tuple(r) for r in kept.all()] == [("own", 5, 3000), ("plain", None, None)]


def test_a_fresh_database_has_the_tiers(tenant: TenantFixture) -> None:
    # `publisher migrate` (the session's fixture) ran every revision, this one too.
    with new_session() as session:
        org = session.get(Organization, tenant.organization_id)
        assert org is not None and org.tier == "partner"
    other = make_tenant("Default Tier")
    with new_session() as session:
        key = session.get(ApiKey, other.key_id)
        assert key is not None and key.tier == "partner"
