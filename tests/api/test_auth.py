"""401: malformed, unknown, revoked and wrong-environment keys, on every endpoint."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from shared.kit.clock import utcnow
from shared.kit.db import transaction
from shared.tenancy.keys import create_key, revoke_key
from tests.api.helpers import ENDPOINTS, Endpoint, _call, _own_id, _sans_request_id
from tests.checks import counts as _counts
from tests.checks import envelope_error as _error
from tests.factories import TenantFixture


def _auth_cases(tenant: TenantFixture) -> dict[str, dict[str, str]]:
    _, _, key_id, secret = tenant.token.split("_")
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "basic scheme": {"Authorization": f"Basic {tenant.token}"},
        "no scheme": {"Authorization": tenant.token},
        "bearer alone": {"Authorization": "Bearer"},
        "bearer blank": {"Authorization": "Bearer   "},
        "three parts": {"Authorization": f"Bearer lp_live_{key_id}"},
        "five parts": {"Authorization": f"Bearer {tenant.token}_x"},
        "wrong prefix": {"Authorization": f"Bearer sk_live_{key_id}_{secret}"},
        "unknown env": {"Authorization": f"Bearer lp_prod_{key_id}_{secret}"},
        "huge": {"Authorization": "Bearer lp_live_" + "a" * 600 + "_b"},
        "unknown key id": {"Authorization": f"Bearer lp_live_{'0' * 16}_{secret}"},
        "long key id": {"Authorization": f"Bearer lp_live_{'0' * 100}_{secret}"},
        "wrong secret": {"Authorization": f"Bearer lp_live_{key_id}_{'f' * len(secret)}"},
        "env mismatch": {"Authorization": f"Bearer lp_test_{key_id}_{secret}"},
    }


AUTH_CASES = list(_auth_cases(TenantFixture("o", "p", "lp_live_k_s", "k", {})))


@pytest.mark.parametrize("case", AUTH_CASES)
def test_unauthenticated(client: TestClient, tenant: TenantFixture, case: str) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    assert client.get(url, headers=tenant.headers).status_code == 200
    r = client.get(url, headers=_auth_cases(tenant)[case])
    _error(r, 401, "UNAUTHENTICATED")
    # The answer never echoes what was presented.
    assert tenant.token.split("_")[3] not in r.text


def test_invalid_keys_are_indistinguishable(client: TestClient, tenant: TenantFixture) -> None:
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    cases = _auth_cases(tenant)
    revoked = tenant.key_with("*")
    with transaction() as tx:
        assert revoke_key(tx.session, revoked["Authorization"].split("_")[2], now=utcnow())
    bodies = [
        _sans_request_id(client.get(url, headers=h))
        for h in (cases["unknown key id"], cases["wrong secret"], cases["env mismatch"], revoked)
    ]
    assert all(b == bodies[0] for b in bodies), bodies
    assert bodies[0]["error"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_every_endpoint_requires_a_key(
    client: TestClient, tenant: TenantFixture, ep: Endpoint
) -> None:
    id_ = _own_id(client, ep, tenant)
    before = _counts()
    _error(_call(client, ep, id_, {}, tenant), 401, "UNAUTHENTICATED")
    assert _counts() == before


def test_a_revoked_key_stops_working_at_once(client: TestClient, tenant: TenantFixture) -> None:
    headers = tenant.key_with("*")
    key_id = headers["Authorization"].split("_")[2]
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    assert client.get(url, headers=headers).status_code == 200
    with transaction() as tx:
        assert revoke_key(tx.session, key_id, now=utcnow())
    _error(client.get(url, headers=headers), 401, "UNAUTHENTICATED")
    # The organization's other keys keep working.
    assert client.get(url, headers=tenant.headers).status_code == 200


def test_test_env_keys_authenticate_only_as_test(client: TestClient, tenant: TenantFixture) -> None:
    with transaction() as tx:
        key = create_key(tx.session, tenant.organization_id, ["social:read"], env="test")
    assert key.token.startswith("lp_test_")
    url = f"/v1/projects/{tenant.project_id}/social-accounts"
    ok = client.get(url, headers={"Authorization": f"Bearer {key.token}"})
    assert ok.status_code == 200, ok.text
    as_live = key.token.replace("lp_test_", "lp_live_", 1)
    _error(client.get(url, headers={"Authorization": f"Bearer {as_live}"}), 401, "UNAUTHENTICATED")
