"""403: every endpoint demands its scope, and answers to a key with it or `*`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import ALL_SCOPES, ENDPOINTS, Endpoint, _call, _own_id
from tests.checks import counts as _counts
from tests.checks import envelope_error as _error
from tests.factories import TenantFixture


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_every_endpoint_demands_its_scope(
    client: TestClient, tenant: TenantFixture, ep: Endpoint
) -> None:
    others = [s for s in ALL_SCOPES if s != ep.scope]
    denied = tenant.key_with(*others)
    id_ = _own_id(client, ep, tenant)
    before = _counts()
    err = _error(_call(client, ep, id_, denied, tenant), 403, "FORBIDDEN_SCOPE")
    assert err["details"] == {"requiredScope": ep.scope}
    assert _counts() == before

    for scopes in ([ep.scope], ["*"]):
        allowed = tenant.key_with(*scopes)
        r = _call(client, ep, _own_id(client, ep, tenant), allowed, tenant)
        assert r.status_code == ep.ok, (scopes, r.text)
