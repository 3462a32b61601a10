"""Fixtures of the API tests: ids of another organization, and the validation tables' context."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import Ctx, own_id
from tests.factories import TenantFixture, at, schedule, upload


@pytest.fixture
def foreign_ids(client: TestClient, other_tenant: TenantFixture) -> dict[str, str]:
    """Real ids of another organization, one per kind."""
    container = upload(client, other_tenant)
    post = schedule(client, other_tenant, container, at(600))[0]["id"]
    return {
        "project": other_tenant.project_id,
        "container": container,
        "post": post,
        "pending": own_id(client, "pending", other_tenant),
        "intent": own_id(client, "intent", other_tenant),
    }


@pytest.fixture
def ctx(client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture) -> Ctx:
    container = upload(client, tenant)
    post = schedule(client, tenant, container, at(600))[0]["id"]
    return Ctx(tenant, other_tenant, container, post)
