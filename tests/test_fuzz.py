"""Schemathesis against /openapi.json, bounded: no 5xx, every response matches the documented
schema, and every error carries the envelope with the response's request id."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.core.transport import Response

from api.app import create_app
from shared.kit.db import transaction
from shared.tenancy.tenants import create_tenant

app = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def auth_header() -> dict[str, str]:
    # A real key, so that generated requests get past authentication and reach validation.
    with transaction() as tx:
        t = create_tenant(tx.session, "Fuzz", ["tiktok"], sandbox_url="http://127.0.0.1:9")
    return {"Authorization": f"Bearer {t.key.token}"}


def _envelope(response: Response) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "requestId", "details"}, error
    assert error["requestId"] == response.headers["x-request-id"][0]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case: Case, auth_header: dict[str, str]) -> None:
    response = case.call(headers=auth_header)
    case.validate_response(response)
    _envelope(response)
