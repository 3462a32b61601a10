"""/openapi.json documents every endpoint, its errors and the envelope."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.helpers import ENDPOINTS


def test_openapi_documents_every_endpoint_and_its_errors(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    params = {
        "project": "projectId",
        "container": "containerId",
        "pending": "containerId",
        "post": "id",
        "intent": "intentId",
    }
    # Replacing a policy has no state that could forbid it.
    never_conflicts = {"put_policy"}
    for ep in ENDPOINTS:
        path = ep.template.replace("{id}", "{" + params[ep.id_kind] + "}")
        assert path in spec["paths"], path
        op = spec["paths"][path].get(ep.method.lower())
        assert op is not None, (ep.method, path)
        assert op.get("description") or op.get("summary")
        responses = op["responses"]
        assert str(ep.ok) in responses
        conflicts = ep.mutation and ep.name not in never_conflicts
        wanted = {"401", "403", "404", "422"} | ({"409"} if conflicts else set())
        for status in sorted(wanted):
            assert status in responses, (ep.name, status)
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/ErrorEnvelopeDoc"), (ep.name, status)
        if ep.method == "POST":
            names = {p["name"] for p in op.get("parameters", [])}
            assert "Idempotency-Key" in names, ep.name

    schemas = spec["components"]["schemas"]
    envelope = schemas["ErrorEnvelopeDoc"]
    assert envelope["required"] == ["error"]
    inner = schemas[envelope["properties"]["error"]["$ref"].rsplit("/", 1)[-1]]
    assert set(inner["required"]) == {"code", "message", "requestId", "details"}
    cancel_op = spec["paths"]["/v1/scheduled-posts/{id}"]["delete"]
    assert "requestBody" in cancel_op
    assert schemas["CancelIn"]["properties"]["reason"]["anyOf"][0]["maxLength"] == 1024
