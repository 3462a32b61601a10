"""404 on every endpoint: another organization's ids answer byte for byte as missing
ones; malformed ids and real ids of the wrong kind are not found either."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import ENDPOINTS, PREFIX, Endpoint, _call
from tests.checks import counts as _counts
from tests.checks import envelope_error as _error
from tests.factories import TenantFixture, at, schedule, upload


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_other_orgs_ids_look_like_missing_ones(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    foreign_ids: dict[str, str],
    ep: Endpoint,
) -> None:
    foreign = foreign_ids[ep.id_kind]
    missing = f"{PREFIX[ep.id_kind]}_{uuid.uuid4()}"
    before = _counts()
    # With the same request id, the two answers must be the same bytes, headers included.
    same = {**tenant.headers, "X-Request-Id": "req-probe-1"}
    r_foreign = _call(client, ep, foreign, same, tenant)
    r_missing = _call(client, ep, missing, same, tenant)
    _error(r_foreign, 404, "NOT_FOUND")
    _error(r_missing, 404, "NOT_FOUND")
    assert r_foreign.content == r_missing.content
    drop = {"date", "x-ratelimit-remaining", "x-ratelimit-reset"}
    assert {k: v for k, v in r_foreign.headers.items() if k not in drop} == {
        k: v for k, v in r_missing.headers.items() if k not in drop
    }
    assert _counts() == before
    # Untouched: the owner still sees its post queued at its time.
    owner_view = client.get(
        f"/v1/scheduled-posts/{foreign_ids['post']}", headers=other_tenant.headers
    )
    assert owner_view.json()["status"] == "queued"
    # The owner itself is served.
    assert _call(client, ep, foreign, other_tenant.headers, other_tenant).status_code == ep.ok


MALFORMED_IDS = [
    "sp_nope",
    "..%2F..%2Fetc",
    "%2E%2E",
    "%00",
    "sp_%00",
    "x" * 300,
    "'%20OR%20'1'='1",
    "sp_4C8E7D2F-9A1B-4C3D-8E7F-2A1B3C4D5E60",
    "sp_4c8e7d2f9a1b4c3d8e7f2a1b3c4d5e60",
    "SP_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
    "cnt_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e60",
    "prj_4c8e7d2f-9a1b-4c3d-8e7f-2a1b3c4d5e6",
    "%F0%9F%92%A9",
]


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_malformed_ids_are_not_found(
    client: TestClient, tenant: TenantFixture, ep: Endpoint
) -> None:
    for bad in MALFORMED_IDS:
        _error(_call(client, ep, bad, tenant.headers, tenant), 404, "NOT_FOUND")
    # A real id of the wrong kind is not found either (a container id as a post id, ...).
    wrong_kind = {
        "project": "container",
        "container": "project",
        "pending": "project",
        "post": "container",
        "intent": "post",
    }
    real = {"project": tenant.project_id, "container": upload(client, tenant)}
    real["post"] = schedule(client, tenant, real["container"], at(600))[0]["id"]
    other_kind = real[wrong_kind[ep.id_kind]]
    _error(_call(client, ep, other_kind, tenant.headers, tenant), 404, "NOT_FOUND")
